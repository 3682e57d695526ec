//! The Service Manager client (`src/issuer/service_manager.rs`) against the sandbox Service
//! Manager API over real TLS on 127.0.0.1: both access flavours, sync and async creation,
//! queries with quoting and paging, deletion (and the revocation it causes), 409, 422 and
//! 429 handling, token refresh on 401, failed operations.

use certrot::check::{Limits, ServerTrust};
use certrot::issuer::service_manager::{
    BindingRequest, Mode, RetryPolicy, SmAccess, SmClient, SmErrorKind, quote,
};
use certrot_sandbox::sm::{InstanceKind, SmCall, SmFault, SmOptions};
use certrot_sandbox::stack::Stack;
use serde_json::json;
use std::time::Duration;

async fn stack(opts: SmOptions) -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Stack::start(0, opts).await.unwrap()
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(20),
        max_delay: Duration::from_millis(400),
        max_server_wait: Duration::from_secs(2),
    }
}

fn client(s: &Stack, key: &serde_json::Value) -> SmClient {
    let access = SmAccess::from_service_key(key.to_string().as_bytes(), "sm-key.json").unwrap();
    SmClient::new(
        access,
        ServerTrust {
            system_roots: false,
            extra_ca_pem: Some(s.ca_pem.as_bytes()),
        },
        Limits::default(),
        quick(),
    )
    .unwrap()
}

fn request(name: &str, instance: &str, cred: &str) -> BindingRequest {
    BindingRequest {
        name: name.into(),
        instance_id: instance.into(),
        parameters: json!({"credential-type": "x509", "x509": {"key-length": 2048, "validity": 7, "validity-type": "DAYS"}}),
        labels: vec![
            ("managed_by".into(), "certrot".into()),
            ("certrot_credential".into(), cred.into()),
        ],
    }
}

#[tokio::test]
async fn create_get_list_delete_sync_and_async_with_both_access_flavours() {
    // Asynchronous by default: deletions answer 202 and are polled too.
    let s = stack(SmOptions {
        operation_delay: Duration::from_millis(150),
        async_default: true,
        ..SmOptions::default()
    })
    .await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
    for (flavour, key) in [
        ("secret", s.sm_secret_key()),
        ("x509", s.sm_x509_key(time::Duration::days(7)).unwrap()),
    ] {
        let c = client(&s, &key);
        let a = c
            .create_binding(
                &request(&format!("{flavour}-sync"), &inst, "orders"),
                Mode::Sync,
            )
            .await
            .unwrap();
        let creds = a.credentials.as_ref().unwrap();
        assert_eq!(creds["clientid"], "sb-orders!t1");
        assert!(
            creds["certificate"]
                .as_str()
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        let b = c
            .create_binding(
                &request(&format!("{flavour}-async"), &inst, "orders"),
                Mode::Async,
            )
            .await
            .unwrap();
        assert!(
            b.credentials.is_some(),
            "async creation ends with credentials"
        );
        assert!(
            s.sm.calls().iter().any(|l| l.contains("/operations/")),
            "the operation was polled"
        );
        let got = c.get_binding(&a.id).await.unwrap().unwrap();
        assert_eq!(got.name, format!("{flavour}-sync"));
        assert!(c.get_binding("no-such-id").await.unwrap().is_none());
        assert!(c.delete_binding(&a.id).await.unwrap());
        assert!(
            !c.delete_binding(&a.id).await.unwrap(),
            "404 = already gone"
        );
        assert!(c.delete_binding(&b.id).await.unwrap());
    }
    let deletes_polled =
        s.sm.calls()
            .iter()
            .filter(|l| l.starts_with("GET") && l.contains("/operations/"))
            .count();
    assert!(deletes_polled >= 4, "creations and deletions polled");
    assert!(s.sm.bindings().is_empty());
}

#[tokio::test]
async fn queries_quote_and_page() {
    let s = stack(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    })
    .await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-x!t1");
    let other = s.sm.add_instance(InstanceKind::Xsuaa, "sb-y!t1");
    let c = client(&s, &s.sm_secret_key());
    // 230 bindings for the credential o'brien (three pages of 100), some noise around them.
    let mut want = Vec::new();
    for i in 0..230 {
        let b = c
            .create_binding(&request(&format!("ob-{i}"), &inst, "o'brien"), Mode::Sync)
            .await
            .unwrap();
        want.push(b.id);
    }
    c.create_binding(&request("other-cred", &inst, "obrien"), Mode::Sync)
        .await
        .unwrap();
    c.create_binding(&request("other-inst", &other, "o'brien"), Mode::Sync)
        .await
        .unwrap();
    let got = c
        .list_bindings(
            &format!(
                "managed_by eq 'certrot' and certrot_credential eq {}",
                quote("o'brien")
            ),
            &format!("service_instance_id eq {}", quote(&inst)),
        )
        .await
        .unwrap();
    let ids: Vec<String> = got.iter().map(|b| b.id.clone()).collect();
    assert_eq!(ids, want);
    assert!(
        got.iter().all(|b| b.credentials.is_none()),
        "lists carry no credentials"
    );
    let pages =
        s.sm.calls()
            .iter()
            .filter(|l| l.starts_with("GET /v1/service_bindings?"))
            .count();
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn conflicts_rate_limits_concurrency_and_token_refresh() {
    let s = stack(SmOptions::default()).await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-z!t1");
    let c = client(&s, &s.sm_secret_key());
    c.create_binding(&request("dup", &inst, "z"), Mode::Sync)
        .await
        .unwrap();
    let e = c
        .create_binding(&request("dup", &inst, "z"), Mode::Sync)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SmErrorKind::Conflict, "{e}");
    assert!(
        e.to_string()
            .contains("Conflict: binding with name dup already exists"),
        "{e}"
    );

    // 422 twice, then success: retried.
    s.sm.inject(SmCall::Create, SmFault::Concurrent, 2);
    c.create_binding(&request("after-422", &inst, "z"), Mode::Sync)
        .await
        .unwrap();
    // 429 with an HTTP-date Retry-After, then success. Two seconds ahead (the date has
    // whole seconds): over a second, honoured beyond max_delay (400 ms), within
    // max_server_wait (2 s).
    let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    s.sm.inject(SmCall::Create, SmFault::RateLimited(at), 1);
    let t = std::time::Instant::now();
    c.create_binding(&request("after-429", &inst, "z"), Mode::Sync)
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After: {:?}",
        t.elapsed()
    );
    // A wait longer than max_server_wait is not cut short: the call ends, saying why.
    s.sm.inject(SmCall::Create, SmFault::RateLimited("60".into()), 1);
    let t = std::time::Instant::now();
    let e = c
        .create_binding(&request("too-long", &inst, "z"), Mode::Sync)
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(e.kind, SmErrorKind::RateLimited, "{e}");
    assert!(e.to_string().contains("asks to wait 60s"), "{e}");
    // A 429 without Retry-After backs off on certrot's own schedule and goes on.
    s.sm.inject(SmCall::Create, SmFault::Status(429), 2);
    c.create_binding(&request("no-header-429", &inst, "z"), Mode::Sync)
        .await
        .unwrap();
    // Persistent 503: bounded attempts, then the error with SM's description.
    s.sm.inject(SmCall::Get, SmFault::Status(503), 10);
    let e = c.get_binding("x").await.unwrap_err();
    assert_eq!(e.kind, SmErrorKind::ServerError);
    assert!(e.to_string().contains("after 4 attempts"), "{e}");
    assert!(e.to_string().contains("injected HTTP 503"), "{e}");
    // A token SM no longer accepts: refreshed once, transparently.
    let before = s.sm.calls().len();
    s.tokens.expire_tokens();
    c.create_binding(&request("after-expiry", &inst, "z"), Mode::Sync)
        .await
        .unwrap();
    assert_eq!(
        s.sm.calls().len() - before,
        2,
        "one 401, one retry with a new token"
    );
    // A wrong secret: no token, a clear error, no retry storm.
    let mut bad = s.sm_secret_key();
    bad["clientsecret"] = json!("wrong-secret-value");
    let e = client(&s, &bad).get_binding("x").await.unwrap_err();
    assert_eq!(e.kind, SmErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains("wrong-secret-value"), "{e}");
}

#[tokio::test]
async fn failed_operation_and_deletion_revokes_at_the_token_endpoint() {
    let s = stack(SmOptions {
        operation_delay: Duration::from_millis(50),
        ..SmOptions::default()
    })
    .await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-r!t1");
    let c = client(&s, &s.sm_secret_key());
    s.sm.inject(SmCall::Create, SmFault::OperationFails, 1);
    let e = c
        .create_binding(&request("doomed", &inst, "r"), Mode::Async)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SmErrorKind::OperationFailed, "{e}");
    assert!(e.to_string().contains("BrokerError"), "{e}");

    let b = c
        .create_binding(&request("live", &inst, "r"), Mode::Async)
        .await
        .unwrap();
    let creds = b.credentials.unwrap();
    let g = certrot::generation::Generation::from_pem(
        creds["certificate"].as_str().unwrap().as_bytes(),
        "c",
        creds["key"].as_str().unwrap().as_bytes(),
        "k",
    )
    .unwrap();
    let trust = ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(s.ca_pem.as_bytes()),
    };
    let url = format!("{}/oauth/token", creds["certurl"].as_str().unwrap());
    certrot::check::request_token(&g, &url, "sb-r!t1", &[], trust, Limits::default())
        .await
        .unwrap();
    assert!(c.delete_binding(&b.id).await.unwrap());
    let e = certrot::check::request_token(&g, &url, "sb-r!t1", &[], trust, Limits::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, certrot::check::FailureKind::Unauthorized, "{e}");
}

/// Over the configured rate the stand-in answers 429 with an HTTP-date `Retry-After`; the
/// client waits it out and every call succeeds.
#[tokio::test]
async fn rate_limit_with_http_date_is_waited_out() {
    let s = stack(SmOptions {
        // A window long enough that a slow machine still makes four calls inside it.
        rate_limit: Some((3, Duration::from_secs(2))),
        ..SmOptions::default()
    })
    .await;
    let access = SmAccess::from_service_key(s.sm_secret_key().to_string().as_bytes(), "k").unwrap();
    let c = SmClient::new(
        access,
        ServerTrust {
            system_roots: false,
            extra_ca_pem: Some(s.ca_pem.as_bytes()),
        },
        Limits::default(),
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(20),
            max_delay: Duration::from_secs(5),
            max_server_wait: Duration::from_secs(5),
        },
    )
    .unwrap();
    let t = std::time::Instant::now();
    for i in 0..6 {
        assert!(c.get_binding(&format!("none-{i}")).await.unwrap().is_none());
    }
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let calls = s.sm.calls().len();
    assert!(
        calls > 6,
        "some calls were answered 429 and repeated: {calls}"
    );
}

/// Service Manager as SAP's sources show it answering: 502 `BrokerError` classified by the
/// broker's own status, 422 `OperationInProgress`, `Retry-After` in Go's time format, the
/// Cloud Foundry router's 404, a failed async create left `ready: false`, and a deletion
/// whose operation is already gone (404 while polling).
#[tokio::test]
async fn service_manager_as_it_really_answers() {
    let s = stack(SmOptions {
        operation_delay: Duration::from_millis(50),
        // Deletions answer 202 and are polled.
        async_default: true,
        ..SmOptions::default()
    })
    .await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-real!t1");
    let c = client(&s, &s.sm_secret_key());
    let creates = || {
        s.sm.calls()
            .iter()
            .filter(|c| c.starts_with("POST"))
            .count()
    };
    // A broker 400 behind a 502: rejected with the broker's words, not retried.
    let before = creates();
    s.sm.inject(SmCall::Create, SmFault::Broker(400), 1);
    let e = c
        .create_binding(&request("broker-400", &inst, "r"), Mode::Sync)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SmErrorKind::Rejected, "{e}");
    assert!(
        e.to_string().contains("the broker answered HTTP 400")
            && e.to_string().contains("injected broker failure"),
        "{e}"
    );
    assert_eq!(creates() - before, 1, "a broker rejection is not retried");
    // A broker 422 ConcurrencyError and a broker 503 are retried.
    s.sm.inject(SmCall::Create, SmFault::Broker(422), 1);
    s.sm.inject(SmCall::Create, SmFault::Broker(503), 1);
    let before = creates();
    c.create_binding(&request("broker-422", &inst, "r"), Mode::Sync)
        .await
        .unwrap();
    assert_eq!(creates() - before, 3);
    // 422 OperationInProgress (instance not ready) is waited out like a concurrent operation.
    s.sm.inject(SmCall::Create, SmFault::InstanceNotReady, 2);
    c.create_binding(&request("not-ready", &inst, "r"), Mode::Sync)
        .await
        .unwrap();
    // Retry-After in Go's `2006-01-02 15:04:05 -0700 MST` form: honoured.
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let go = format!(
        "{} +0000 UTC",
        at.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap()
    );
    s.sm.inject(SmCall::Create, SmFault::RateLimited(go), 1);
    let t = std::time::Instant::now();
    c.create_binding(&request("after-go-429", &inst, "r"), Mode::Sync)
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // The router's 404 on DELETE means Service Manager is unreachable, never "gone".
    let b = c
        .create_binding(&request("keep-me", &inst, "r"), Mode::Sync)
        .await
        .unwrap();
    s.sm.inject(SmCall::Delete, SmFault::RouterNotFound, 10);
    let e = c.delete_binding(&b.id).await.unwrap_err();
    assert_eq!(e.kind, SmErrorKind::ServerError, "{e}");
    assert!(e.to_string().contains("X-Cf-RouterError"), "{e}");
    assert!(
        s.sm.bindings().iter().any(|x| x.id == b.id),
        "the binding must still exist"
    );
    s.sm.clear_faults();
    // 410 Gone on DELETE: gone already, a success.
    s.sm.inject(SmCall::Delete, SmFault::Status(410), 1);
    assert!(
        !c.delete_binding(&b.id).await.unwrap(),
        "410 means already gone"
    );
    // Async delete: once the binding is gone its operation answers 404 — done.
    assert!(c.delete_binding(&b.id).await.unwrap());
    assert!(s.sm.bindings().iter().all(|x| x.id != b.id));
    assert!(
        s.sm.calls()
            .iter()
            .any(|c| c.starts_with("GET") && c.contains("/operations/")),
        "the deletion was polled: {:?}",
        s.sm.calls()
    );
    // A failed async create stays behind, not ready, until deleted.
    s.sm.inject(SmCall::Create, SmFault::OperationFails, 1);
    let e = c
        .create_binding(&request("fails", &inst, "r"), Mode::Async)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SmErrorKind::OperationFailed, "{e}");
    let left: Vec<_> =
        s.sm.bindings()
            .into_iter()
            .filter(|b| b.name == "fails")
            .collect();
    assert_eq!(left.len(), 1, "the failed binding stays");
    assert!(!left[0].ready);
}

/// XSUAA with `certificate-pinning: false` requires subject + issuer DN unique among the
/// instance's bindings; Identity Authentication allows 20 distinct certificate subjects per
/// instance. Both come back as the broker's 400 behind a 502 `BrokerError`.
#[tokio::test]
async fn uniqueness_and_subject_limits_of_the_services() {
    let s = stack(SmOptions::default()).await;
    let c = client(&s, &s.sm_secret_key());
    let xs = s.sm.add_instance(InstanceKind::Xsuaa, "sb-dn!t1");
    let now = time::OffsetDateTime::now_utc();
    let provided = |name: &str, cn: &str, pinning: bool| {
        let i =
            s.ca.issue(
                cn,
                certrot_sandbox::ca::KeyAlg::EcdsaP256,
                now - time::Duration::minutes(1),
                now + time::Duration::days(1),
            )
            .unwrap();
        let mut r = request(name, &xs, "dn");
        r.parameters = json!({"credential-type": "x509", "x509": {
            "certificate": i.chain_pem, "certificate-pinning": pinning}});
        r
    };
    c.create_binding(&provided("dn-1", "orders", false), Mode::Sync)
        .await
        .unwrap();
    let e = c
        .create_binding(&provided("dn-2", "orders", false), Mode::Sync)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SmErrorKind::Rejected, "{e}");
    assert!(
        e.to_string()
            .contains("subject and issuer DN must be unique"),
        "{e}"
    );
    // Another subject, or pinning on (the certificate itself must be unique), is fine.
    c.create_binding(&provided("dn-3", "orders-2", false), Mode::Sync)
        .await
        .unwrap();
    c.create_binding(&provided("dn-4", "orders", true), Mode::Sync)
        .await
        .unwrap();

    let ias = s.sm.add_instance(InstanceKind::Identity, "ias-limits");
    let generated = |name: &str, app: Option<&str>| {
        let mut r = request(name, &ias, "ias");
        r.parameters = json!({"credential-type": "X509_GENERATED", "key-length": 2048,
            "validity": 1, "validity-type": "DAYS"});
        if let Some(a) = app {
            r.parameters["app-identifier"] = json!(a);
        }
        r
    };
    // Without app-identifier every binding has a subject of its own: the 21st is refused.
    for i in 0..20 {
        c.create_binding(&generated(&format!("ias-{i}"), None), Mode::Sync)
            .await
            .unwrap();
    }
    let e = c
        .create_binding(&generated("ias-20", None), Mode::Sync)
        .await
        .unwrap_err();
    assert_eq!(e.kind, SmErrorKind::Rejected, "{e}");
    assert!(
        e.to_string().contains("20 different certificate subject"),
        "{e}"
    );
    // Deleting one frees its subject.
    let first = c
        .list_bindings("", &format!("name eq {}", quote("ias-0")))
        .await
        .unwrap();
    assert!(c.delete_binding(&first[0].id).await.unwrap());
    c.create_binding(&generated("ias-21", Some("stable")), Mode::Sync)
        .await
        .unwrap();
}

/// A wait Service Manager asks for is honoured beyond max_delay, but never past the bound a
/// rotation sets (the credential's critical point): then the call fails at once, saying so.
#[tokio::test]
async fn server_waits_stop_at_the_critical_point() {
    let s = stack(SmOptions::default()).await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-bound!t1");
    let c = client(&s, &s.sm_secret_key());
    s.sm.inject(SmCall::Create, SmFault::RateLimited("2".into()), 1);
    let t = std::time::Instant::now();
    let e = certrot::issuer::service_manager::with_wait_bound(async {
        certrot::issuer::service_manager::bound_waits(
            std::time::Instant::now() + Duration::from_secs(1),
        );
        c.create_binding(&request("bounded", &inst, "b"), Mode::Sync)
            .await
            .unwrap_err()
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(e.kind, SmErrorKind::RateLimited, "{e}");
    assert!(
        e.to_string()
            .contains("past the credential's critical point"),
        "{e}"
    );
    // Within the bound, the same wait is waited out.
    s.sm.inject(SmCall::Create, SmFault::RateLimited("1".into()), 1);
    let t = std::time::Instant::now();
    certrot::issuer::service_manager::with_wait_bound(async {
        certrot::issuer::service_manager::bound_waits(
            std::time::Instant::now() + Duration::from_secs(10),
        );
        c.create_binding(&request("bounded-ok", &inst, "b"), Mode::Sync)
            .await
            .unwrap()
    })
    .await;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

/// A `Location` on another host is not followed (it would get the bearer token), and an id
/// that is not one never becomes a path of another resource.
#[tokio::test]
async fn foreign_locations_and_bad_ids_are_refused_before_anything_is_sent() {
    let s = stack(SmOptions::default()).await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-loc!t1");
    let c = client(&s, &s.sm_secret_key());
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = elsewhere.local_addr().unwrap().port();
    for loc in [
        format!("https://127.0.0.1:{port}/v1/service_bindings/abc/operations/op"),
        format!("//127.0.0.1:{port}/v1/service_bindings/abc/operations/op"),
        "http://example.invalid/v1/service_bindings/abc/operations/op".to_string(),
    ] {
        s.sm.inject(SmCall::Create, SmFault::LocationTo(loc.clone()), 1);
        let e = c
            .create_binding(&request("loc", &inst, "l"), Mode::Async)
            .await
            .unwrap_err();
        assert_eq!(e.kind, SmErrorKind::BadResponse, "{loc}: {e}");
        assert!(
            ["not followed", "neither a path nor a URL"]
                .iter()
                .any(|m| e.to_string().contains(m)),
            "{loc}: {e}"
        );
    }
    let reached = tokio::time::timeout(Duration::from_millis(300), elsewhere.accept()).await;
    assert!(reached.is_err(), "a request went to the foreign host");
    let before = s.sm.calls().len();
    for bad in ["../service_instances/X", "a/b", "x?y", "", "id\n"] {
        let e = c.delete_binding(bad).await.unwrap_err();
        assert_eq!(e.kind, SmErrorKind::BadResponse, "{bad:?}: {e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(c.get_binding(bad).await.is_err());
    }
    assert_eq!(s.sm.calls().len(), before, "nothing was sent for a bad id");
}

/// Concurrency is per resource: while one binding's asynchronous create runs, another
/// binding on the same instance is created at once (no 422 for the instance).
#[tokio::test]
async fn another_bindings_operation_does_not_block_a_create() {
    let s = stack(SmOptions {
        operation_delay: Duration::from_millis(800),
        ..SmOptions::default()
    })
    .await;
    let inst = s.sm.add_instance(InstanceKind::Xsuaa, "sb-par!t1");
    let c = std::sync::Arc::new(client(&s, &s.sm_secret_key()));
    let slow = {
        let (c, r) = (c.clone(), request("slow", &inst, "p"));
        tokio::spawn(async move { c.create_binding(&r, Mode::Async).await })
    };
    // Wait until the slow one's operation runs.
    let t = std::time::Instant::now();
    while !s.sm.calls().iter().any(|c| c.contains("/operations/")) {
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.create_binding(&request("fast", &inst, "p"), Mode::Sync)
        .await
        .unwrap();
    let sync_posts =
        s.sm.calls()
            .iter()
            .filter(|c| c.starts_with("POST") && c.contains("async=false"))
            .count();
    assert_eq!(
        sync_posts,
        1,
        "the create was refused at first: {:?}",
        s.sm.calls()
    );
    assert!(slow.await.unwrap().is_ok());
}
