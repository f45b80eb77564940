//! The library's own guards on the wgpu backend, below the trainer's `check_device` (which
//! `cargo xtask ci` checks through the binary). Compiled only with `--features wgpu`; `cargo
//! xtask ci` runs it on Mesa's software Vulkan driver:
//! `cargo test -p sculpt-cli --features wgpu,cuda --test wgpu` (the binary's features, so
//! nothing else is rebuilt).
#![cfg(feature = "wgpu")]

use std::path::PathBuf;

use burn::backend::{Autodiff, Wgpu};
use sculpt_models::layers::to_host;
use sculpt_models::{Model, Pretrained};
use sculpt_osft::{FrozenPrecision, Osft, OsftConfig, OsftError};

type Ad = Autodiff<Wgpu>;

fn tiny_llama() -> sculpt_models::llama::Llama<Ad> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny/llama-gqa-untied-tiny");
    let Model::Llama(m) = Pretrained::<Ad>::load(&path, &Default::default()).expect("tiny LLaMA fixture").model else {
        panic!("{} is not a LLaMA", path.display())
    };
    m
}

/// A bf16 `W_high` is refused by `Osft::attach` itself, with the config key named, before any
/// weight leaves the device (WGSL has no bf16: cubecl's compiler would panic inside a device
/// task). The same model then attaches in fp32 and leaves the forward unchanged.
#[test]
fn attach_refuses_a_bf16_frozen_part_and_accepts_fp32() {
    let model = tiny_llama();
    let ids = burn::tensor::Tensor::<Ad, 2, burn::tensor::Int>::from_data([[1, 17, 42, 99, 7, 3]], &Default::default());
    let before = to_host(model.forward(ids.clone(), None, None));

    let bf16 = OsftConfig { frozen_precision: FrozenPrecision::Bf16, ..Default::default() };
    match Osft::attach(model.clone(), &bf16, "llama", None) {
        Err(e @ OsftError::UnsupportedDtype { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("[osft] frozen_precision = \"bf16\""), "the key is not named: {msg}");
        }
        Err(other) => panic!("expected UnsupportedDtype, got {other}"),
        Ok(_) => panic!("a bf16 W_high was accepted on wgpu"),
    }

    let (attached, osft) = Osft::attach(model, &OsftConfig::default(), "llama", None).expect("fp32 attach on wgpu");
    assert!(!osft.low_param_ids().is_empty(), "no target was split");
    let after = to_host(attached.forward(ids, None, None));
    let scale = before.data.iter().fold(0f32, |a, x| a.max(x.abs()));
    let diff = before.data.iter().zip(&after.data).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    // W_high + U_l s_l V_lᵀ reproduces W to f32 rounding of the SVD (≤ 1e-5 relative).
    assert!(diff <= 1e-4 * scale, "step-0 logits moved by {diff:.2e} (largest {scale:.2e})");
}
