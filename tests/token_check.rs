//! The token check against a real rustls mTLS server on 127.0.0.1 (hyper over tokio-rustls,
//! client certificates verified against a local CA): success, unregistered client, wrong
//! server CA, no-answer timeout, and that a second check in the same process presents the
//! new generation's certificate (no pooled connection, no resumed session).

mod common;
use certrot::check::{FailureKind, Limits, ServerTrust, request_token};
use certrot::sandbox::ca::LocalCa;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, Mutex};
use time::Duration;

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    registered: Arc<Mutex<Vec<(String, String)>>>,
}

/// An mTLS token endpoint trusting `client_ca`; `registered` = (client id, leaf fingerprint).
async fn start(
    ca: &LocalCa,
    client_ca: &LocalCa,
    registered: Vec<(String, String)>,
    silent: bool,
) -> Server {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.chain_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca.root_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/oauth/token",
        listener.local_addr().unwrap().port()
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let discovery = serde_json::json!({
        "issuer": url.replace("/oauth/token", ""),
        "token_endpoint": url.replace("/oauth/token", "/plain/oauth/token"),
        "mtls_endpoint_aliases": {"token_endpoint": url},
    })
    .to_string();
    let registered = Arc::new(Mutex::new(registered));
    let registered_handle = registered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if silent {
                tokio::spawn(async move {
                    let _keep = tcp;
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                });
                continue;
            }
            let (acceptor, seen, registered, discovery) = (
                acceptor.clone(),
                seen2.clone(),
                registered.clone(),
                discovery.clone(),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let fp = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| certrot::x509::fingerprint(c));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (fp, seen, registered, discovery) = (
                        fp.clone(),
                        seen.clone(),
                        registered.clone(),
                        discovery.clone(),
                    );
                    async move {
                        if req.uri().path() == "/.well-known/openid-configuration" {
                            return Ok::<_, hyper::Error>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(discovery)))
                                    .unwrap(),
                            );
                        }
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let form = String::from_utf8_lossy(&body).to_string();
                        let client = form
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("client_id="))
                            .unwrap_or("")
                            .replace("%21", "!");
                        if let Some(fp) = &fp {
                            seen.lock().unwrap().push(fp.clone());
                        }
                        let ok = fp.as_ref().is_some_and(|fp| {
                            registered
                                .lock()
                                .unwrap()
                                .iter()
                                .any(|(c, f)| *c == client && f == fp)
                        });
                        let (status, json) = if ok {
                            use base64::Engine as _;
                            let e = |v: &[u8]| {
                                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
                            };
                            let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
                            let claims = serde_json::json!({"cid": client, "exp": exp});
                            let jwt = format!(
                                "{}.{}.{}",
                                e(b"{\"alg\":\"ES256\"}"),
                                e(claims.to_string().as_bytes()),
                                e(b"sig")
                            );
                            (
                                200,
                                serde_json::json!({"access_token": jwt, "token_type": "bearer", "expires_in": 3600}),
                            )
                        } else {
                            (
                                401,
                                serde_json::json!({"error": "invalid_client", "error_description": "Bad credentials"}),
                            )
                        };
                        Ok::<_, hyper::Error>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(json.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Server {
        url,
        seen,
        registered: registered_handle,
    }
}

fn trust(ca: &LocalCa) -> String {
    ca.root_pem()
}

#[tokio::test]
async fn success_unregistered_and_generation_switch() {
    let ca = LocalCa::new("token CA").unwrap();
    let a = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let b = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let fa = a.leaf().fingerprint_sha256.clone();
    let fb = b.leaf().fingerprint_sha256.clone();
    let srv = start(
        &ca,
        &ca,
        vec![
            ("sb-app!t1".into(), fa.clone()),
            ("sb-app!t1".into(), fb.clone()),
        ],
        false,
    )
    .await;
    let root = trust(&ca);
    let t = ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(root.as_bytes()),
    };
    request_token(&a, &srv.url, "sb-app!t1", &[], t, Limits::default())
        .await
        .unwrap();
    request_token(&b, &srv.url, "sb-app!t1", &[], t, Limits::default())
        .await
        .unwrap();
    assert_eq!(
        *srv.seen.lock().unwrap(),
        vec![fa.clone(), fb.clone()],
        "the second check must present B"
    );

    let e = request_token(&a, &srv.url, "sb-other", &[], t, Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::Unauthorized, "{e}");
    assert!(
        e.to_string()
            .contains("HTTP 401: invalid_client: Bad credentials"),
        "{e}"
    );
}

#[tokio::test]
async fn wrong_server_ca_is_a_tls_rejection() {
    let ca = LocalCa::new("token CA").unwrap();
    let other = LocalCa::new("someone else").unwrap();
    let a = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let srv = start(&ca, &ca, vec![], false).await;
    let wrong = trust(&other);
    let t = ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(wrong.as_bytes()),
    };
    let e = request_token(&a, &srv.url, "c", &[], t, Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, FailureKind::TlsRejected, "{e}");
    assert!(srv.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn silent_server_times_out() {
    let ca = LocalCa::new("token CA").unwrap();
    let a = generation(&issue(&ca, "app", Duration::hours(1), Duration::days(7)));
    let srv = start(&ca, &ca, vec![], true).await;
    let root = trust(&ca);
    let t = ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(root.as_bytes()),
    };
    let limits = Limits {
        timeout: std::time::Duration::from_millis(500),
        ..Limits::default()
    };
    let e = request_token(&a, &srv.url, "c", &[], t, limits)
        .await
        .unwrap_err();
    assert_eq!(e.kind.label(), "timeout", "{e}");
}

/// `certrot import` checks before writing; `certrot check --validate` turns a rejected
/// credential CRITICAL. Runs the real binary against the server above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_check_validate_through_the_binary() {
    let ca = LocalCa::new("cli token CA").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let good = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let bad = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let good_fp = generation(&good).leaf().fingerprint_sha256.clone();
    let srv = start(&ca, &ca, vec![("sb-app!t1".into(), good_fp.clone())], false).await;
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

    // A rejected credential is not written.
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

    // An accepted one is, and check --validate passes.
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

    // Revoked at the server: CRITICAL.
    srv.registered.lock().unwrap().clear();
    let (code, out, _) = run_bg(args(&["--config", &config, "check", "--validate"]))
        .await
        .unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("CRITICAL orders: token check failed: unauthorized"),
        "{out}"
    );
    assert!(
        srv.seen
            .lock()
            .unwrap()
            .iter()
            .all(|f| *f == good_fp || *f == generation(&bad).leaf().fingerprint_sha256)
    );
}

#[tokio::test]
async fn token_url_from_discovery_alias() {
    let ca = LocalCa::new("discovery CA").unwrap();
    let i = issue(&ca, "app", Duration::hours(1), Duration::days(7));
    let g = generation(&i);
    let srv = start(
        &ca,
        &ca,
        vec![("sb-app".into(), g.leaf().fingerprint_sha256.clone())],
        false,
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ca.pem"), ca.root_pem()).unwrap();
    let toml = format!(
        "[[credential]]\nname = \"d\"\ntarget.path = \"/srv/d\"\ncheck.discovery_url = {:?}\ncheck.ca_file = {:?}\ncheck.system_roots = false\ncheck.client_id = \"sb-app\"\n",
        srv.url
            .replace("/oauth/token", "/.well-known/openid-configuration"),
        tmp.path().join("ca.pem").display().to_string()
    );
    let cfg = certrot::config::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
    certrot::check::validate(&cfg.credentials[0], &g)
        .await
        .unwrap();
    assert_eq!(
        srv.seen.lock().unwrap().len(),
        1,
        "one token request, through the mTLS alias"
    );
    // An unreachable discovery URL is a `discovery` failure naming it.
    let toml = toml.replace(&srv.url.replace("/oauth/token", ""), "https://127.0.0.1:1");
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
