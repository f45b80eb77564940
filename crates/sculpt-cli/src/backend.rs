//! Backend choice: CPU (burn's `flex`) always, `wgpu` and `cuda` when compiled in. The library
//! crates are generic over `burn::tensor::backend::Backend`; this is the one place that names
//! concrete backends.

use clap::ValueEnum;

/// A compute backend selectable on the command line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Pure-Rust CPU backend (burn-flex).
    Cpu,
    /// WGPU: Vulkan, Metal or DX12 (Mesa lavapipe on machines without a GPU). Needs `--features wgpu`.
    Wgpu,
    /// NVIDIA CUDA. Needs `--features cuda`.
    Cuda,
}

/// Run `$body` with `$B` bound to the backend type of `$kind` and `$device` to its default device.
macro_rules! dispatch {
    ($kind:expr, |$B:ident, $device:ident| $body:expr) => {{
        match $kind {
            $crate::backend::BackendKind::Cpu => {
                type $B = burn::backend::Flex;
                let $device = burn::tensor::Device::<$B>::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::backend::BackendKind::Wgpu => {
                type $B = burn::backend::Wgpu;
                let $device = burn::tensor::Device::<$B>::default();
                // The first operation selects the adapter: without a driver cubecl-wgpu panics
                // here (reported by `main` with a hint), before anything is read or written.
                let _ = burn::tensor::Tensor::<$B, 1>::zeros([1], &$device).into_data();
                $body
            }
            #[cfg(feature = "cuda")]
            // The driver, NVRTC and the toolkit headers are checked before any work: cubecl-cuda
            // would otherwise panic at the first kernel, after the host work, with a `RecvError`.
            $crate::backend::BackendKind::Cuda => match sculpt_kernels::cuda_env::check() {
                Err(problems) => Err(anyhow::anyhow!("--backend cuda cannot run on this machine:\n{problems}")),
                Ok(()) => {
                    type $B = burn::backend::Cuda;
                    let $device = burn::tensor::Device::<$B>::default();
                    $body
                }
            },
            #[allow(unreachable_patterns)]
            other => Err(anyhow::anyhow!(
                "backend {other:?} is not compiled into this binary; rebuild with `--features {}`",
                format!("{other:?}").to_lowercase()
            )),
        }
    }};
}
pub(crate) use dispatch;
