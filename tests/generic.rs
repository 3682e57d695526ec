//! `kind = "generic"`: a service with X.509 bindings and no OAuth token endpoint, here the
//! sandbox's SAP Cloud Logging (bindings with `ingest-mtls-*` fields, `ingest.certValidityDays`,
//! an mTLS ingest host that takes JSON with a binding's certificate), through the real
//! binary: binding parameters pass through as written, every new generation is proven by
//! an mTLS probe of the ingest endpoint named in its own credentials, a probe answered with
//! a status outside `accept_status` fails the rotation with nothing written, and the probe
//! backs `check --validate`.

mod common;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use common::world::World;

const CLOUD_LOGGING: &str = "certificate_field = \"ingest-mtls-cert\"\n\
    key_field = \"ingest-mtls-key\"\n\
    check.probe_url = \"https://{ingest-mtls-endpoint}/\"\n\
    check.probe_method = \"PUT\"\n\
    check.probe_body = '{\"msg\": \"certrot probe\"}'\n\
    issuer.parameters.ingest.certValidityDays = 7\n";

fn cloud_logging() -> (World, String) {
    let w = World::new(SmOptions {
        rsa_pool: 3,
        ..SmOptions::default()
    });
    let instance = w
        .stack
        .sm
        .add_instance(InstanceKind::CloudLogging, "cls-orders");
    (w, instance)
}

#[test]
fn a_cloud_logging_binding_is_rotated_and_proven_by_an_ingest_probe() {
    let (w, instance) = cloud_logging();
    let cfg = w.config(
        None,
        &[w.credential("logs", "generic", &instance, CLOUD_LOGGING)],
    );
    let (code, out, err) = w.certrot(&cfg, &["config", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("mTLS probe PUT https://{ingest-mtls-endpoint}/ accepting HTTP [200]")
            && out.contains("binding parameters {\"ingest\":{\"certValidityDays\":7}}"),
        "{out}"
    );

    let seen_before = w.stack.tokens.seen().len();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = w.generation("logs");
    // The parameters went through as written: 7 days instead of the service's 90.
    let life = first.leaf().not_after - first.leaf().not_before;
    assert!(
        life <= time::Duration::days(7) + time::Duration::minutes(1)
            && life > time::Duration::days(6),
        "{life}"
    );
    // The probe reached the ingest host with the new certificate.
    let seen = w.stack.tokens.seen();
    assert!(
        seen[seen_before..].contains(&first.leaf().fingerprint_sha256),
        "the new certificate was never presented: {seen:?}"
    );
    // The application's files: the service's own fields with the new values.
    let creds: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.target("logs").join("credentials.json")).unwrap(),
    )
    .unwrap();
    assert!(creds["ingest-mtls-endpoint"].as_str().is_some(), "{creds}");
    assert_eq!(
        creds["ingest-mtls-cert"].as_str().unwrap().trim(),
        first.chain_pem().trim()
    );
    assert!(creds.get("clientid").is_none(), "{creds}");

    let (code, out, err) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}{err}");

    // A second rotation retires the first binding.
    let b1 = w.state("logs").current.unwrap().binding_id.unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(
        w.current_fingerprint("logs"),
        first.leaf().fingerprint_sha256
    );
    assert!(!w.binding_ids().contains(&b1), "{out}");

    // The ingest host stops taking the served certificate: the probe says so.
    w.stack.tokens.revoke(&w.current_fingerprint("logs"));
    let (code, out, err) = w.certrot(&cfg, &["check", "--validate"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("unauthorized") && out.contains("HTTP 401"),
        "{out}{err}"
    );
}

#[test]
fn a_probe_answered_outside_accept_status_fails_the_rotation_with_nothing_written() {
    let (w, instance) = cloud_logging();
    let good = w.config(
        None,
        &[w.credential("logs", "generic", &instance, CLOUD_LOGGING)],
    );
    let (code, out, err) = w.certrot(&good, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let before = common::snapshot(&w.target("logs"));
    let bindings = w.binding_ids();
    // Cloud Logging answers 400 to a body that is not JSON.
    let broken = CLOUD_LOGGING.replace(
        "check.probe_body = '{\"msg\": \"certrot probe\"}'",
        "check.probe_body = 'not json'",
    );
    let cfg = w.config(None, &[w.credential("logs", "generic", &instance, &broken)]);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("HTTP 400, not one of check.accept_status [200]"),
        "{out}{err}"
    );
    assert_eq!(common::snapshot(&w.target("logs")), before);
    assert_eq!(w.binding_ids(), bindings, "the attempt's binding was left");
    // The same answer accepted on purpose proves the certificate reached the service.
    let lenient = format!("{broken}check.accept_status = [200, 400]\n");
    let cfg = w.config(
        None,
        &[w.credential("logs", "generic", &instance, &lenient)],
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn generic_settings_are_checked() {
    let (w, instance) = cloud_logging();
    for (extra, field, says) in [
        ("", "check.probe_url", "needs check.probe_url"),
        (
            "check.probe_url = \"http://ingest.example/\"\n",
            "check.probe_url",
            "https",
        ),
        (
            "check.probe_url = \"https://{ingest-mtls-endpoint/\"\n",
            "check.probe_url",
            "without its }",
        ),
        (
            "check.probe_url = \"https://x/\"\ncheck.token_url = \"https://t/oauth/token\"\n",
            "check.token_url",
            "mTLS probe",
        ),
        (
            "check.probe_url = \"https://x/\"\ncheck.accept_status = [200, 401]\n",
            "check.accept_status",
            "refused the certificate",
        ),
        (
            "check.probe_url = \"https://x/\"\ncheck.probe_body = \"{}\"\n",
            "check.probe_body",
            "sends no body",
        ),
        (
            "check.probe_url = \"https://x/\"\ncheck.probe_headers.\"bad header\" = \"v\"\n",
            "check.probe_headers",
            "not an HTTP header name",
        ),
        (
            "check.probe_url = \"https://x/\"\nissuer.validity_days = 7\n",
            "issuer.validity_days",
            "issuer.parameters",
        ),
        (
            "check.probe_url = \"https://x/\"\nkey_field = \"certificate\"\n",
            "key_field",
            "same field",
        ),
    ] {
        let cfg = w.config(None, &[w.credential("logs", "generic", &instance, extra)]);
        let (code, out, err) = w.certrot(&cfg, &["config", "check"]);
        assert_eq!(code, 2, "{extra}: {out}{err}");
        assert!(
            err.contains(field) && err.contains(says) && err.lines().count() == 1,
            "{extra}: {err}"
        );
    }
    // Probe settings on a kind that is proven by a token request.
    let cfg = w.config(
        None,
        &[w.credential(
            "orders",
            "xsuaa",
            &instance,
            "check.probe_url = \"https://x/\"\n",
        )],
    );
    let (code, _, err) = w.certrot(&cfg, &["config", "check"]);
    assert_eq!(code, 2);
    assert!(err.contains("is for kind = \"generic\""), "{err}");
}

/// Retirement of a generic credential recognises what the target serves by the service's
/// own certificate field: a forged queue entry naming the served binding (as replaced, or
/// as an adopted one with the served fingerprint) never deletes it.
#[test]
fn a_forged_retirement_never_deletes_the_served_generic_binding() {
    let (w, instance) = cloud_logging();
    let cfg = w.config(
        None,
        &[w.credential("logs", "generic", &instance, CLOUD_LOGGING)],
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let served = w.state("logs").current.unwrap().binding_id.unwrap();
    let fp = w.current_fingerprint("logs");
    let due = common::rfc3339_in(-time::Duration::seconds(1));
    for (reason, fingerprint) in [("replaced", "CC:DD".to_string()), ("adopted", fp.clone())] {
        w.edit_state("logs", |st| {
            st["retiring"] = serde_json::json!([
                {"binding_id": served, "service_manager": "main", "fingerprint_sha256": fingerprint,
                 "retire_at": due, "reason": reason, "attempts": 0},
            ])
        });
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
        assert_eq!(code, 0, "{reason}: {out}{err}");
        assert!(
            w.binding_ids().contains(&served),
            "{reason}: the served binding was deleted: {out}{err}"
        );
        assert_eq!(w.current_fingerprint("logs"), fp);
    }
}
