//! A full disk: the run's output folder on a small tmpfs, so a later checkpoint cannot be
//! written. The run must stop with an error naming the path and the cause, remove its partial
//! files, and leave every earlier checkpoint complete and loadable.
//!
//! Needs permission to mount a tmpfs (root here); skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::{Autodiff, Flex};
use sculpt_models::Pretrained;
use sculpt_train::config::Method;
use sculpt_train::{train_with, RunOptions};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten().map(|e| if e.path().is_dir() { dir_size(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) }).sum()
    })
}

#[test]
fn a_full_disk_keeps_earlier_checkpoints_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sculpt_train::demo::prepare(dir.path()).unwrap();
    cfg.method = Method::Seqft;
    cfg.train.epochs = 1;
    // Measure one checkpoint on a normal disk.
    cfg.output = dir.path().join("probe");
    let mut one = cfg.clone();
    one.tasks.truncate(1);
    train_with::<Autodiff<Flex>>(&one, &Default::default(), RunOptions::default()).unwrap();
    let ck = dir_size(&one.output.join("checkpoints"));
    // Room for the run files and two checkpoints, not three.
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let size = ck * 5 / 2 + 64 * 1024;
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}")]).arg("tmpfs").arg(&mnt).output();
    if !ok.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: cannot mount a {size}-byte tmpfs here ({:?}); run as root to test a full disk", ok.map(|o| String::from_utf8_lossy(&o.stderr).to_string()));
        return;
    }
    let _guard = Mount(mnt.clone());
    cfg.output = mnt.join("run");
    let e = train_with::<Autodiff<Flex>>(&cfg, &Default::default(), RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("No space left") || e.contains("space"), "{e}");
    assert!(e.contains(&mnt.display().to_string()), "the error must name the path: {e}");
    let cks: Vec<String> = std::fs::read_dir(cfg.output.join("checkpoints")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    assert!(!cks.iter().any(|n| n.contains("partial")), "partial files left behind: {cks:?}");
    let (done, latest) = sculpt_train::run::latest_checkpoint(&cfg.output).expect("earlier checkpoints survive");
    assert!(done >= 1, "{cks:?}");
    Pretrained::<Flex>::load(&latest.join("model"), &Default::default()).expect("the latest good checkpoint loads");
}
