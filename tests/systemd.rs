//! The systemd units in `systemd/` pass `systemd-analyze verify` (with ExecStart pointed at
//! the built binary), and the daemon's exposure score from `systemd-analyze security` stays
//! at or below the figure recorded in docs/systemd.md. `scripts/test-deps.sh` installs Debian's
//! `systemd` package when `systemd-analyze` is missing.

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 3] = [
    "certrot.service",
    "certrot-rotate.service",
    "certrot-rotate.timer",
];

fn staged() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for u in UNITS {
        let text = std::fs::read_to_string(src.join(u)).unwrap();
        let text = text.replace("/usr/local/bin/certrot", env!("CARGO_BIN_EXE_certrot"));
        std::fs::write(dir.path().join(u), text).unwrap();
    }
    dir
}

#[test]
fn units_verify() {
    let dir = staged();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(UNITS.iter().map(|u| dir.path().join(u)))
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test-deps.sh installs it)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.trim().is_empty(), "warnings: {err}");
}

#[test]
fn daemon_exposure_stays_low() {
    let dir = staged();
    for unit in ["certrot.service", "certrot-rotate.service"] {
        let o = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.path().join(unit))
            .output()
            .expect("systemd-analyze");
        let out = String::from_utf8_lossy(&o.stdout);
        let score: f64 = out
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no score in: {out}"));
        assert!(
            score <= 1.5,
            "{unit}: exposure {score} (docs/systemd.md records 1.2)"
        );
    }
}
