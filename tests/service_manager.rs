//! The Service Manager client (`src/issuer/service_manager.rs`) against the sandbox Service
//! Manager API over real TLS on 127.0.0.1: both access flavours, sync and async creation,
//! queries with quoting and paging, deletion (and the revocation it causes), 409, 422 and
//! 429 handling, token refresh on 401, failed operations.

use certrot::check::{Limits, ServerTrust};
use certrot::issuer::service_manager::{
    BindingRequest, Mode, RetryPolicy, SmAccess, SmClient, SmErrorKind, quote,
};
use certrot::sandbox::sm::{InstanceKind, SmCall, SmFault, SmOptions};
use certrot::sandbox::stack::Stack;
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
    // 429 with an HTTP-date Retry-After, then success. Three seconds ahead (the date has
    // whole seconds): the hint is over a second, so the wait is the policy's cap, 400 ms.
    let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    s.sm.inject(SmCall::Create, SmFault::RateLimited(at), 1);
    let t = std::time::Instant::now();
    c.create_binding(&request("after-429", &inst, "z"), Mode::Sync)
        .await
        .unwrap();
    assert!(
        t.elapsed() >= quick().max_delay,
        "waited for Retry-After: {:?}",
        t.elapsed()
    );
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
