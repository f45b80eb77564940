//! The CUDA C++ that cubecl-cuda would hand to NVRTC for sculpt's kernels, made and compiled
//! without an NVIDIA GPU: each kernel is defined as `launch` defines it (argument layout, comptime
//! sizes, element type) with a wgpu client standing in for the device (our kernels read no device
//! property), then lowered by cubecl-cuda's own compiler (`CudaCompiler`, the runtime's options
//! for an sm_90 card: fast math, grid constants, warp size 32). When an NVRTC library is found
//! (`cudarc`'s usual names, on the loader's path) with a CUDA include folder
//! (`SCULPT_NVRTC_CUDA_PATH`, else `CUDA_PATH`, else /usr/local/cuda; the first exists because
//! cudarc's build script reruns whenever cargo sees `CUDA_PATH` change, rebuilding the CUDA
//! stack), the source is compiled to PTX for `sm_90a` with the flags cubecl-cuda uses,
//! as an H200 would compile it at the kernel's first launch; otherwise that half is skipped with
//! a message, or fails when `SCULPT_REQUIRE_NVRTC=1`. `cargo xtask fetch-nvrtc` fetches both from
//! NVIDIA's PyPI wheels and prints the two variables to set; `cargo xtask ci` does that for CI.
//!
//! `cargo test -p sculpt-kernels --features wgpu,cuda --test cuda_codegen -- --nocapture`
#![cfg(all(feature = "wgpu", feature = "cuda"))]
// NVRTC is reached through cudarc's raw FFI wrappers, as cubecl-cuda reaches it.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use cubecl::cuda::CudaCompiler;
use cubecl::prelude::*;
use cubecl::CubeTask;
use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
use cubecl_cpp::shared::{CompilationOptions, CppSupportedFeatures};
use sculpt_kernels::kernel::{normalize_columns::NormalizeColumns, tiled_matmul::TiledMatmul, tiled_matmul_sub::TiledMatmulSub};
use sculpt_kernels::launch::{MICRO, NORM_BLOCK, TILE};

/// The options `CudaRuntime` sets for an sm_90 device (cubecl-cuda 0.10, `runtime.rs`).
fn sm90_options() -> CompilationOptions {
    CompilationOptions {
        warp_size: 32,
        supports_features: CppSupportedFeatures { fast_math: true, grid_constants: true, ..Default::default() },
    }
}

/// `(entry point, CUDA C++)` of every kernel, for f32.
fn sources() -> Vec<(String, String)> {
    let client = WgpuRuntime::client(&WgpuDevice::default());
    let dtype: StorageType = f32::as_type_native_unchecked().storage_type();
    let tensor = || TensorCompilationArg { inplace: None };
    let product = KernelSettings::default().cube_dim(CubeDim::new_2d(TILE as u32, TILE as u32));
    let norm = KernelSettings::default().cube_dim(CubeDim::new_1d(NORM_BLOCK as u32));
    let tasks: Vec<Box<dyn CubeTask<CudaCompiler>>> = vec![
        Box::new(KernelTask::<CudaCompiler, _>::new(TiledMatmul::<WgpuRuntime>::new(product.clone(), client.clone(), tensor(), tensor(), tensor(), TILE, MICRO, dtype))),
        Box::new(KernelTask::<CudaCompiler, _>::new(TiledMatmulSub::<WgpuRuntime>::new(
            product,
            client.clone(),
            tensor(),
            tensor(),
            tensor(),
            tensor(),
            TILE,
            MICRO,
            dtype,
        ))),
        Box::new(KernelTask::<CudaCompiler, _>::new(NormalizeColumns::<WgpuRuntime>::new(norm, client, tensor(), tensor(), tensor(), NORM_BLOCK, dtype))),
    ];
    tasks
        .iter()
        .map(|t| {
            let k = t.compile(&mut Default::default(), &sm90_options(), ExecutionMode::Checked, t.address_type()).expect("cubecl-cuda lowering");
            (k.entrypoint_name, k.source)
        })
        .collect()
}

#[test]
fn kernels_lower_to_cuda_and_compile_with_nvrtc_for_sm90() {
    let sources = sources();
    let names: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["tiled_matmul_f_f32", "tiled_matmul_sub_f_f32", "normalize_columns_f_f32"]);
    for (name, src) in &sources {
        assert!(src.contains("__global__") && src.contains(name.as_str()), "{name}: no kernel entry point in\n{src}");
    }

    let required = std::env::var("SCULPT_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "SCULPT_REQUIRE_NVRTC=1 but {why}");
        eprintln!("skipped the NVRTC half: {why}; the CUDA source was generated only (`cargo xtask fetch-nvrtc` provides both)");
    };
    // SAFETY: only probes whether the library can be opened (`dlopen` of the candidate names).
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return skip("no libnvrtc on the loader's path (LD_LIBRARY_PATH)".into());
    }
    let cuda = ["SCULPT_NVRTC_CUDA_PATH", "CUDA_PATH"]
        .iter()
        .find_map(std::env::var_os)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
    if !cuda.join("include/cuda_runtime.h").exists() {
        return skip(format!("no include/cuda_runtime.h under {} (set SCULPT_NVRTC_CUDA_PATH)", cuda.display()));
    }
    let include = format!("--include-path={}", cuda.join("include").display());
    let cccl = cuda.join("include/cccl");
    let mut options = vec!["--gpu-architecture=sm_90a".to_string(), include, "-lineinfo".to_string()];
    if cccl.exists() {
        options.push(format!("--include-path={}", cccl.display()));
    }
    for (name, src) in &sources {
        let source = CString::new(src.as_str()).unwrap();
        let program = cudarc::nvrtc::result::create_program(&source, None).expect("nvrtcCreateProgram");
        // SAFETY: `program` was just created and is destroyed below; the options are owned strings.
        let compiled = unsafe { cudarc::nvrtc::result::compile_program(program, &options) };
        let log = unsafe { cudarc::nvrtc::result::get_program_log(program) }.expect("nvrtcGetProgramLog");
        let log = unsafe { CStr::from_ptr(log.as_ptr()) }.to_string_lossy().into_owned();
        assert!(compiled.is_ok(), "{name}: NVRTC refused the CUDA source ({options:?}):\n{log}\n--- source ---\n{src}");
        let ptx = unsafe { cudarc::nvrtc::result::get_ptx(program) }.expect("nvrtcGetPTX");
        let ptx = unsafe { CStr::from_ptr(ptx.as_ptr()) }.to_string_lossy().into_owned();
        unsafe { cudarc::nvrtc::result::destroy_program(program) }.expect("nvrtcDestroyProgram");
        assert!(ptx.contains(".target sm_90a") && ptx.contains(&format!(".entry {name}")), "{name}: unexpected PTX header:\n{}", &ptx[..ptx.len().min(600)]);
        eprintln!("{name}: {} bytes of CUDA C++ -> {} bytes of PTX for sm_90a", src.len(), ptx.len());
    }
}
