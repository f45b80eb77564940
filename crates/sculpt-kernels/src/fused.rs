//! [`ProjectionOps`] for burn's fusion decorator `Fusion<B>` (what `burn::backend::Wgpu` and
//! `burn::backend::Cuda` are with burn 0.21's default features).
//!
//! A fused tensor (`FusionTensor<B::FusionRuntime>`) is only a lazy id in an operation stream,
//! so a kernel cannot be launched on it directly. Each method registers a *custom operation*
//! (`OperationIr::Custom(CustomOpIr)`) with the fusion client, listing its input and (uninit)
//! output tensors; the client returns the lazy output tensor at once. When the stream is
//! executed, the fusion server calls [`Operation::execute`], which fetches the real inner
//! primitives from the handle container (`B::FloatTensorPrimitive`, a `CubeTensor<R>` for
//! `B = CubeBackend<R, …>`), runs `B`'s implementation (the cubecl kernels), and registers the
//! results under the output ids. Custom operations are never fused with neighbours: the
//! optimiser flushes the pending fused block before them and starts a new one after.
//!
//! This is the same mechanism burn-vision 0.21 uses for its cubecl kernels; burn 0.21 has no
//! `#[backend_extension]` macro (that arrived in 0.22).

use core::marker::PhantomData;

use burn::tensor::{Shape, Tensor};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use crate::{from_primitive, primitive, ProjectionOps};

/// Which [`ProjectionOps`] method a [`CustomProjection`] runs.
#[derive(Clone, Copy, Debug)]
enum Kind {
    ProjectU,
    ProjectVt,
    NormalizeColumns,
}

impl Kind {
    fn id(self) -> &'static str {
        match self {
            Kind::ProjectU => "sculpt_kernels::project_u",
            Kind::ProjectVt => "sculpt_kernels::project_vt",
            Kind::NormalizeColumns => "sculpt_kernels::normalize_columns",
        }
    }
}

/// The deferred operation stored in the fusion stream.
#[derive(Debug)]
struct CustomProjection<B> {
    desc: CustomOpIr,
    kind: Kind,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + ProjectionOps> Operation<B::FusionRuntime> for CustomProjection<B> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        match self.kind {
            Kind::ProjectU | Kind::ProjectVt => {
                let ([x, basis], [out]) = self.desc.as_fixed();
                let x = from_primitive::<B, 2>(handles.get_float_tensor::<B>(x));
                let basis = from_primitive::<B, 2>(handles.get_float_tensor::<B>(basis));
                let y = match self.kind {
                    Kind::ProjectU => B::project_u(x, basis),
                    _ => B::project_vt(x, basis),
                };
                handles.register_float_tensor::<B>(&out.id, primitive(y));
            }
            Kind::NormalizeColumns => {
                let ([y], [q_out, norms_out]) = self.desc.as_fixed();
                let y = from_primitive::<B, 2>(handles.get_float_tensor::<B>(y));
                let (q, norms) = B::normalize_columns(y);
                handles.register_float_tensor::<B>(&q_out.id, primitive(q));
                handles.register_float_tensor::<B>(&norms_out.id, primitive(norms));
            }
        }
    }
}

/// Registers a projection (`x` against `basis`, output shaped like `x`) in the fusion stream.
fn register_projection<B: FusionBackend + ProjectionOps>(
    kind: Kind,
    x: Tensor<Fusion<B>, 2>,
    basis: Tensor<Fusion<B>, 2>,
) -> Tensor<Fusion<B>, 2> {
    let x = primitive(x);
    let basis = primitive(basis);
    let client = x.client.clone();
    let streams = OperationStreams::with_inputs([&x, &basis]);
    let out = TensorIr::uninit(client.create_empty_handle(), x.shape.clone(), x.dtype);
    let desc = CustomOpIr::new(kind.id(), &[x.into_ir(), basis.into_ir()], &[out]);
    let op = CustomProjection::<B> {
        desc: desc.clone(),
        kind,
        _backend: PhantomData,
    };
    from_primitive(client.register(streams, OperationIr::Custom(desc), op).output())
}

impl<B: FusionBackend + ProjectionOps> ProjectionOps for Fusion<B> {
    fn project_u(x: Tensor<Self, 2>, u_high: Tensor<Self, 2>) -> Tensor<Self, 2> {
        // Shapes are checked here (eagerly), not only when the stream runs.
        let ([n, r], [nu, k]) = (x.dims(), u_high.dims());
        assert_eq!(n, nu, "project_u: x is [{n}, {r}] but U_h is [{nu}, {k}]");
        register_projection(Kind::ProjectU, x, u_high)
    }

    fn project_vt(x: Tensor<Self, 2>, vt_high: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let ([r, m], [k, mv]) = (x.dims(), vt_high.dims());
        assert_eq!(m, mv, "project_vt: x is [{r}, {m}] but Vt_h is [{k}, {mv}]");
        register_projection(Kind::ProjectVt, x, vt_high)
    }

    fn normalize_columns(y: Tensor<Self, 2>) -> (Tensor<Self, 2>, Tensor<Self, 1>) {
        let [_, c] = y.dims();
        let y = primitive(y);
        let client = y.client.clone();
        let streams = OperationStreams::with_inputs([&y]);
        let q = TensorIr::uninit(client.create_empty_handle(), y.shape.clone(), y.dtype);
        let norms = TensorIr::uninit(client.create_empty_handle(), Shape::new([c]), y.dtype);
        let kind = Kind::NormalizeColumns;
        let desc = CustomOpIr::new(kind.id(), &[y.into_ir()], &[q, norms]);
        let op = CustomProjection::<B> {
            desc: desc.clone(),
            kind,
            _backend: PhantomData,
        };
        let [q, norms] = client.register(streams, OperationIr::Custom(desc), op).outputs();
        (from_primitive(q), from_primitive(norms))
    }
}
