//! Helpers for tests that run `certrot run` as a process: its metrics listener on a free
//! loopback port, its stdout line by line, plain HTTP GETs, polling with a limit.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `f` every 100 ms until it holds; fails the test after `limit` naming `what`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP GET on loopback: (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Points the daemon's metrics listener of `cfg` at any loopback port, with `extra`
/// `[daemon]` settings.
pub fn listen_on_loopback(cfg: &std::path::Path, extra: &str) {
    let text = std::fs::read_to_string(cfg).unwrap().replace(
        "[daemon]\nlisten = \"\"\n",
        &format!("[daemon]\nlisten = \"127.0.0.1:0\"\n{extra}"),
    );
    std::fs::write(cfg, text).unwrap();
}

/// The child's stdout, line by line, as it comes.
pub fn stdout_lines(child: &mut std::process::Child) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let (sink, out) = (lines.clone(), child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    lines
}

/// `host:port` of the daemon's metrics listener, from its `metrics at http://…` line (waited
/// for).
pub fn metrics_addr(lines: &Mutex<Vec<String>>) -> String {
    wait_for("the metrics address", Duration::from_secs(10), || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("metrics at http://"))
    });
    lines
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            l.split("http://")
                .nth(1)
                .map(|a| a.trim_end_matches("/metrics").to_string())
        })
        .unwrap()
}
