//! What the CUDA backend needs from the machine besides our binary, checked before any work.
//!
//! cubecl-cuda loads the driver (`libcuda`) and NVRTC (`libnvrtc`) by name at run time, and
//! compiles every kernel at its first launch with NVRTC, passing `<CUDA path>/include` (from
//! `CUDA_PATH`, else /usr/local/cuda, /opt/cuda, or /usr beside /usr/bin/nvcc) because the CUDA
//! C++ it generates includes `cuda_runtime.h`. A missing piece surfaces as a panic inside a
//! device thread, often after minutes of host work (a 7B model's decomposition runs before the
//! first kernel), and the message that reaches the user is a channel's `RecvError`. This check
//! names the missing piece instead, before anything is loaded or written.

use std::path::Path;

/// The problems [`check`] reports, from what it found: whether the driver and NVRTC libraries
/// load, and the CUDA path cubecl-cuda would use. Empty when everything is there.
pub fn problems(driver: bool, nvrtc: bool, cuda_path: Option<&Path>) -> Vec<String> {
    let mut out = vec![];
    if !driver {
        out.push(
            "the NVIDIA driver library (libcuda.so.1) does not load: install the NVIDIA driver, or add the folder that holds it to LD_LIBRARY_PATH"
                .to_string(),
        );
    }
    if !nvrtc {
        out.push(
            "NVRTC (libnvrtc.so, .so.13, .so.12, …) does not load: cubecl compiles every CUDA kernel with it at run time; install the CUDA toolkit (or NVIDIA's nvidia-cuda-nvrtc wheel) and add its lib folder to LD_LIBRARY_PATH"
                .to_string(),
        );
    }
    match cuda_path {
        None => out.push(
            "no CUDA toolkit folder: NVRTC needs its include/cuda_runtime.h; set CUDA_PATH (none of /usr/local/cuda, /opt/cuda, /usr/bin/nvcc exists)".to_string(),
        ),
        Some(p) if !p.join("include").join("cuda_runtime.h").is_file() => out.push(format!(
            "{} has no include/cuda_runtime.h, which NVRTC needs for every kernel: set CUDA_PATH to a CUDA toolkit folder",
            p.display()
        )),
        Some(_) => {}
    }
    out
}

/// Checks the machine for the CUDA backend: the driver and NVRTC libraries load, the toolkit's
/// `include/cuda_runtime.h` is where cubecl-cuda will look, and the driver sees a device. `Err`
/// lists every problem found, one per line.
#[allow(unsafe_code)]
pub fn check() -> Result<(), String> {
    // SAFETY: both only try to open the libraries (`dlopen` of cudarc's candidate names) and
    // close them again; no symbol is called.
    let (driver, nvrtc) = unsafe { (cudarc::driver::sys::is_culib_present(), cudarc::nvrtc::sys::is_culib_present()) };
    let mut found = problems(driver, nvrtc, cubecl::cuda::install::cuda_path().as_deref());
    if driver {
        // The driver loads (so these calls cannot panic on a missing library): does it see a GPU?
        match cudarc::driver::result::init().and_then(|()| cudarc::driver::result::device::get_count()) {
            Ok(0) => found.push("the NVIDIA driver sees no CUDA device (CUDA_VISIBLE_DEVICES?)".to_string()),
            Ok(_) => {}
            Err(e) => found.push(format!("the NVIDIA driver failed to start: {e}")),
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(found.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_piece_is_named_and_a_complete_toolkit_passes() {
        let toolkit = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(toolkit.path().join("include")).unwrap();
        // The folder exists but lacks the header NVRTC needs.
        let p = problems(true, true, Some(toolkit.path()));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("include/cuda_runtime.h") && p[0].contains(&toolkit.path().display().to_string()), "{p:?}");
        std::fs::write(toolkit.path().join("include").join("cuda_runtime.h"), "").unwrap();
        assert!(problems(true, true, Some(toolkit.path())).is_empty());
        let all = problems(false, false, None);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[0].contains("libcuda") && all[1].contains("NVRTC") && all[2].contains("CUDA_PATH"), "{all:?}");
    }
}
