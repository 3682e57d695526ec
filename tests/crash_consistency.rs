//! Crash consistency of the directory target: a child process (`examples/commit_loop.rs`) commits generations in a
//! loop and is SIGKILLed at random instants inside its commits, timed by a calibration run
//! (200 times by default, `CERTROT_CRASH_KILLS`
//! overrides) while readers in this process resolve `..data` and read cert + key, and read
//! `bundle.pem` through its visible link. Every pair read must parse and match.

mod common;
use certrot::config::Layout;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration as StdDuration, Instant};
use time::{Duration, OffsetDateTime};

/// The writer process: `examples/commit_loop.rs`. Built here every time (a no-op when it is
/// up to date): `cargo test --test crash_consistency` alone neither builds nor refreshes
/// examples, and a stale writer would test old code.
fn commit_loop_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug_dir = exe.parent().and_then(Path::parent).unwrap();
    let p = debug_dir.join("examples").join("commit_loop");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--example", "commit_loop"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(
        ok.success() && p.exists(),
        "{} could not be built",
        p.display()
    );
    p
}

fn read_pair(target: &Path) -> Result<Option<String>, String> {
    let t = dir_target(target, 2, Layout::Files);
    match t.read_current() {
        Ok(Some(c)) => Ok(Some(c.generation.leaf().serial.clone())),
        Ok(None) => Ok(None),
        // A generation pruned between resolving `..data` and opening it: not an inconsistency.
        Err(certrot::store::TargetError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn read_bundle(target: &Path) -> Result<Option<String>, String> {
    match std::fs::read(target.join("bundle.pem")) {
        Ok(b) => certrot::generation::Generation::from_pem(&b, "bundle", &b, "bundle")
            .map(|g| Some(g.leaf().serial.clone()))
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn crash_consistency_under_sigkill() {
    let kills: usize = std::env::var("CERTROT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let ca = certrot_sandbox::ca::LocalCa::with_intermediate("crash CA").unwrap();
    let mut serials = Vec::new();
    for i in 0..4 {
        let issued = issue(
            &ca,
            &format!("gen{i}"),
            Duration::hours(1),
            Duration::days(7),
        );
        serials.push(generation(&issued).leaf().serial.clone());
        std::fs::write(dir.join(format!("g{i}.crt")), &issued.chain_pem).unwrap();
        std::fs::write(dir.join(format!("g{i}.key")), issued.key_pem.as_bytes()).unwrap();
    }
    let target = dir.join("target");
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = [
        read_pair as fn(&Path) -> Result<Option<String>, String>,
        read_bundle,
    ]
    .into_iter()
    .map(|reader| {
        let (stop, reads, target, serials) =
            (stop.clone(), reads.clone(), target.clone(), serials.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                if let Some(serial) = reader(&target)? {
                    if !serials.contains(&serial) {
                        return Err(format!("unknown serial {serial}"));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    })
    .collect();

    let exe = commit_loop_exe();
    let mut seed = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 | 1;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Kill instants are timed to this machine: a calibration run measures how long the writer
    // takes to start and to make one commit (fsync speed varies a hundredfold between disks).
    let (start_up, per_commit) = calibrate(&exe, &dir);
    eprintln!("writer start-up {start_up:?}, one commit {per_commit:?}");
    let started = Instant::now();
    let mut interrupted = 0;
    for _ in 0..kills {
        let mut child = spawn_writer(&exe, &dir);
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        // Let 0, 1 or 2 commits complete, then kill somewhere inside the next one (or, with
        // none complete, anywhere in start-up and the first commit).
        let whole = rand() % 3;
        let mut line = String::new();
        for _ in 0..whole {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 {
                break;
            }
        }
        let window = if whole == 0 {
            start_up + per_commit
        } else {
            per_commit
        };
        let window_us = window.as_micros().max(1) as u64;
        std::thread::sleep(StdDuration::from_micros(rand() % window_us));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // With no writer left, what the crash left reads back whole: `..data` names a complete
        // generation of the ones written.
        if std::fs::symlink_metadata(target.join("..data")).is_ok() {
            let t = dir_target(&target, 2, Layout::Files);
            let serial = t
                .read_current()
                .unwrap_or_else(|e| panic!("after a crash: {e}"))
                .expect("..data exists, so a generation is current")
                .generation
                .leaf()
                .serial
                .clone();
            assert!(serials.contains(&serial), "unknown serial {serial}");
        }
        if leftovers(&target).next().is_some() {
            interrupted += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap().unwrap();
    }
    let total = reads.load(Ordering::Relaxed);
    eprintln!(
        "{kills} SIGKILLs in {:?} ({interrupted} left a half-written generation), {total} consistent reads",
        started.elapsed()
    );
    assert!(total > 0, "the readers never saw a generation");
    if kills >= 50 {
        assert!(interrupted > 0, "no kill landed inside a commit");
    }
    // And a fresh commit cleans up whatever the last crash left.
    let t = dir_target(&target, 2, Layout::Files);
    let g = generation(&issue(&ca, "final", Duration::hours(1), Duration::days(7)));
    t.commit(&g, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(
        t.read_current().unwrap().unwrap().generation.leaf().serial,
        g.leaf().serial
    );
    let left: Vec<_> = leftovers(&target).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Names a crash mid-commit leaves behind: a staging directory or the temporary link.
fn leftovers(target: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(target)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..staging") || n == "..data_tmp")
}

fn spawn_writer(exe: &Path, dir: &Path) -> std::process::Child {
    std::process::Command::new(exe)
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the writer for a few commits into a scratch copy and returns (start-up, one commit).
fn calibrate(exe: &Path, dir: &Path) -> (StdDuration, StdDuration) {
    let scratch = tempfile::tempdir().unwrap();
    for i in 0..4 {
        for ext in ["crt", "key"] {
            let name = format!("g{i}.{ext}");
            std::fs::copy(dir.join(&name), scratch.path().join(&name)).unwrap();
        }
    }
    const COMMITS: u32 = 6;
    let spawned = Instant::now();
    let mut child = spawn_writer(exe, scratch.path());
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut at = Vec::new();
    let mut line = String::new();
    for _ in 0..COMMITS {
        line.clear();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "the writer stopped during calibration"
        );
        at.push(spawned.elapsed());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let per_commit = (at[at.len() - 1] - at[0]) / (COMMITS - 1);
    (at[0].saturating_sub(per_commit), per_commit)
}
