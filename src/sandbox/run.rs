//! `certrot sandbox`: runs the sandbox token endpoint in the foreground with a ready-made
//! workspace — CA file, one registered client with a working credential already imported,
//! and a configuration — so that `certrot check --validate` succeeds against it at once.

use super::ca::{KeyAlg, LocalCa};
use super::token::{Fault, TokenServer};
use crate::config::Config;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Client id the sandbox registers.
pub const CLIENT_ID: &str = "sb-sandbox!t1";

/// Runs until SIGINT or SIGTERM; returns the exit code.
pub fn run(port: u16, dir: Option<PathBuf>, faults: Vec<(Fault, usize)>) -> i32 {
    let (root, _guard) = match dir {
        Some(d) => (d, None),
        None => match tempfile::Builder::new()
            .prefix("certrot-sandbox-")
            .tempdir()
        {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("certrot sandbox: cannot create a temporary directory: {e}");
                return 1;
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certrot sandbox: {e}");
            return 1;
        }
    };
    match rt.block_on(serve(port, &root, faults)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("certrot sandbox: {e}");
            1
        }
    }
}

async fn serve(port: u16, root: &Path, faults: Vec<(Fault, usize)>) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let ca = LocalCa::new("certrot sandbox CA").map_err(|e| e.to_string())?;
    let server = TokenServer::start(&ca, &[ca.root_pem()], port)
        .await
        .map_err(|e| e.to_string())?;
    let ca_file = root.join("ca.pem");
    std::fs::write(&ca_file, ca.root_pem()).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let now = OffsetDateTime::now_utc();
    let issued = ca
        .issue(
            "sandbox client",
            KeyAlg::EcdsaP256,
            now - Duration::minutes(1),
            now + Duration::days(7),
        )
        .map_err(|e| e.to_string())?;
    let g = crate::generation::Generation::from_pem(
        issued.chain_pem.as_bytes(),
        "sandbox",
        issued.key_pem.as_bytes(),
        "sandbox",
    )
    .map_err(|e| e.to_string())?;
    server.register(CLIENT_ID, &g.leaf().fingerprint_sha256);
    let key = serde_json::json!({
        "clientid": CLIENT_ID,
        "certificate": issued.chain_pem,
        "key": issued.key_pem.as_str(),
        "certurl": server.cert_base,
        "url": server.plain_base,
        "credential-type": "x509",
    });
    let key_file = root.join("sandbox-key.json");
    std::fs::write(
        &key_file,
        serde_json::to_vec_pretty(&key).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", key_file.display()))?;
    let snippet = format!(
        "[[credential]]\nname = \"sandbox\"\nkind = \"xsuaa\"\ntarget.path = {:?}\n\
         check.token_url = {:?}\ncheck.ca_file = {:?}\ncheck.system_roots = false\n",
        root.join("targets/sandbox").display().to_string(),
        server.url,
        ca_file.display().to_string()
    );
    let cfg_path = root.join("certrot.toml");
    let cfg_text = format!(
        "state_dir = {:?}\n[daemon]\nlisten = \"\"\n\n{snippet}",
        root.join("state").display().to_string()
    );
    std::fs::write(&cfg_path, cfg_text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let config = Config::load(&cfg_path).map_err(|e| e.to_string())?;
    let cred = config.credentials[0].clone();
    let imported = {
        let (config, key_file) = (config.clone(), key_file.clone());
        tokio::task::spawn_blocking(move || crate::cli::import(&config, &cred, &key_file, true))
            .await
            .map_err(|e| e.to_string())??
    };
    // Faults start after the import's own token check, so the workspace is always usable.
    for (f, n) in faults {
        println!(
            "  fault injected:        {f:?} ({})",
            if n == super::token::ALWAYS {
                "every request".to_string()
            } else {
                format!("{n} request(s)")
            }
        );
        server.inject(f, n);
    }
    println!("certrot sandbox: listening on 127.0.0.1 only");
    println!("  token endpoint (mTLS): {}", server.url);
    println!("  plain host:            {}", server.plain_base);
    println!("  discovery:             {}", server.discovery_url);
    println!("  token keys (JWKS):     {}/token_keys", server.plain_base);
    println!("  CA file to trust:      {}", ca_file.display());
    println!("  registered client:     {CLIENT_ID}");
    println!("  service key:           {}", key_file.display());
    println!("  {imported}");
    println!(
        "\nCredential snippet (already in {}):\n\n{snippet}",
        cfg_path.display()
    );
    println!(
        "Try: certrot --config {} check --validate",
        cfg_path.display()
    );
    println!("ready");
    wait_for_stop().await;
    println!("certrot sandbox: stopping");
    drop(server);
    Ok(())
}

async fn wait_for_stop() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
