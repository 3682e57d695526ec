//! `certrot sandbox`: runs the whole stand-in in the foreground — token endpoint (both hosts)
//! and Service Manager API — with a ready-made workspace: CA file, a Service Manager service
//! key, one imported, working credential with a service-manager issuer, optionally more
//! credentials to rotate, and a configuration. `certrot check --validate` and
//! `certrot rotate --now` work against it at once.

use crate::config::Config;
use certrot_sandbox::ca::KeyAlg;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use certrot_sandbox::stack::Stack;
use certrot_sandbox::token::Fault;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Client id the sandbox registers.
pub const CLIENT_ID: &str = "sb-sandbox!t1";

/// What `certrot sandbox` was asked for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Port of the mTLS token endpoint (0 = any).
    pub port: u16,
    /// Where the workspace goes (default: a temporary directory).
    pub dir: Option<PathBuf>,
    pub faults: Vec<(Fault, usize)>,
    /// Credentials in the configuration: `sandbox` (imported) plus `app-0002`… (to create).
    pub credentials: usize,
    pub sm: SmOptions,
    /// Also run the Kubernetes API stand-in; `app-0002`… then live in Secrets.
    pub kube: bool,
    /// Port the generated configuration's daemon serves `/metrics` on (0 = a free one).
    pub metrics_port: u16,
}

/// The `[defaults]` of the generated configuration: `critical_before` (24 h) and
/// `retire_after` (1 h) shrink with the binding lifetime, `seconds_per_day` seconds of it per
/// day, so a credential is not CRITICAL for its whole life when days are seconds.
pub fn scaled_defaults(seconds_per_day: u64) -> String {
    let scale = |secs: u64| (secs * seconds_per_day.clamp(1, 86_400) / 86_400).max(1);
    format!(
        "[defaults]\ncritical_before = \"{}s\"\nretire_after = \"{}s\"\n",
        scale(86_400),
        scale(3_600)
    )
}

/// A free port on 127.0.0.1 (`0`), or `port` itself.
fn choose_port(port: u16) -> Result<u16, String> {
    if port != 0 {
        return Ok(port);
    }
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port for /metrics: {e}"))
}

/// Runs until SIGINT or SIGTERM; returns the exit code.
pub fn run(settings: Settings) -> i32 {
    let (root, _guard) = match &settings.dir {
        Some(d) => (d.clone(), None),
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
    let rt = match crate::rt::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certrot sandbox: {e}");
            return 1;
        }
    };
    match rt.block_on(serve(settings, &root)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("certrot sandbox: {e}");
            1
        }
    }
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<(), String> {
    certrot_sandbox::write_private(path, data.as_ref())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The first credential: issued directly by the sandbox CA and registered, so that it works
/// before any rotation.
fn first_service_key(stack: &Stack) -> Result<serde_json::Value, String> {
    let now = OffsetDateTime::now_utc();
    let issued = stack
        .ca
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
    stack
        .tokens
        .register(CLIENT_ID, &g.leaf().fingerprint_sha256);
    Ok(serde_json::json!({
        "clientid": CLIENT_ID,
        "certificate": issued.chain_pem,
        "key": issued.key_pem.as_str(),
        "certurl": stack.tokens.cert_base,
        "url": stack.tokens.plain_base,
        "credential-type": "x509",
    }))
}

async fn serve(settings: Settings, root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let stack = Stack::start(settings.port, settings.sm.clone()).await?;
    let ca_file = root.join("ca.pem");
    write(&ca_file, &stack.ca_pem)?;
    let sm_key_file = root.join("sm-key.json");
    write(&sm_key_file, stack.sm_secret_key().to_string())?;
    let instance = stack.sm.add_instance(InstanceKind::Xsuaa, CLIENT_ID);
    let key = first_service_key(&stack)?;
    let key_file = root.join("sandbox-key.json");
    write(
        &key_file,
        serde_json::to_vec_pretty(&key).unwrap_or_default(),
    )?;
    // With --kube: the Kubernetes API stand-in and a kubeconfig for it.
    let kube = if settings.kube {
        let mut raw = [0u8; 16];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| "no random bytes".to_string())?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let server = certrot_sandbox::kube::KubeServer::start(&stack.ca, &token)
            .await
            .map_err(|e| e.to_string())?;
        let kubeconfig = root.join("kubeconfig");
        write(&kubeconfig, server.kubeconfig(&stack.ca_pem, "sandbox"))?;
        Some((server, kubeconfig))
    } else {
        None
    };
    let credential = |name: &str, instance: &str, secret: bool| {
        let target = match (&kube, secret) {
            (Some((_, kc)), true) => format!(
                "target = {{ type = \"kubernetes-secret\", name = {name:?}, kubeconfig = {:?} }}",
                kc.display().to_string()
            ),
            _ => format!(
                "target.path = {:?}",
                root.join("targets").join(name).display().to_string()
            ),
        };
        format!(
            "[[credential]]\nname = {name:?}\nkind = \"xsuaa\"\n{target}\n\
             check.ca_file = {:?}\ncheck.system_roots = false\nissuer.instance_id = {instance:?}\n",
            ca_file.display().to_string()
        )
    };
    let snippet = credential("sandbox", &instance, false);
    let metrics_port = choose_port(settings.metrics_port)?;
    let mut cfg_text = format!(
        "state_dir = {:?}\n[daemon]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n{}\n\
         [service_manager.sandbox]\nservice_key = {:?}\n\
         ca_file = {:?}\nsystem_roots = false\n\n{snippet}",
        root.join("state").display().to_string(),
        scaled_defaults(settings.sm.seconds_per_day),
        sm_key_file.display().to_string(),
        ca_file.display().to_string(),
    );
    // One service instance per further credential, as one application each (an instance
    // holds at most 1000 bindings).
    for i in 2..=settings.credentials.max(1) {
        let client = format!("sb-app-{i:04}!t1");
        let inst = stack.sm.add_instance(InstanceKind::Xsuaa, &client);
        cfg_text.push('\n');
        cfg_text.push_str(&credential(&format!("app-{i:04}"), &inst, true));
    }
    let cfg_path = root.join("certrot.toml");
    write(&cfg_path, cfg_text)?;
    let config = Config::load(&cfg_path).map_err(|e| e.to_string())?;
    let cred = config.credentials[0].clone();
    let backend = crate::store::Backend::open(&cred, &config.state_dir)
        .await
        .map_err(|e| e.to_string())?;
    let imported = crate::manual::import(&cred, &backend, &key_file, None, true).await?;
    println!("certrot sandbox: listening on 127.0.0.1 only");
    println!("  token endpoint (mTLS): {}", stack.tokens.url);
    println!("  plain host:            {}", stack.tokens.plain_base);
    println!("  discovery:             {}", stack.tokens.discovery_url);
    println!(
        "  token keys (JWKS):     {}/token_keys",
        stack.tokens.plain_base
    );
    println!("  service manager:       {}", stack.sm.url);
    if let Some((server, kubeconfig)) = &kube {
        println!(
            "  kubernetes API:        {} (kubeconfig {}; app-0002… live in Secrets of namespace sandbox)",
            server.url,
            kubeconfig.display()
        );
    }
    println!("  service instance:      {instance} (xsuaa, client {CLIENT_ID})");
    println!("  CA file to trust:      {}", ca_file.display());
    println!("  registered client:     {CLIENT_ID}");
    println!("  service key:           {}", key_file.display());
    println!("  SM service key:        {}", sm_key_file.display());
    println!("  {imported}");
    // Faults start after the import's own token check, so the workspace is always usable.
    for (f, n) in settings.faults {
        let times = if n == certrot_sandbox::token::ALWAYS {
            "every request".to_string()
        } else {
            format!("{n} request(s)")
        };
        println!("  fault injected:        {f:?} ({times})");
        stack.tokens.inject(f, n);
    }
    println!(
        "\nCredential snippet (already in {}):\n\n{snippet}",
        cfg_path.display()
    );
    println!(
        "Try: certrot --config {0} check --validate\n     certrot --config {0} rotate --now\n     \
         certrot --config {0} run    (then http://127.0.0.1:{metrics_port}/metrics)",
        cfg_path.display()
    );
    println!("ready");
    wait_for_stop().await;
    println!("certrot sandbox: stopping");
    drop(kube);
    drop(stack);
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
