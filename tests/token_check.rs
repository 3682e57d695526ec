//! The token check against the sandbox token endpoint (`sandbox/src/token/`: a real rustls
//! mTLS server on 127.0.0.1): success, generation switch without session reuse, unregistered
//! and revoked clients, no certificate, wrong server CA, discovery, every injected fault → its
//! label, and `import` / `check --validate` through the real binary.

mod common;
use certrot::check::{FailureKind, Limits, ServerTrust, request_token};
use certrot_sandbox::ca::LocalCa;
use certrot_sandbox::token::{Fault, TokenServer};
use common::*;
use time::Duration;

async fn server(ca: &LocalCa) -> TokenServer {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    TokenServer::start(ca, &[ca.root_pem()], 0).await.unwrap()
}

fn trust(pem: &str) -> ServerTrust<'_> {
    ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(pem.as_bytes()),
    }
}

#[tokio::test]
async fn success_unregistered_revoked_and_generation_switch() {
    let ca = LocalCa::new("token CA").unwrap();
    let a = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let b = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let (fa, fb) = (
        a.leaf().fingerprint_sha256.clone(),
        b.leaf().fingerprint_sha256.clone(),
    );
    let srv = server(&ca).await;
    srv.register("sb-app!t1", &fa);
    srv.register("sb-app!t1", &fb);
    let root = ca.root_pem();
    request_token(
        &a,
        &srv.url,
        "sb-app!t1",
        &[],
        trust(&root),
        Limits::default(),
    )
    .await
    .unwrap();
    request_token(
        &b,
        &srv.url,
        "sb-app!t1",
        &[],
        trust(&root),
        Limits::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        srv.seen(),
        vec![fa.clone(), fb.clone()],
        "the second check must present B"
    );

    let e = request_token(
        &a,
        &srv.url,
        "sb-other",
        &[],
        trust(&root),
        Limits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, FailureKind::Unauthorized, "{e}");
    assert!(
        e.to_string()
            .contains("HTTP 401: invalid_client: Bad credentials"),
        "{e}"
    );

    srv.revoke(&fa);
    let e = request_token(
        &a,
        &srv.url,
        "sb-app!t1",
        &[],
        trust(&root),
        Limits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, FailureKind::Unauthorized, "{e}");
    request_token(
        &b,
        &srv.url,
        "sb-app!t1",
        &[],
        trust(&root),
        Limits::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn certificate_from_an_untrusted_ca_is_unauthorized() {
    let ca = LocalCa::new("token CA").unwrap();
    let rogue = LocalCa::new("rogue").unwrap();
    let g = generation(&issue(&rogue, "app", Duration::hours(1), Duration::days(7)));
    let srv = server(&ca).await;
    srv.register("sb-app", &g.leaf().fingerprint_sha256);
    let root = ca.root_pem();
    let e = request_token(&g, &srv.url, "sb-app", &[], trust(&root), Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::TlsRejected, "{e}");
    assert!(srv.seen().is_empty());
}

#[tokio::test]
async fn wrong_server_ca_is_a_tls_rejection() {
    let ca = LocalCa::new("token CA").unwrap();
    let other = LocalCa::new("someone else").unwrap();
    let a = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let srv = server(&ca).await;
    let wrong = other.root_pem();
    let e = request_token(&a, &srv.url, "c", &[], trust(&wrong), Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::TlsRejected, "{e}");
    assert!(srv.seen().is_empty());
}

#[tokio::test]
async fn every_fault_has_its_label() {
    let ca = LocalCa::new("fault CA").unwrap();
    let g = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let srv = server(&ca).await;
    srv.register("sb-app", &g.leaf().fingerprint_sha256);
    let root = ca.root_pem();
    // Only the latency case meets the time limit; the others get the default one, so a
    // loaded machine cannot turn them into timeouts.
    let quick = Limits {
        timeout: std::time::Duration::from_secs(2),
        ..Limits::default()
    };
    let cases = [
        (Fault::Status(503), "server-error", "HTTP 503"),
        (Fault::Status(500), "server-error", "HTTP 500"),
        (
            Fault::RateLimited {
                retry_after: "7".into(),
            },
            "rate-limited",
            "Retry-After: 7",
        ),
        (Fault::Malformed, "bad-response", "not JSON"),
        (Fault::Oversize, "bad-response", "larger than 1024 KiB"),
        (
            Fault::Latency(std::time::Duration::from_secs(30)),
            "timeout",
            "time limit",
        ),
        (Fault::Reset, "", ""),
    ];
    for (fault, label, text) in cases {
        srv.inject(fault.clone(), 1);
        let limits = match fault {
            Fault::Latency(_) => quick,
            _ => Limits::default(),
        };
        let e = request_token(&g, &srv.url, "sb-app", &[], trust(&root), limits)
            .await
            .unwrap_err();
        if fault == Fault::Reset {
            // A connection closed before the handshake: connect or tls-rejected, never success.
            assert!(
                matches!(e.kind, FailureKind::Connect | FailureKind::TlsRejected),
                "{e}"
            );
        } else {
            assert_eq!(e.kind.label(), label, "{fault:?}: {e}");
            assert!(e.to_string().contains(text), "{fault:?}: {e}");
        }
    }
    // After the faults, the same credential works again.
    request_token(&g, &srv.url, "sb-app", &[], trust(&root), Limits::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn token_url_from_discovery_alias() {
    let ca = LocalCa::new("discovery CA").unwrap();
    let g = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let srv = server(&ca).await;
    srv.register("sb-app", &g.leaf().fingerprint_sha256);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ca.pem"), ca.root_pem()).unwrap();
    let toml = format!(
        "[[credential]]\nname = \"d\"\ntarget.path = \"/srv/d\"\ncheck.discovery_url = {:?}\ncheck.ca_file = {:?}\ncheck.system_roots = false\ncheck.client_id = \"sb-app\"\n",
        srv.discovery_url,
        tmp.path().join("ca.pem").display().to_string()
    );
    let cfg = certrot::config::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
    certrot::check::validate(&cfg.credentials[0], &g)
        .await
        .unwrap();
    assert_eq!(
        srv.seen().len(),
        1,
        "one token request, through the mTLS alias"
    );
    let toml = toml.replace(
        &srv.discovery_url,
        "https://127.0.0.1:1/.well-known/openid-configuration",
    );
    let cfg = certrot::config::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
    let e = certrot::check::validate(&cfg.credentials[0], &g)
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Discovery, "{e}");
    assert!(
        e.to_string()
            .contains("https://127.0.0.1:1/.well-known/openid-configuration"),
        "{e}"
    );
}

/// `certrot import` checks before writing; `certrot check --validate` turns a rejected
/// credential CRITICAL. Runs the real binary against the sandbox endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_check_validate_through_the_binary() {
    let ca = LocalCa::new("cli token CA").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let good = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let bad = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let good_fp = generation(&good).leaf().fingerprint_sha256.clone();
    let srv = server(&ca).await;
    srv.register("sb-app!t1", &good_fp);
    std::fs::write(root.join("ca.pem"), ca.root_pem()).unwrap();
    let extra = format!(
        "[[credential]]\nname = \"orders\"\ntarget.path = {:?}\ncheck.token_url = {:?}\ncheck.ca_file = {:?}\ncheck.system_roots = false\n",
        root.join("targets/orders").display().to_string(),
        srv.url,
        root.join("ca.pem").display().to_string()
    );
    let config = write_config(&root, &[], &extra).display().to_string();
    let write_key = |name: &str, i: &certrot_sandbox::ca::Issued| {
        let p = root.join(name);
        std::fs::write(&p, service_key(i, "sb-app!t1").to_string()).unwrap();
        p.display().to_string()
    };
    let (kgood, kbad) = (write_key("good.json", &good), write_key("bad.json", &bad));
    let run_bg = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = run(&a);
            let (out, err) = text(&o);
            (o.status.code().unwrap(), out, err)
        })
    };
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, _, err) = run_bg(args(&[
        "--config",
        &config,
        "import",
        "orders",
        "--service-key",
        &kbad,
    ]))
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the token check failed, nothing was written: unauthorized"),
        "{err}"
    );
    assert!(!root.join("targets/orders/..data").exists());

    let (code, out, err) = run_bg(args(&[
        "--config",
        &config,
        "import",
        "orders",
        "--service-key",
        &kgood,
    ]))
    .await
    .unwrap();
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, _) = run_bg(args(&["--config", &config, "check", "--validate"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("token check passed"), "{out}");

    srv.revoke(&good_fp);
    let (code, out, _) = run_bg(args(&["--config", &config, "check", "--validate"]))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("CRITICAL orders: token check failed: unauthorized"),
        "{out}"
    );
}

/// `system_roots = true` trusts the store the platform names — here `SSL_CERT_FILE` — read
/// once per run: the token endpoint's CA there passes, another CA there is a TLS rejection,
/// and an empty store (with no `ca_file`) is a clear error.
#[tokio::test]
async fn system_roots_are_the_store_ssl_cert_file_names() {
    let ca = LocalCa::new("system token CA").unwrap();
    let other = LocalCa::new("not the endpoint's CA").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let good = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let srv = server(&ca).await;
    srv.register("sb-app!t1", &generation(&good).leaf().fingerprint_sha256);
    let store = |name: &str, pem: &str| {
        let p = root.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (right, wrong, empty) = (
        store("right.pem", &ca.root_pem()),
        store("wrong.pem", &other.root_pem()),
        store("empty.pem", ""),
    );
    let extra = format!(
        "[[credential]]\nname = \"orders\"\ntarget.path = {:?}\ncheck.token_url = {:?}\n\
         check.system_roots = true\n",
        root.join("targets/orders").display().to_string(),
        srv.url,
    );
    let config = write_config(&root, &[], &extra).display().to_string();
    let key = root.join("key.json");
    std::fs::write(&key, service_key(&good, "sb-app!t1").to_string()).unwrap();
    let key = key.display().to_string();
    let run_with = |store: &std::path::Path, args: &[&str]| {
        let mut all = vec!["--config".to_string(), config.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        let store = store.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let o = bin()
                .args(&all)
                .env("SSL_CERT_FILE", &store)
                .env("SSL_CERT_DIR", store.with_extension("d"))
                .env_remove("CERTROT_CONFIG")
                .output()
                .unwrap();
            let (out, err) = text(&o);
            (o.status.code().unwrap(), out, err)
        })
    };
    let (code, out, err) = run_with(&right, &["import", "orders", "--service-key", &key])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, _) = run_with(&right, &["check", "--validate"]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("token check passed"), "{out}");
    let (code, out, _) = run_with(&wrong, &["check", "--validate"]).await.unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("token check failed: tls-rejected"), "{out}");
    let (code, out, _) = run_with(&empty, &["check", "--validate"]).await.unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no CA certificates were loaded from the system"),
        "{out}"
    );
    assert_eq!(
        srv.seen().len(),
        2,
        "the import's check and the first --validate only"
    );
}

type Lines = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// Starts `certrot sandbox --dir DIR ARGS…` and reads its output up to `ready`.
fn spawn_sandbox(
    dir: &std::path::Path,
    args: &[&str],
) -> (std::process::Child, Vec<String>, Lines) {
    use std::io::{BufRead, BufReader};
    let mut child = bin()
        .args(["sandbox", "--dir", dir.to_str().unwrap()])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line == "ready";
        seen.push(line);
        if done {
            break;
        }
    }
    assert_eq!(seen.last().map(String::as_str), Some("ready"), "{seen:?}");
    (child, seen, lines)
}

fn stop(mut child: std::process::Child) -> Option<i32> {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    child.wait().unwrap().code()
}

/// `certrot sandbox --kube`: the further credentials live in Secrets of the Kubernetes API
/// stand-in, reached through the kubeconfig the sandbox writes; they rotate and check.
#[test]
fn sandbox_command_with_kube_keeps_credentials_in_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sbk");
    let (child, seen, _lines) =
        spawn_sandbox(&dir, &["--kube", "--credentials", "2", "--rsa-pool", "1"]);
    assert!(
        seen.iter()
            .any(|l| l.contains("kubernetes API:        https://127.0.0.1:")),
        "{seen:?}"
    );
    assert!(dir.join("kubeconfig").exists());
    let cfg = dir.join("certrot.toml");
    let o = run(&["--config", cfg.to_str().unwrap(), "rotate", "--if-due"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(out.contains("app-0002: rotated (missing)"), "{out}");
    let o = run(&["--config", cfg.to_str().unwrap(), "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[1]["credential"], "app-0002");
    assert_eq!(v[1]["client_id"], "sb-app-0002!t1");
    let o = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "check",
        "--validate",
        "app-0002",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(
        !dir.join("targets").join("app-0002").exists(),
        "a Secret, not a directory"
    );
    assert_eq!(stop(child), Some(0));
}

/// `certrot sandbox --fault`: the injected faults hit `check --validate` in order, then the
/// credential works again; a bad fault spec is refused before anything starts.
#[test]
fn sandbox_command_injects_faults_from_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sbx");
    let (child, seen, _lines) = spawn_sandbox(
        &dir,
        &["--fault", "status:503*1", "--fault", "handshake-abort*1"],
    );
    assert!(
        seen.iter().any(|l| l.contains("fault injected")),
        "{seen:?}"
    );
    let cfg = dir.join("certrot.toml");
    let check = || {
        let o = run(&["--config", cfg.to_str().unwrap(), "check", "--validate"]);
        let (out, _) = text(&o);
        (o.status.code(), out)
    };
    let (code, out) = check();
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("server-error") && out.contains("HTTP 503"),
        "{out}"
    );
    let (code, out) = check();
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("tls-rejected"), "{out}");
    let (code, out) = check();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(stop(child), Some(0));

    let o = run(&["sandbox", "--fault", "teapot"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown kind \"teapot\""), "{err}");
}

/// `certrot sandbox` out of the box: `check --validate` against it succeeds, and SIGTERM
/// stops it cleanly.
#[test]
fn sandbox_command_serves_a_working_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sbx");
    let (child, seen, lines) = spawn_sandbox(&dir, &[]);
    assert!(
        seen.iter()
            .any(|l| l.contains("token endpoint (mTLS): https://127.0.0.1:")),
        "{seen:?}"
    );
    let cfg = dir.join("certrot.toml");
    // Every file the sandbox writes (keys, the Service Manager secret) is the owner's only.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_file() {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                m.permissions().mode() & 0o077,
                0,
                "{} is readable by others",
                e.path().display()
            );
        }
    }
    let o = run(&["--config", cfg.to_str().unwrap(), "check", "--validate"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(
        out.contains("OK sandbox:") && out.contains("token check passed"),
        "{out}"
    );
    // The workspace rotates out of the box through the Service Manager stand-in.
    let o = run(&["--config", cfg.to_str().unwrap(), "rotate", "--now"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(out.starts_with("sandbox: rotated (forced)"), "{out}");
    let o = run(&["--config", cfg.to_str().unwrap(), "check", "--validate"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // At TRACE, for certrot and every library, the token never reaches the output
    // (the sandbox's JWTs all start with the encoded header `eyJ`).
    let o = bin()
        .args([
            "-vvv",
            "--config",
            cfg.to_str().unwrap(),
            "check",
            "--validate",
        ])
        .env("CERTROT_LOG", "trace")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(
        err.contains("token check passed"),
        "TRACE output missing: {err}"
    );
    assert!(
        !out.contains("eyJ") && !err.contains("eyJ"),
        "token in output: {err}"
    );
    assert!(!err.contains("access_token"), "{err}");
    assert_eq!(
        stop(child),
        Some(0),
        "sandbox did not stop cleanly on SIGTERM"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopping")), "{rest:?}");
}

fn cfg_for(kind: &str, ca_file: &std::path::Path) -> certrot::config::Credential {
    let toml = format!(
        "[[credential]]\nname = \"k\"\nkind = {kind:?}\ntarget.path = \"/srv/k\"\ncheck.ca_file = {:?}\ncheck.system_roots = false\n",
        ca_file.display().to_string()
    );
    certrot::config::Config::parse(&toml, std::path::Path::new("t.toml"))
        .unwrap()
        .credentials
        .remove(0)
        .as_ref()
        .clone()
}

/// The token URL from the kind rules, over the wire: xsuaa → `certurl` + `/oauth/token`,
/// identity → `url` + `/oauth2/token`; and the alias-less plain host refuses a certificate.
#[tokio::test]
async fn token_url_from_kind_rules_and_plain_host_refuses_certificates() {
    let ca = LocalCa::new("kind CA").unwrap();
    let issued = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let g = generation(&issued);
    let srv = server(&ca).await;
    srv.register("sb-app!t1", &g.leaf().fingerprint_sha256);
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, ca.root_pem()).unwrap();
    let fields = |v: serde_json::Value| v.as_object().unwrap().clone();

    let x = generation(&issued).with_credentials(fields(serde_json::json!({
        "clientid": "sb-app!t1", "certurl": srv.cert_base, "url": srv.plain_base,
    })));
    certrot::check::validate(&cfg_for("xsuaa", &ca_file), &x)
        .await
        .unwrap();
    let i = generation(&issued).with_credentials(fields(serde_json::json!({
        "clientid": "sb-app!t1", "url": srv.cert_base,
    })));
    certrot::check::validate(&cfg_for("identity", &ca_file), &i)
        .await
        .unwrap();
    assert_eq!(srv.seen().len(), 2);

    // The plain host (the discovery document's `token_endpoint`, not its mTLS alias) takes
    // secrets only: a certificate is not a credential there.
    let root = ca.root_pem();
    let plain = format!("{}/oauth/token", srv.plain_base);
    let e = request_token(
        &g,
        &plain,
        "sb-app!t1",
        &[],
        trust(&root),
        Limits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, FailureKind::Unauthorized, "{e}");
    assert!(e.to_string().contains("Unsupported credential"), "{e}");
    assert_eq!(srv.seen().len(), 2, "the plain host saw no certificate");
}

/// A request without a client certificate gets HTTP 401 (not a TLS failure), as XSUAA.
#[tokio::test]
async fn no_certificate_is_unauthorized() {
    let ca = LocalCa::new("nocert CA").unwrap();
    let srv = server(&ca).await;
    let root = reqwest::Certificate::from_pem(ca.root_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let resp = client
        .post(&srv.url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sb-app"),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    let f = certrot::check::classify_status(status, &body, &srv.url);
    assert_eq!(status, 401);
    assert_eq!(f.kind, FailureKind::Unauthorized, "{f}");
    assert!(f.to_string().contains("Unsupported credential"), "{f}");
}

/// An expired certificate is rejected in the handshake, even when it is registered.
#[tokio::test]
async fn expired_certificate_is_rejected() {
    let ca = LocalCa::new("expiry CA").unwrap();
    let g = generation(&issue(&ca, "app", Duration::days(8), Duration::days(7)));
    let srv = server(&ca).await;
    srv.register("sb-app", &g.leaf().fingerprint_sha256);
    let root = ca.root_pem();
    let e = request_token(&g, &srv.url, "sb-app", &[], trust(&root), Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::TlsRejected, "{e}");
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
    assert!(srv.seen().is_empty());
}

/// Self-managed with pinning off: a client registered by subject and issuer DN accepts each
/// new certificate with that subject and issuer without re-registration; another subject,
/// another issuer, or a revoked certificate is refused.
#[tokio::test]
async fn client_registered_by_subject_and_issuer() {
    let ca = LocalCa::new("dn CA").unwrap();
    let other_ca = LocalCa::new("dn CA 2").unwrap();
    let srv = TokenServer::start(&ca, &[ca.root_pem(), other_ca.root_pem()], 0)
        .await
        .unwrap();
    let first = generation(&issue(&ca, "orders", Duration::hours(1), Duration::days(7)));
    srv.register_dn("sb-orders", &first.leaf().subject, &first.leaf().issuer);
    let root = ca.root_pem();
    let ask = async |g: &certrot::generation::Generation| {
        request_token(
            g,
            &srv.url,
            "sb-orders",
            &[],
            trust(&root),
            Limits::default(),
        )
        .await
    };
    let gens: Vec<_> = (0..3)
        .map(|_| generation(&issue(&ca, "orders", Duration::hours(1), Duration::days(7))))
        .collect();
    for g in &gens {
        ask(g).await.unwrap();
    }
    let fps: Vec<String> = gens
        .iter()
        .map(|g| g.leaf().fingerprint_sha256.clone())
        .collect();
    assert_eq!(srv.seen(), fps, "three distinct certificates, all accepted");
    let other_cn = generation(&issue(
        &ca,
        "billing",
        Duration::hours(1),
        Duration::days(7),
    ));
    assert_eq!(
        ask(&other_cn).await.unwrap_err().kind,
        FailureKind::Unauthorized
    );
    let other_issuer = generation(&issue(
        &other_ca,
        "orders",
        Duration::hours(1),
        Duration::days(7),
    ));
    assert_eq!(
        ask(&other_issuer).await.unwrap_err().kind,
        FailureKind::Unauthorized
    );
    // A revoked certificate stays refused although its DN still matches; the others work.
    srv.revoke(&fps[2]);
    let e = ask(&gens[2]).await.unwrap_err();
    assert_eq!(e.kind, FailureKind::Unauthorized, "{e}");
    ask(&gens[0]).await.unwrap();
    ask(&first).await.unwrap();
}

/// A handshake aborted by the server with a fatal alert is `tls-rejected`.
#[tokio::test]
async fn handshake_abort_is_a_tls_rejection() {
    let ca = LocalCa::new("abort CA").unwrap();
    let g = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let srv = server(&ca).await;
    srv.register("sb-app", &g.leaf().fingerprint_sha256);
    let root = ca.root_pem();
    srv.inject(Fault::HandshakeAbort, 2);
    for _ in 0..2 {
        let e = request_token(&g, &srv.url, "sb-app", &[], trust(&root), Limits::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::TlsRejected, "{e}");
        assert!(e.to_string().contains("HandshakeFailure"), "{e}");
    }
    request_token(&g, &srv.url, "sb-app", &[], trust(&root), Limits::default())
        .await
        .unwrap();
}

/// The sandbox's tokens are ES256 JWTs verifiable with its `/token_keys`, carrying `iss`,
/// `iat`, `exp`, the client claims and `cnf.x5t#S256` of the presented certificate.
#[tokio::test]
async fn tokens_are_es256_jwts_bound_to_the_certificate() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let ca = LocalCa::new("jwt CA").unwrap();
    let i = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let g = generation(&i);
    let srv = server(&ca).await;
    srv.register("sb-app", &g.leaf().fingerprint_sha256);
    let root = reqwest::Certificate::from_pem(ca.root_pem().as_bytes()).unwrap();
    let id =
        reqwest::Identity::from_pem(format!("{}{}", i.chain_pem, *i.key_pem).as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([root])
        .identity(id)
        .build()
        .unwrap();
    let tok: serde_json::Value = serde_json::from_slice(
        &client
            .post(&srv.url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "sb-app"),
            ])
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let jwt = tok["access_token"].as_str().unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["cid"], "sb-app");
    assert_eq!(claims["iss"], format!("{}/oauth/token", srv.plain_base));
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, g.leaf_der());
    assert_eq!(claims["cnf"]["x5t#S256"], b64.encode(digest.as_ref()));

    let jwks: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("{}/token_keys", srv.plain_base))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let k = &jwks["keys"][0];
    let mut point = vec![4u8];
    point.extend(b64.decode(k["x"].as_str().unwrap()).unwrap());
    point.extend(b64.decode(k["y"].as_str().unwrap()).unwrap());
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        point,
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    key.verify(signed.as_bytes(), &b64.decode(parts[2]).unwrap())
        .expect("signature verifies with /token_keys");
    let mut tampered = signed.into_bytes();
    tampered[5] ^= 1;
    assert!(
        key.verify(&tampered, &b64.decode(parts[2]).unwrap())
            .is_err()
    );
}

/// `certrot sandbox --seconds-per-day`: the generated configuration's `critical_before` and
/// `retire_after` shrink with the lifetime, so a fresh credential is OK rather than CRITICAL
/// for its whole life; its daemon serves /metrics on a port the sandbox names.
#[test]
fn a_fast_sandbox_scales_the_policy_and_names_its_metrics_url() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fast");
    let (child, seen, _lines) = spawn_sandbox(
        &dir,
        &[
            "--seconds-per-day",
            "600",
            "--credentials",
            "2",
            "--rsa-pool",
            "1",
        ],
    );
    let cfg = dir.join("certrot.toml");
    let text_of = std::fs::read_to_string(&cfg).unwrap();
    assert!(text_of.contains("critical_before = \"600s\""), "{text_of}");
    assert!(text_of.contains("retire_after = \"25s\""), "{text_of}");
    let listen = text_of
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no loopback listen address: {text_of}"));
    let port: u16 = listen.parse().unwrap();
    assert_ne!(port, 0);
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{port}/metrics"))),
        "{seen:?}"
    );
    let o = run(&["--config", cfg.to_str().unwrap(), "config", "check"]);
    let (out, _) = text(&o);
    assert!(!out.contains("CRITICAL"), "{out}");
    let o = run(&["--config", cfg.to_str().unwrap(), "rotate", "--if-due"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // A 70-minute certificate (7 days of 600 s), CRITICAL only in its last 10 minutes.
    let o = run(&["--config", cfg.to_str().unwrap(), "check", "app-0002"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert_eq!(stop(child), Some(0));
}

/// `certrot sandbox` shows every path: an X.509 Service Manager key that certrot rotates
/// itself (`sm-access`), a self-managed credential signed by a CA of the workspace, a
/// Service Manager fault, chosen ports, and schedules scaled with `--seconds-per-day`.
#[test]
fn sandbox_shows_self_managed_x509_service_manager_access_faults_and_ports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sbx");
    let (sm_port, plain_port) = (free_port(), free_port());
    let (child, seen, _lines) = spawn_sandbox(
        &dir,
        &[
            "--self-managed",
            "--sm-x509",
            "--seconds-per-day",
            "600",
            "--sm-fault",
            "create:status:503*1",
            "--sm-port",
            &sm_port.to_string(),
            "--plain-port",
            &plain_port.to_string(),
        ],
    );
    let text = seen.join("\n");
    for want in [
        format!("service manager:       https://127.0.0.1:{sm_port}"),
        format!("plain host:            https://127.0.0.1:{plain_port}"),
        "SM X.509 key:".to_string(),
        "own CA (self-managed):".to_string(),
        "SM fault injected:     Status(503) on Create (1 call(s))".to_string(),
    ] {
        assert!(text.contains(&want), "{want}\n{text}");
    }
    let config = dir.join("certrot.toml");
    let cfg = std::fs::read_to_string(&config).unwrap();
    // 600-second days: the 5-minute inspection every 2 s, the hourly probe every 25 s.
    assert!(
        cfg.contains("check_schedule = \"*/2 * * * * *\"")
            && cfg.contains("probe_schedule = \"*/25 * * * * *\""),
        "{cfg}"
    );
    assert!(cfg.contains("credential = \"sm-access\""), "{cfg}");
    let config = config.to_str().unwrap();
    // The 503 is retried; sm-access rotates first, then every credential that needs it.
    let o = run(&["--config", config, "rotate", "--now"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    for name in ["sm-access", "self-managed", "sandbox"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name}: rotated"))),
            "{name}: {out}"
        );
    }
    let own_ca = std::fs::read_to_string(dir.join("own-ca.pem")).unwrap();
    let served = std::fs::read_to_string(dir.join("targets/self-managed/cert.pem")).unwrap();
    let g = certrot::generation::Generation::from_pem(
        served.as_bytes(),
        "c",
        &std::fs::read(dir.join("targets/self-managed/key.pem")).unwrap(),
        "k",
    )
    .unwrap();
    assert!(
        g.leaf().issuer.contains("sandbox own CA"),
        "{}",
        g.leaf().issuer
    );
    assert!(own_ca.contains("BEGIN CERTIFICATE"));
    let o = run(&["--config", config, "check", "--validate"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    stop(child);
}
