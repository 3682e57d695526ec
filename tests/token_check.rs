//! The token check against the sandbox token endpoint (`src/sandbox/token.rs`: a real rustls
//! mTLS server on 127.0.0.1): success, generation switch without session reuse, unregistered
//! and revoked clients, no certificate, wrong server CA, discovery, every injected fault → its
//! label, and `import` / `check --validate` through the real binary.

mod common;
use certrot::check::{FailureKind, Limits, ServerTrust, request_token};
use certrot::sandbox::ca::LocalCa;
use certrot::sandbox::token::{Fault, TokenServer};
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
    let quick = Limits {
        timeout: std::time::Duration::from_millis(500),
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
            Fault::Latency(std::time::Duration::from_secs(3)),
            "timeout",
            "time limit",
        ),
        (Fault::Reset, "", ""),
    ];
    for (fault, label, text) in cases {
        srv.inject(fault.clone(), 1);
        let e = request_token(&g, &srv.url, "sb-app", &[], trust(&root), quick)
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
    let write_key = |name: &str, i: &certrot::sandbox::ca::Issued| {
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

/// `certrot sandbox` out of the box: `check --validate` against it succeeds, and SIGTERM
/// stops it cleanly.
#[test]
fn sandbox_command_serves_a_working_credential() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sbx");
    let mut child = bin()
        .args(["sandbox", "--dir", dir.to_str().unwrap()])
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
    assert!(
        seen.iter()
            .any(|l| l.contains("token endpoint (mTLS): https://127.0.0.1:")),
        "{seen:?}"
    );
    let cfg = dir.join("certrot.toml");
    let o = run(&["--config", cfg.to_str().unwrap(), "check", "--validate"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(
        out.contains("OK sandbox:") && out.contains("token check passed"),
        "{out}"
    );
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
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "sandbox did not stop cleanly on SIGTERM"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopping")), "{rest:?}");
}
