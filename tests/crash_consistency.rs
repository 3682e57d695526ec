//! Crash consistency of the directory target: a child process (`examples/commit_loop.rs`) commits generations in a
//! loop and is SIGKILLed at random instants (200 times by default, `CERTROT_CRASH_KILLS`
//! overrides) while readers in this process resolve `..data` and read cert + key, and read
//! `bundle.pem` through its visible link. Every pair read must parse and match.

mod common;
use certrot::config::Layout;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration as StdDuration, Instant};
use time::{Duration, OffsetDateTime};

/// The writer process: `examples/commit_loop.rs`, built by `cargo test` beside this test.
fn commit_loop_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug_dir = exe.parent().and_then(Path::parent).unwrap();
    let p = debug_dir.join("examples").join("commit_loop");
    if !p.exists() {
        // `cargo test --test crash_consistency` alone does not build examples.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = std::process::Command::new(cargo)
            .args(["build", "--example", "commit_loop"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(
            ok.success() && p.exists(),
            "{} could not be built",
            p.display()
        );
    }
    p
}

fn read_pair(target: &Path) -> Result<Option<String>, String> {
    let t = dir_target(target, 2, Layout::Files);
    match t.read_current() {
        Ok(Some(c)) => Ok(Some(c.generation.leaf().serial.clone())),
        Ok(None) => Ok(None),
        // A generation pruned between resolving `..data` and opening it: not an inconsistency.
        Err(certrot::target::TargetError::Io { source, .. })
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
    let ca = certrot::sandbox::ca::LocalCa::with_intermediate("crash CA").unwrap();
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
    let started = Instant::now();
    for _ in 0..kills {
        let mut child = std::process::Command::new(&exe)
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Random instant: up to 25 ms after start, past process start-up most of the time.
        std::thread::sleep(StdDuration::from_micros(2_000 + rand() % 23_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // After every crash the target reads back whole.
        if target.join("..data").exists() {
            assert!(read_pair(&target).unwrap().is_some() || target.join("..data").exists());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap().unwrap();
    }
    let total = reads.load(Ordering::Relaxed);
    eprintln!(
        "{kills} SIGKILLs in {:?}, {total} consistent reads",
        started.elapsed()
    );
    assert!(total > 0, "the readers never saw a generation");
    // And a fresh commit cleans up whatever the last crash left.
    let t = dir_target(&target, 2, Layout::Files);
    let g = generation(&issue(&ca, "final", Duration::hours(1), Duration::days(7)));
    t.commit(&g, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(
        t.read_current().unwrap().unwrap().generation.leaf().serial,
        g.leaf().serial
    );
    let leftovers: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..staging") || n == "..data_tmp")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
