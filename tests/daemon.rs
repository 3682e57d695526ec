//! `certrot run` as a real process against the sandbox, with 12-second certificates:
//! rotations observed through the files and `/metrics` (consistent with the files), `/readyz`
//! flipping to 503 when the token endpoint rejects the current certificate and back after the
//! next rotation, SIGHUP with a bad configuration keeping the daemon running, SIGTERM exiting
//! 0 within 5 s with no half-written generation, and sd_notify messages on a real unix
//! datagram socket (READY, STATUS, WATCHDOG, RELOADING, STOPPING).

mod common;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use common::daemon::*;
use common::world::World;
use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Credential settings for certificates that live 12 seconds.
const SHORT_LIVED: &str =
    "critical_before = \"2s\"\nretire_after = \"3s\"\nissuer.validity_days = 1\n";

/// A sandbox whose days last 12 seconds (ECDSA keys: quick to make).
fn short_lived_world() -> World {
    World::new(SmOptions {
        seconds_per_day: 12,
        key_override: Some(certrot_sandbox::ca::KeyAlg::EcdsaP256),
        ..SmOptions::default()
    })
}

fn metric(body: &str, name: &str, cred: &str, extra: &str) -> Option<f64> {
    body.lines()
        .find(|l| {
            l.starts_with(name)
                && l.contains(&format!("credential=\"{cred}\""))
                && l.contains(extra)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn daemon_rotates_serves_health_reloads_and_stops_cleanly() {
    let w = short_lived_world();
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-d!t1");
    let ias = w.stack.sm.add_instance(InstanceKind::Identity, "ias-d");
    let short = SHORT_LIVED;
    let creds = [
        w.credential("orders", "xsuaa", &xs, short),
        w.credential(
            "login",
            "identity",
            &ias,
            &format!("{short}check.app_tid = \"sandbox-tenant\""),
        ),
    ];
    let cfg = w.config(None, &creds);
    listen_on_loopback(
        &cfg,
        "check_schedule = \"*/2 * * * * *\"\nprobe_schedule = \"*/2 * * * * *\"\n",
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");

    let sock_path = w.root().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let notes = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => notes
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if notes
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|n| n.contains("STOPPING=1"))
                        {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        })
    };
    let mut child = bin()
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let errs: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let (errs, err) = (errs.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                errs.lock().unwrap().push(l);
            }
        });
    }
    let addr = metrics_addr(&lines);
    let rotations = |name: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&format!("{name}: rotated")))
            .count()
    };
    wait_for(
        "three rotations of each credential",
        Duration::from_secs(120),
        || rotations("orders") >= 3 && rotations("login") >= 3,
    );
    // The log says when each credential renews next: at start, and after each rotation.
    {
        let errs = errs.lock().unwrap();
        for name in ["orders", "login"] {
            let told = errs
                .iter()
                .filter(|l| l.contains(&format!("{name} renews in")))
                .count();
            assert!(
                told >= 3,
                "{name}: the next renewal told {told} times: {errs:?}"
            );
        }
    }
    // /metrics agrees with the files on disk.
    let (status, body) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    for name in ["orders", "login"] {
        let on_disk = w.generation(name).leaf().not_after.unix_timestamp() as f64;
        let reported = metric(
            &body,
            "certrot_certificate_not_after_timestamp_seconds",
            name,
            "",
        )
        .unwrap();
        // A rotation may land between the scrape and the read: then the disk is newer.
        assert!(reported <= on_disk, "{name}: {reported} vs {on_disk}");
        assert!(
            metric(&body, "certrot_rotations_total{", name, "success").unwrap() >= 3.0,
            "{body}"
        );
    }
    assert!(
        body.contains("certrot_rotation_failures_total{credential=\"orders\",step=\"check\"} 0")
    );
    assert_eq!(get(&addr, "/healthz").0, 200);
    wait_for("/readyz 200", Duration::from_secs(10), || {
        get(&addr, "/readyz").0 == 200
    });

    // The token endpoint rejects the current certificate: the next probe makes /readyz 503,
    // and the next rotation (a new, registered certificate) makes it 200 again.
    let fp = w.current_fingerprint("orders");
    w.stack.tokens.revoke(&fp);
    let mut said = String::new();
    wait_for("/readyz 503", Duration::from_secs(10), || {
        let (s, b) = get(&addr, "/readyz");
        said = b;
        s == 503
    });
    assert!(
        said.contains("orders: token check failed: unauthorized"),
        "{said}"
    );
    wait_for("/readyz 200 again", Duration::from_secs(20), || {
        get(&addr, "/readyz").0 == 200
    });

    // SIGHUP with a broken configuration: reported, the daemon keeps going.
    std::fs::write(&cfg, "this is [not toml").unwrap();
    let before = rotations("orders");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    wait_for("the reload error", Duration::from_secs(5), || {
        errs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("configuration not reloaded"))
    });
    wait_for(
        "a rotation after the bad reload",
        Duration::from_secs(20),
        || rotations("orders") > before,
    );
    assert_eq!(get(&addr, "/healthz").0, 200);
    std::fs::write(&cfg, &text).unwrap();

    // SIGTERM: exit 0 after at most the 3 s grace (plus a loaded machine's slack), nothing
    // half-written.
    let t = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(status.code(), Some(0));
    for name in ["orders", "login"] {
        let dir = w.target(name);
        let staging: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..staging"))
            .collect();
        assert!(staging.is_empty(), "{name}: {staging:?}");
        w.generation(name);
    }
    reader.join().unwrap();
    let notes = notes.lock().unwrap().join("\n");
    for want in [
        "READY=1",
        "STATUS=",
        "WATCHDOG=1",
        "RELOADING=1",
        "STOPPING=1",
    ] {
        assert!(notes.contains(want), "{want} missing from:\n{notes}");
    }
}

/// Hundreds of local connections held open on the metrics port (more than the daemon serves
/// at once) stall nothing: a due credential goes on rotating while they are held, the extra
/// ones are closed at once, idle ones after the header timeout, and /healthz answers again
/// as soon as the flood ends.
#[test]
fn a_connection_flood_on_the_metrics_port_stalls_nothing() {
    let w = short_lived_world();
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-flood!t1");
    let short = SHORT_LIVED;
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, short)]);
    listen_on_loopback(&cfg, "");
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    // 256 file descriptors: fewer than the flood's connections, so a daemon that accepted
    // them all would have none left for its own work.
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "ulimit -n 256 && exec \"$0\" --config \"$1\" run"])
        .arg(env!("CARGO_BIN_EXE_certrot"))
        .arg(&cfg)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("CERTROT_LOG_FORMAT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let addr = metrics_addr(&lines);
    let rotations = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("orders: rotated"))
            .count()
    };
    // The flood: 300 idle connections, topped up as the daemon closes them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.retain(|s: &std::net::TcpStream| {
                    let mut b = [0u8; 1];
                    s.set_nonblocking(true).ok();
                    !matches!(std::io::Read::read(&mut &*s, &mut b), Ok(0))
                });
                while held.len() < 300 {
                    match std::net::TcpStream::connect(&addr) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let before = rotations();
    wait_for(
        "two rotations during the flood",
        Duration::from_secs(90),
        || rotations() >= before + 2,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    wait_for("/healthz after the flood", Duration::from_secs(15), || {
        std::panic::catch_unwind(|| get(&addr, "/healthz").0 == 200).unwrap_or(false)
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// libfaketime (Debian `faketime`, installed by scripts/test-deps.sh).
fn faketime_library() -> &'static str {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "{lib} missing: run scripts/test-deps.sh (Debian package faketime)"
    );
    lib
}

/// A daemon started with its wall clock 30 days ahead (a wrong hardware clock, NTP not yet
/// synchronised) sees every certificate as expired and rests between attempts. When the
/// clock is set right — libfaketime's clock file rewritten while the process runs; the
/// monotonic clock is the real one, as on a real machine — it notices the step and renews the
/// served certificate before that expires, instead of resting on instants planned on the
/// wrong clock.
#[test]
fn a_daemon_whose_clock_is_set_back_renews_the_served_certificate_before_expiry() {
    let lib = faketime_library();
    // 40-second days: certificates that live 40 s.
    let w = World::new(SmOptions {
        seconds_per_day: 40,
        key_override: Some(certrot_sandbox::ca::KeyAlg::EcdsaP256),
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-clock!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, SHORT_LIVED)]);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let clock = w.root().join("faketime");
    std::fs::write(&clock, "+30d\n").unwrap();
    let stderr = std::fs::File::create(w.root().join("daemon.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_certrot"))
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", &clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("DONT_FAKE_MONOTONIC", "1")
        // A watchdog of 1 s: the loop wakes every 0.5 s (no NOTIFY_SOCKET: nothing is sent).
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("CERTROT_LOG_FORMAT")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let lines = stdout_lines(&mut child);
    let log = || std::fs::read_to_string(w.root().join("daemon.log")).unwrap_or_default();
    wait_for(
        "an attempt on the clock 30 days ahead",
        Duration::from_secs(20),
        || log().contains("orders"),
    );
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&clock, "+0\n").unwrap();
    let served = w.generation("orders").leaf().clone();
    let set_right = time::OffsetDateTime::now_utc();
    wait_for(
        "the served certificate renewed on the corrected clock",
        Duration::from_secs(45),
        || {
            let now = w.generation("orders").leaf().clone();
            now.fingerprint_sha256 != served.fingerprint_sha256
                && now.not_before >= set_right - time::Duration::seconds(1)
        },
    );
    let renewed = time::OffsetDateTime::now_utc();
    let _ = child.kill();
    let _ = child.wait();
    let log = log();
    assert!(
        renewed < served.not_after,
        "renewed at {renewed}, after the served certificate expired at {}\n{log}",
        served.not_after
    );
    assert!(
        // 30 days less the seconds that passed on the wrong clock.
        log.contains("the wall clock was set back by 29d 23h")
            || log.contains("the wall clock was set back by 30d"),
        "the step is logged:\n{log}\n{:?}",
        lines.lock().unwrap()
    );
}
