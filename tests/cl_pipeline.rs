//! The continual-learning pipeline end to end on tiny models: a 3-task stream runs with every
//! method, the accuracy matrix has the right shape and range, the report is written, resuming
//! from the task-2 checkpoint reproduces the uninterrupted run exactly (matrix, metrics and final
//! weights), and the text formats (O-LoRA CL_Benchmark, TRACE) go through tokenization,
//! training and evaluation for both families.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use sculpt::{repo_root, tiny_fixture};
use sculpt_train::config::Method;
use sculpt_train::{train_with, RunConfig, RunOptions};

type Ad = Autodiff<Flex>;

/// The demo stream, shortened to `epochs` passes, written under `dir`.
fn demo(dir: &Path, epochs: usize) -> RunConfig {
    let mut cfg = sculpt_train::demo::prepare(dir).unwrap();
    cfg.train.epochs = epochs;
    cfg
}

/// The demo's first `tasks` tasks, one epoch each, trained once into `<dir>/run`.
fn trained_run(dir: &Path, tasks: usize) -> RunConfig {
    let mut cfg = demo(dir, 1);
    cfg.output = dir.join("run");
    cfg.tasks.truncate(tasks);
    train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
    cfg
}

fn check_matrix(r: &sculpt_train::RunResults, method: Method) {
    let m = &r.matrix;
    assert_eq!(m.tasks, ["cipher-a", "cipher-b", "cipher-c"]);
    assert_eq!(m.acc.len(), 3);
    for row in &m.acc {
        assert_eq!(row.len(), 4);
        for v in row.iter().flatten() {
            assert!((0.0..=1.0).contains(v), "{method:?}: accuracy {v}");
        }
    }
    // Base column and the final column are always evaluated; mtl has no intermediate points.
    for i in 0..3 {
        assert!(m.acc[i][0].is_some() && m.acc[i][3].is_some(), "{method:?}");
        for c in 1..3 {
            assert_eq!(m.acc[i][c].is_some(), method != Method::Mtl, "{method:?} [{i}][{c}]");
        }
    }
    assert!(r.metrics.aa.is_some());
    assert_eq!(r.tasks.len(), if method == Method::Mtl { 1 } else { 3 });
}

#[test]
fn every_method_runs_the_stream_and_writes_matrix_checkpoints_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let base = demo(dir.path(), 2);
    for method in Method::ALL {
        let mut cfg = base.clone();
        cfg.method = method;
        cfg.output = dir.path().join(method.name());
        let s = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
        check_matrix(&s.results, method);
        let html = std::fs::read_to_string(&s.report).unwrap();
        assert!(html.contains("<svg") && html.contains("cipher-b") && html.ends_with("</html>\n"), "{method:?}");
        let json: sculpt_train::RunResults = serde_json::from_str(&std::fs::read_to_string(cfg.output.join("results.json")).unwrap()).unwrap();
        assert_eq!(json.matrix, s.results.matrix);
        let phases = if method == Method::Mtl { 1 } else { 3 };
        let cks: Vec<_> = std::fs::read_dir(cfg.output.join("checkpoints")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
        assert_eq!(cks.len(), phases, "{method:?}: {cks:?}");
        assert!(cfg.output.join("model/model.safetensors").is_file());
        // Every step is logged.
        let steps: usize = s.results.tasks.iter().map(|t| t.steps).sum();
        assert_eq!(std::fs::read_to_string(cfg.output.join("metrics.jsonl")).unwrap().lines().count(), steps);
    }
}

/// The demo's claim, at its real settings: sequential fine-tuning forgets the first ciphers,
/// OSFT keeps them.
#[test]
fn demo_osft_keeps_what_seqft_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sculpt_train::demo::prepare(dir.path()).unwrap();
    let c = sculpt_train::compare::compare::<Ad>(&cfg, &[Method::Osft, Method::Seqft], &Default::default(), RunOptions::default()).unwrap();
    let (osft, seqft) = (&c.runs[0].1, &c.runs[1].1);
    for r in [osft, seqft] {
        // every task is learned when it is trained
        for i in 0..3 {
            assert!(r.matrix.acc[i][i + 1].unwrap() >= 0.9, "{}", r.matrix.to_text());
        }
    }
    let (o, s) = (osft.metrics, seqft.metrics);
    assert!(o.bwt.unwrap() > -0.1, "osft forgot:\n{}", osft.matrix.to_text());
    assert!(s.bwt.unwrap() < -0.3, "seqft did not forget:\n{}", seqft.matrix.to_text());
    assert!(o.aa.unwrap() > s.aa.unwrap() + 0.3);
    assert!(c.report.is_file() && c.json.is_file());
    println!("{}", c.table());
}

/// `compare` checks every method's folder before the first method trains.
#[test]
fn compare_refuses_an_earlier_run_before_training_anything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sculpt_train::demo::prepare(dir.path()).unwrap();
    std::fs::create_dir_all(cfg.output.join("osft")).unwrap();
    std::fs::write(cfg.output.join("osft/results.json"), "{}").unwrap();
    let e = sculpt_train::compare::compare::<Ad>(&cfg, &[Method::Seqft, Method::Osft], &Default::default(), RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("osft") && e.contains("results.json") && e.contains("--overwrite"), "{e}");
    assert!(!cfg.output.join("seqft").exists(), "seqft trained before the refusal");
}

fn read_model(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// 3 tasks uninterrupted vs the same run cut after task 2 and resumed: identical matrix, metrics
/// log and final weights, for a stateless method and for the two with method state.
#[test]
fn resume_from_the_task_2_checkpoint_reproduces_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = demo(dir.path(), 3);
    for method in [Method::Osft, Method::Ewc, Method::Olora] {
        let mut cfg = base.clone();
        cfg.method = method;
        cfg.output = dir.path().join(format!("resume-{}", method.name()));
        let full = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
        let weights = read_model(&full.model_dir);
        let metrics = std::fs::read_to_string(cfg.output.join("metrics.jsonl")).unwrap();
        // Simulate a run killed during task 3: drop its checkpoint and the final outputs, and
        // leave a partial metrics tail behind.
        let ck = cfg.output.join("checkpoints");
        let third = std::fs::read_dir(&ck).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains("task-03")).unwrap();
        std::fs::remove_dir_all(third).unwrap();
        std::fs::remove_dir_all(&full.model_dir).unwrap();
        std::fs::remove_file(cfg.output.join("results.json")).unwrap();
        let partial: String = metrics.lines().take(metrics.lines().count() - 3).map(|l| format!("{l}\n")).collect();
        std::fs::write(cfg.output.join("metrics.jsonl"), partial).unwrap();
        let resumed = train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: true, ..Default::default() }).unwrap();
        assert_eq!(resumed.results.matrix, full.results.matrix, "{method:?}");
        assert_eq!(resumed.results.metrics, full.results.metrics, "{method:?}");
        assert_eq!(std::fs::read_to_string(cfg.output.join("metrics.jsonl")).unwrap(), metrics, "{method:?}: loss curve differs");
        assert!(read_model(&resumed.model_dir) == weights, "{method:?}: final weights differ");
    }
}

/// A fresh start into a folder that holds an earlier run is refused and changes nothing there;
/// `overwrite` deletes that run's checkpoints, model and results first, so none of its
/// checkpoints is left for a later `resume` to pick up; a run that stopped before its first
/// checkpoint left nothing to protect.
#[test]
fn a_fresh_run_never_overwrites_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = trained_run(dir.path(), 2);
    let snapshot = |cfg: &RunConfig| {
        ["run_config.toml", "results.json", "metrics.jsonl", "model/model.safetensors"].map(|f| std::fs::read(cfg.output.join(f)).unwrap())
    };
    let before = snapshot(&cfg);
    let mut changed = cfg.clone();
    changed.train.lr *= 2.0;
    changed.tasks.truncate(1);
    let e = train_with::<Ad>(&changed, &Default::default(), RunOptions::default()).unwrap_err();
    assert!(matches!(e, sculpt_train::TrainError::OutputInUse { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("2 checkpoints, model, results.json") && e.contains("--overwrite") && e.contains("--resume"), "{e}");
    assert!(snapshot(&cfg) == before, "a refused start changed the earlier run's files");

    let s = train_with::<Ad>(&changed, &Default::default(), RunOptions { overwrite: true, ..Default::default() }).unwrap();
    assert_eq!(s.results.matrix.tasks, ["cipher-a"]);
    let left: Vec<String> = std::fs::read_dir(changed.output.join("checkpoints")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["task-01-cipher-a"], "the earlier run's task-2 checkpoint must be gone");
    assert!(std::fs::read_to_string(changed.output.join("run_config.toml")).unwrap() != String::from_utf8(before[0].clone()).unwrap());

    // Only a config and a log, as a run that failed before its first checkpoint leaves them.
    let early = dir.path().join("early");
    std::fs::create_dir_all(&early).unwrap();
    std::fs::write(early.join("run_config.toml"), "x").unwrap();
    std::fs::write(early.join("metrics.jsonl"), "{}\n").unwrap();
    let mut again = changed.clone();
    again.output = early;
    train_with::<Ad>(&again, &Default::default(), RunOptions::default()).unwrap();

    // A base model inside `<output>/model` would be written over (and deleted by `overwrite`):
    // refused before anything is touched, with or without `overwrite`.
    let mut inside = changed.clone();
    inside.output = dir.path().join("wrapper");
    std::fs::create_dir_all(&inside.output).unwrap();
    std::fs::rename(&changed.model, inside.output.join("model")).unwrap();
    inside.model = inside.output.join("model");
    for overwrite in [false, true] {
        let e = train_with::<Ad>(&inside, &Default::default(), RunOptions { overwrite, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("`model`") && e.contains("<output>/model"), "{e}");
        assert!(inside.model.join("config.json").is_file(), "the base model was touched");
    }
}

#[test]
fn resume_refuses_a_changed_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = trained_run(dir.path(), 1);
    cfg.train.lr *= 2.0;
    let e = train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: true, ..Default::default() }).unwrap_err().to_string();
    assert!(e.contains("run_config.toml") && e.contains("differs"), "{e}");
}

fn write_trace_task(dir: &Path, rows: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let v: Vec<_> = rows.iter().map(|(p, a)| serde_json::json!({"prompt": p, "answer": a})).collect();
    for f in ["train.json", "test.json"] {
        std::fs::write(dir.join(f), serde_json::to_string(&v).unwrap()).unwrap();
    }
}

/// TRACE-format text through both families' tokenization (prompt/answer split, EOS, labels),
/// training and greedy evaluation; and the O-LoRA CL_Benchmark format on the shared data.
#[test]
fn text_formats_train_and_evaluate_on_both_families() {
    let dir = tempfile::tempdir().unwrap();
    write_trace_task(&dir.path().join("t1"), &[("Say yes:", "yes"), ("Say no:", "no"), ("Say maybe:", "maybe")]);
    write_trace_task(&dir.path().join("t2"), &[("Colour of grass:", "green"), ("Colour of sky:", "blue")]);
    for fixture in ["llama-tied-tiny", "t5-v1_1-tiny"] {
        let text = format!(
            "model = {:?}\noutput = \"out-{fixture}\"\nmethod = \"osft\"\n[train]\nbatch_size = 2\nepochs = 20\nlr = 1e-2\n[eval]\nmax_new_tokens = 4\n\
             [[tasks]]\nname = \"t1\"\ndata = \"t1\"\nformat = \"trace\"\n[[tasks]]\nname = \"t2\"\ndata = \"t2\"\nformat = \"trace\"\n",
            tiny_fixture(fixture)
        );
        let cfg = RunConfig::from_toml(&dir.path().join("run.toml"), &text).unwrap();
        let s = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
        for t in &s.results.tasks {
            assert!(t.last_loss < t.first_loss, "{fixture} {}: {} → {}", t.name, t.first_loss, t.last_loss);
        }
        assert_eq!(s.results.matrix.acc.len(), 2);
        assert!(s.results.matrix.acc.iter().flatten().all(|v| v.is_some_and(|v| (0.0..=1.0).contains(&v))));
        assert!(!s.results.samples.is_empty());
    }

    let Some(shared) = repo_root().parent().map(|p| p.join("shared/data/CL_Benchmark")).filter(|p| p.is_dir()) else {
        eprintln!("skipping the CL_Benchmark part: ../shared/data/CL_Benchmark is not here (only on the maintainers' machines)");
        return;
    };
    let text = format!(
        "model = {:?}\noutput = \"olora-out\"\nmethod = \"seqft\"\ndata_root = {:?}\n[train]\nbatch_size = 4\nmax_steps = 2\n[data]\nmax_train_examples = 8\nmax_eval_examples = 4\nmax_prompt_tokens = 96\n[eval]\nmax_new_tokens = 6\n\
         [[tasks]]\nname = \"agnews\"\ndata = \"TC/agnews\"\nformat = \"olora\"\n[[tasks]]\nname = \"copa\"\ndata = \"COPA/COPA\"\nformat = \"olora\"\n",
        tiny_fixture("llama-tied-tiny"),
        shared
    );
    let cfg = RunConfig::from_toml(&dir.path().join("olora.toml"), &text).unwrap();
    let s = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
    assert_eq!(s.results.tasks.iter().map(|t| t.steps).collect::<Vec<_>>(), [2, 2]);
    assert_eq!(s.results.matrix.tasks, ["agnews", "copa"]);
}

/// TRACE's generation metrics score the stream: each matrix entry is the mean of its examples'
/// scores under the task's `metric`, recomputed here from the kept predictions.
#[test]
fn generation_metrics_score_the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    write_trace_task(&dir.path().join("sum"), &[("Summarise: the cat sat on the mat", "cat on mat"), ("Summarise: a dog ran far", "dog ran")]);
    write_trace_task(&dir.path().join("code"), &[("def f(x):", "return x + 1"), ("def g(y):", "return y * 2")]);
    write_trace_task(&dir.path().join("simp"), &[("Simplify: the committee decided to postpone it", "it is postponed")]);
    let text = format!(
        "model = {:?}\noutput = \"out\"\nmethod = \"seqft\"\n[train]\nbatch_size = 2\nmax_steps = 3\nlr = 1e-2\n[eval]\nmax_new_tokens = 6\n\
         [[tasks]]\nname = \"sum\"\ndata = \"sum\"\nformat = \"trace\"\nmetric = \"rouge_l\"\n\
         [[tasks]]\nname = \"code\"\ndata = \"code\"\nformat = \"trace\"\nmetric = \"edit_similarity\"\n\
         [[tasks]]\nname = \"simp\"\ndata = \"simp\"\nformat = \"trace\"\nmetric = \"sari\"\n",
        tiny_fixture("llama-tied-tiny")
    );
    let cfg = RunConfig::from_toml(&dir.path().join("run.toml"), &text).unwrap();
    let s = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
    let metrics = [sculpt_data::Metric::RougeL, sculpt_data::Metric::EditSimilarity, sculpt_data::Metric::Sari];
    let sources = [vec!["Summarise: the cat sat on the mat", "Summarise: a dog ran far"], vec!["def f(x):", "def g(y):"], vec!["Simplify: the committee decided to postpone it"]];
    for (i, name) in ["sum", "code", "simp"].iter().enumerate() {
        // The final evaluation keeps every prediction of these small tasks (≤ 5 each).
        let kept: Vec<_> = s.results.samples.iter().filter(|x| x.task == *name).collect();
        assert_eq!(kept.len(), sources[i].len(), "{name}");
        let mut sum = 0.0;
        for (x, src) in kept.iter().zip(&sources[i]) {
            let want = metrics[i].score(&x.prediction, &x.answer, src);
            assert!((x.score - want).abs() < 1e-12, "{name}: {} vs {want}", x.score);
            sum += want;
        }
        let entry = s.results.matrix.acc[i][3].expect("evaluated");
        assert!((entry - sum / kept.len() as f64).abs() < 1e-9, "{name}: matrix {entry} vs mean {}", sum / kept.len() as f64);
    }
    // SARI is never 0 for a non-empty source (deleting nothing still keeps n-grams), unlike
    // exact match on an untrained model: the metric really is SARI.
    assert!(s.results.matrix.acc[2][0].unwrap() > 0.0);
}

#[test]
fn bad_task_data_is_reported_before_training() {
    let dir = tempfile::tempdir().unwrap();
    write_trace_task(&dir.path().join("ok"), &[("q", "a")]);
    std::fs::create_dir_all(dir.path().join("bad")).unwrap();
    std::fs::write(dir.path().join("bad/train.json"), r#"[{"prompt": "q", "answer": "a"}, {"prompt": "q"}]"#).unwrap();
    std::fs::write(dir.path().join("bad/test.json"), "[]").unwrap();
    let text = format!(
        "model = {:?}\noutput = \"out\"\n[[tasks]]\nname = \"ok\"\ndata = \"ok\"\nformat = \"trace\"\n[[tasks]]\nname = \"bad\"\ndata = \"bad\"\nformat = \"trace\"\n",
        tiny_fixture("llama-tied-tiny")
    );
    let cfg = RunConfig::from_toml(&dir.path().join("run.toml"), &text).unwrap();
    let e = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("bad/train.json") && e.contains("answer"), "{e}");
    assert!(!dir.path().join("out/checkpoints").exists(), "nothing may train before every task is read");
}

/// A checkpoint whose files no longer match its manifest (bit rot, a truncated copy) is detected
/// on resume and the previous good one is used; the run still ends with the uninterrupted result.
#[test]
fn a_corrupt_checkpoint_is_detected_and_the_previous_one_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = demo(dir.path(), 2);
    cfg.method = Method::Seqft;
    cfg.output = dir.path().join("run");
    let full = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
    let weights = read_model(&full.model_dir);
    let ck = cfg.output.join("checkpoints");
    let find = |n: &str| std::fs::read_dir(&ck).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains(n)).unwrap();
    std::fs::remove_dir_all(find("task-03")).unwrap();
    // Flip one byte in the task-2 checkpoint's weights.
    let st = find("task-02").join("model/model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&st, bytes).unwrap();
    let (done, dir1) = sculpt_train::run::latest_checkpoint(&cfg.output).unwrap();
    assert_eq!(done, 1, "the corrupt task-2 checkpoint must be passed over for {}", dir1.display());
    let resumed = train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!(resumed.results.matrix, full.results.matrix);
    assert!(read_model(&resumed.model_dir) == weights);
}

/// A stop that arrives during a task's last step or its evaluation ends the run at that task's
/// checkpoint, before the next task begins, and `--resume` carries on from there. With the stop
/// flag always set, each call runs exactly one step; the calls that end a task report its last
/// step. The result equals the uninterrupted run's.
#[test]
fn a_stop_at_a_task_boundary_ends_the_run_there() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = demo(dir.path(), 1);
    cfg.tasks.truncate(2);
    cfg.method = Method::Seqft;
    cfg.data.max_train_examples = Some(2 * cfg.train.batch_size);
    cfg.output = dir.path().join("ref");
    let full = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
    let steps = full.results.tasks[0].steps;
    assert_eq!(steps, 2, "the test expects two steps per task");
    cfg.output = dir.path().join("stopped");
    let stop = Arc::new(AtomicBool::new(true));
    let mut seen = vec![];
    let done = loop {
        match train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: !seen.is_empty(), stop: Some(stop.clone()), overwrite: false }) {
            Ok(r) => break r,
            Err(sculpt_train::TrainError::Interrupted { task, step, .. }) => seen.push((task, step)),
            Err(e) => panic!("{e}"),
        }
        assert!(seen.len() <= 4, "the run does not end: {seen:?}");
    };
    // Task 1: step 0 (mid-task stop), step 1 (its last: stopped at the task boundary); task 2:
    // step 0, then the run finishes with its last step.
    let expected: Vec<(String, usize)> = vec![("cipher-a".into(), 0), ("cipher-a".into(), 1), ("cipher-b".into(), 0)];
    assert_eq!(seen, expected);
    assert_eq!(done.results.matrix, full.results.matrix);
    assert!(read_model(&done.model_dir) == read_model(&full.model_dir));
}

/// Mid-task resume, bit for bit: a run stopped after every single step of the first task (a
/// stop request writes a mid-task checkpoint: module record, optimizer state, step count) and
/// resumed each time, then stopped again inside task 2, ends with exactly the uninterrupted
/// run's weights, matrix and loss curve — for OSFT (attached factors; also with a bf16 `W_high`,
/// which the full-precision checkpoint stores as fp32, and with the high parts held as factors,
/// which the checkpoint stores as copies of the bases they share), LoRA (adapters) and EWC
/// (penalty state).
#[test]
fn stopping_inside_a_task_and_resuming_is_bit_identical() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut base = demo(dir.path(), 2);
    base.tasks.truncate(2);
    for (method, variant) in [(Method::Osft, ""), (Method::Lora, ""), (Method::Ewc, ""), (Method::Osft, "bf16"), (Method::Osft, "factors")] {
        let mut cfg = base.clone();
        cfg.method = method;
        let tag = if variant.is_empty() { method.name().to_string() } else { format!("{}-{variant}", method.name()) };
        match variant {
            "bf16" => cfg.osft.frozen_precision = sculpt_osft::FrozenPrecision::Bf16,
            "factors" => cfg.osft.frozen_form = sculpt_osft::FrozenForm::Factors,
            _ => {}
        }
        let method = tag.clone();
        cfg.output = dir.path().join(format!("ref-{tag}"));
        let full = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
        let weights = read_model(&full.model_dir);
        let metrics = std::fs::read_to_string(cfg.output.join("metrics.jsonl")).unwrap();
        if variant == "factors" {
            let ranks: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cfg.output.join("osft_ranks.json")).unwrap()).unwrap();
            let factored = ranks.to_string().matches("\"high_factors\":true").count();
            assert!(factored > 0, "no target held its high part as factors: {ranks}");
        }

        cfg.output = dir.path().join(format!("stopped-{tag}"));
        let stop = Arc::new(AtomicBool::new(true));
        for i in 0..3 {
            let e = train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: i > 0, stop: Some(stop.clone()), overwrite: false }).unwrap_err();
            assert!(matches!(e, sculpt_train::TrainError::Interrupted { step, .. } if step == i), "{method:?}: {e}");
        }
        // Once more, stopped as soon as task 2 has begun.
        stop.store(false, Ordering::SeqCst);
        let watch = {
            let (stop, ck) = (stop.clone(), cfg.output.join("checkpoints"));
            std::thread::spawn(move || {
                let t0 = std::time::Instant::now();
                while t0.elapsed().as_secs() < 60 {
                    let boundary = std::fs::read_dir(&ck).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy() == "task-01-cipher-a");
                    if boundary {
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        let r = train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: true, stop: Some(stop.clone()), overwrite: false });
        watch.join().unwrap();
        if let Err(e) = &r {
            assert!(matches!(e, sculpt_train::TrainError::Interrupted { .. }), "{e}");
        }
        let done = train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: true, stop: None, overwrite: false }).unwrap();
        assert_eq!(done.results.matrix, full.results.matrix, "{method:?}");
        assert_eq!(std::fs::read_to_string(cfg.output.join("metrics.jsonl")).unwrap(), metrics, "{method:?}: loss curve differs");
        assert!(read_model(&done.model_dir) == weights, "{method:?}: final weights differ");
        let left: Vec<_> = std::fs::read_dir(cfg.output.join("checkpoints")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
        assert!(!left.iter().any(|n| n.contains("-step-")), "mid-task checkpoints outlive their task: {left:?}");
    }
}

/// `[osft] grow`: from the second task on, every target's frozen rank is the previous task's
/// plus `⌊grow·R⌋`, capped at `R − 1`; the floor is recorded with the ranks, and a run resumed
/// at a task boundary derives it from the saved ranks.
#[test]
fn grow_raises_every_targets_frozen_rank_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = demo(dir.path(), 1);
    cfg.method = Method::Osft;
    cfg.osft.rank = sculpt_osft::RankRule::Preserve { fraction: Some(0.5), count: None };
    cfg.osft.grow = Some(0.25);
    cfg.output = dir.path().join("grow");
    let full = train_with::<Ad>(&cfg, &Default::default(), RunOptions::default()).unwrap();
    let t = &full.results.tasks;
    assert_eq!(t.len(), 3);
    assert!(!t[0].ranks.is_empty() && t[0].ranks.iter().all(|x| x.floor.is_none() && x.k == x.n.min(x.m) / 2));
    for (prev, next) in [(&t[0], &t[1]), (&t[1], &t[2])] {
        assert_eq!(prev.ranks.len(), next.ranks.len());
        for (p, q) in prev.ranks.iter().zip(&next.ranks) {
            assert_eq!(p.name, q.name);
            let r = p.n.min(p.m);
            let want = (p.k + r / 4).min(r - 1);
            assert_eq!((q.floor, q.k, q.r_low), (Some(want), want, r - want), "{}", q.name);
        }
    }
    // The third task hits the cap: one trainable direction per target.
    assert!(t[2].ranks.iter().all(|x| x.r_low == 1));

    // Resume after task 2: the floors come from the saved ranks.
    let third = std::fs::read_dir(cfg.output.join("checkpoints")).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains("task-03")).unwrap();
    std::fs::remove_dir_all(third).unwrap();
    std::fs::remove_dir_all(&full.model_dir).unwrap();
    std::fs::remove_file(cfg.output.join("results.json")).unwrap();
    let resumed = train_with::<Ad>(&cfg, &Default::default(), RunOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!(resumed.results.tasks[2].ranks, t[2].ranks);
    assert_eq!(resumed.results.matrix, full.results.matrix);
}
