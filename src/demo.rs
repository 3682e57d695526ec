//! `certrot demo`: a self-contained tour on generated certificates. It builds a workspace
//! with a local CA and three credentials of different ages, imports each through the same
//! code as `certrot import`, and shows `status` and `check` on them.

use crate::cli::{import, render_check, render_status, reports};
use crate::config::Config;
use crate::policy::Health;
use crate::sandbox::ca::KeyAlg;
use crate::sandbox::fixtures::{Spec, write_workspace};
use std::path::PathBuf;
use time::{Duration, OffsetDateTime};

/// Runs the demo; returns the exit code.
pub fn run(dir: Option<PathBuf>) -> i32 {
    let (root, _guard) = match dir {
        Some(d) => (d, None),
        None => match tempfile::Builder::new().prefix("certrot-demo-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("certrot demo: cannot create a temporary directory: {e}");
                return 1;
            }
        },
    };
    let kept = _guard.is_none();
    match demo(&root, kept) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("certrot demo: {e}");
            1
        }
    }
}

fn demo(root: &std::path::Path, kept: bool) -> Result<(), String> {
    let week = Duration::days(7);
    let specs = [
        Spec {
            name: "orders".into(),
            alg: KeyAlg::EcdsaP256,
            age: Duration::hours(2),
            lifetime: week,
        },
        Spec {
            name: "billing".into(),
            alg: KeyAlg::Rsa2048,
            age: Duration::days(5),
            lifetime: week,
        },
        Spec {
            name: "audit".into(),
            alg: KeyAlg::EcdsaP256,
            age: Duration::hours(6 * 24 + 12),
            lifetime: week,
        },
    ];
    println!("certrot demo: workspace {}", root.display());
    let cfg_path = write_workspace(root, &specs)?;
    let config = Config::load(&cfg_path).map_err(|e| e.to_string())?;
    println!(
        "\n1. Import three service keys (7-day XSUAA-style X.509 credentials of different ages):"
    );
    for cred in &config.credentials {
        let key = root.join("keys").join(format!("{}.json", cred.name));
        println!("   {}", import(&config, cred, &key, false)?);
    }
    let reports = reports(&config, &[])?;
    println!("\n2. certrot status --config {}\n", cfg_path.display());
    print!("{}", render_status(&reports, OffsetDateTime::now_utc()));
    let worst = reports.iter().map(|r| r.health).max().unwrap_or(Health::Ok);
    println!(
        "\n3. certrot check (monitoring-plugin exit code {}):\n",
        worst.exit_code()
    );
    print!("{}", render_check(&reports, worst));
    let orders = root.join("targets").join("orders");
    println!("\n4. What an application reads ({}):", orders.display());
    let mut names: Vec<String> = std::fs::read_dir(&orders)
        .map_err(|e| format!("{}: {e}", orders.display()))?
        .filter_map(|e| e.ok())
        .map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            match std::fs::read_link(e.path()) {
                Ok(t) => format!("{n} -> {}", t.display()),
                Err(_) => n,
            }
        })
        .collect();
    names.sort();
    for n in names {
        println!("   {n}");
    }
    if kept {
        println!(
            "\nTry: certrot --config {} status   (files stay in {})",
            cfg_path.display(),
            root.display()
        );
    } else {
        println!(
            "\nThe workspace is removed on exit; run `certrot demo --dir DIR` to keep it and \
             try `certrot --config DIR/certrot.toml status`."
        );
    }
    Ok(())
}
