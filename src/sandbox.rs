//! `certrot sandbox`: runs the whole stand-in in the foreground — token endpoint (every host)
//! and Service Manager API — with a ready-made workspace: CA file, a Service Manager service
//! key (secret, or X.509 as a credential certrot rotates itself), one imported, working
//! credential with a service-manager issuer, optionally more credentials to rotate (in
//! directories or Secrets, self-managed with a CA of the workspace), and a configuration
//! whose policy and schedules shrink with `--seconds-per-day`. `certrot check --validate`
//! and `certrot rotate --now` work against it at once.

use crate::config::Config;
use certrot_sandbox::ca::KeyAlg;
use certrot_sandbox::sm::{InstanceKind, SmCall, SmFault, SmOptions};
use certrot_sandbox::stack::Stack;
use certrot_sandbox::token::Fault;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Client id the sandbox registers.
pub const CLIENT_ID: &str = "sb-sandbox!t1";

/// What `certrot sandbox` was asked for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Ports of the token hosts (0 = any).
    pub ports: certrot_sandbox::token::Ports,
    /// Port of the Kubernetes API stand-in (0 = any).
    pub kube_port: u16,
    pub sm_faults: Vec<(SmCall, SmFault, usize)>,
    /// CA certificates (PEM files) whose client certificates the stand-in accepts.
    pub trust_ca: Vec<PathBuf>,
    /// A CA of the workspace's own and a credential it signs (self-managed).
    pub self_managed: bool,
    /// Service Manager reached with an X.509 key that certrot rotates (`sm-access`).
    pub sm_x509: bool,
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

/// `[daemon]` schedules for days of `seconds_per_day` seconds: the 5-minute re-inspection
/// and the hourly probe shrink alike (never below once a second); `None` for real days.
pub fn scaled_schedules(seconds_per_day: u64) -> Option<(String, String)> {
    if seconds_per_day >= 86_400 {
        return None;
    }
    let every = |secs: u64| {
        let s = (secs * seconds_per_day.max(1) / 86_400).max(1);
        if s >= 60 {
            format!("0 */{} * * * *", s.div_ceil(60).min(59))
        } else {
            format!("*/{s} * * * * *")
        }
    };
    Some((every(300), every(3_600)))
}

/// A CA "of your own" for `--self-managed`: certificate and key PEM.
fn own_ca() -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut p = rcgen::CertificateParams::new(vec![]).map_err(|e| e.to_string())?;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "sandbox own CA");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "certrot sandbox");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(365);
    let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
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
    let mut trusted = Vec::new();
    for f in &settings.trust_ca {
        let pem = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!("{}: no PEM certificate", f.display()));
        }
        trusted.push(pem);
    }
    let own = if settings.self_managed {
        let (cert, key) = own_ca()?;
        let (cert_file, key_file) = (root.join("own-ca.pem"), root.join("own-ca.key"));
        write(&cert_file, &cert)?;
        write(&key_file, &key)?;
        trusted.push(cert);
        Some((cert_file, key_file))
    } else {
        None
    };
    let stack = Stack::start_on(settings.ports, settings.sm.clone(), &trusted).await?;
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
        let server =
            certrot_sandbox::kube::KubeServer::start_on(&stack.ca, &token, settings.kube_port)
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
    let schedules = scaled_schedules(settings.sm.seconds_per_day)
        .map(|(check, probe)| {
            format!("check_schedule = \"{check}\"\nprobe_schedule = \"{probe}\"\n")
        })
        .unwrap_or_default();
    // With --sm-x509, Service Manager is reached with the credential `sm-access`, imported
    // from an X.509 key and rotated by certrot before every credential that depends on it.
    let sm_x509 = if settings.sm_x509 {
        let inst = stack.sm.add_instance(
            InstanceKind::ServiceManager,
            certrot_sandbox::stack::SM_X509_CLIENT,
        );
        let key = stack.sm_x509_key(Duration::seconds(
            7 * settings.sm.seconds_per_day.min(86_400) as i64,
        ))?;
        let file = root.join("sm-x509-key.json");
        write(&file, key.to_string())?;
        Some((inst, file))
    } else {
        None
    };
    let access = match &sm_x509 {
        Some(_) => "credential = \"sm-access\"".to_string(),
        None => format!("service_key = {:?}", sm_key_file.display().to_string()),
    };
    let mut cfg_text = format!(
        "state_dir = {:?}\n[daemon]\nlisten = \"127.0.0.1:{metrics_port}\"\n{schedules}\n{}\n\
         [service_manager.sandbox]\n{access}\n\
         ca_file = {:?}\nsystem_roots = false\n\n{snippet}",
        root.join("state").display().to_string(),
        scaled_defaults(settings.sm.seconds_per_day),
        ca_file.display().to_string(),
    );
    if let Some((inst, _)) = &sm_x509 {
        cfg_text.push('\n');
        cfg_text.push_str(&credential("sm-access", inst, false));
    }
    if let Some((cert, key)) = &own {
        let inst = stack
            .sm
            .add_instance(InstanceKind::Xsuaa, "sb-self-managed!t1");
        cfg_text.push('\n');
        cfg_text.push_str(&credential("self-managed", &inst, false));
        cfg_text.push_str(&format!(
            "issuer.certificate = \"self-managed\"\nissuer.key_type = \"ecdsa-p256\"\n\
             issuer.signer = {{ type = \"local-ca\", ca_cert = {:?}, ca_key = {:?} }}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
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
    let mut imported_access = None;
    if let Some((_, file)) = &sm_x509
        && let Some(access) = config.credentials.iter().find(|c| c.name == "sm-access")
    {
        let backend = crate::store::Backend::open(access, &config.state_dir)
            .await
            .map_err(|e| e.to_string())?;
        imported_access = Some(crate::manual::import(access, &backend, file, None, true).await?);
    }
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
    if let Some((_, file)) = &sm_x509 {
        println!(
            "  SM X.509 key:          {} (credential sm-access: certrot rotates its own Service Manager access first)",
            file.display()
        );
    }
    if let Some((cert, _)) = &own {
        println!(
            "  own CA (self-managed): {} (credential self-managed: keys made by certrot, signed by this CA)",
            cert.display()
        );
    }
    for f in &settings.trust_ca {
        println!("  trusted CA:            {}", f.display());
    }
    println!("  {imported}");
    if let Some(line) = imported_access {
        println!("  {line}");
    }
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
    for (call, f, n) in settings.sm_faults {
        let times = if n == certrot_sandbox::token::ALWAYS {
            "every call".to_string()
        } else {
            format!("{n} call(s)")
        };
        println!("  SM fault injected:     {f:?} on {call:?} ({times})");
        stack.sm.inject(call, f, n);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_shrink_with_the_day_and_stay_valid_cron() {
        assert_eq!(scaled_schedules(86_400), None);
        let pairs = [
            (600, "*/2 * * * * *", "*/25 * * * * *"),
            (12, "*/1 * * * * *", "*/1 * * * * *"),
            (43_200, "0 */3 * * * *", "0 */30 * * * *"),
        ];
        for (day, check, probe) in pairs {
            let (c, p) = scaled_schedules(day).unwrap();
            assert_eq!((c.as_str(), p.as_str()), (check, probe), "{day}");
            for e in [&c, &p] {
                assert!(crate::config::CronSpec::parse(e).is_ok(), "{e}");
            }
        }
    }
}
