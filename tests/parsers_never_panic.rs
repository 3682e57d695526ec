//! Every parser that takes outside input, fed random and mutated input: it answers with a
//! value or an error, never a panic. PEM chains and keys, service keys, configuration, state
//! files, token responses (JWT payloads), Service Manager error bodies and `Retry-After`
//! values, servicebinding `.metadata`.
//!
//! A property-based stand-in for coverage-guided fuzzing (no nightly toolchain here): 256
//! cases per parser by default; `PROPTEST_CASES=100000 cargo test --release --test
//! parsers_never_panic` for a long run.

mod common;
use proptest::prelude::*;
use std::path::Path;

/// A valid input with some bytes flipped, some cut, some repeated.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..8),
        0..=len,
        any::<bool>(),
    )
        .prop_map(move |(flips, cut, dup)| {
            let mut v = seed.clone();
            for (i, b) in flips {
                if i < v.len() {
                    v[i] = b;
                }
            }
            v.truncate(cut.max(1));
            if dup {
                let again = v.clone();
                v.extend(again);
            }
            v
        })
}

/// A fresh certificate and key to build valid inputs from.
fn issued() -> certrot::sandbox::ca::Issued {
    let ca = certrot::sandbox::ca::LocalCa::new("fuzz CA").unwrap();
    common::issue(
        &ca,
        "fuzz",
        time::Duration::hours(1),
        time::Duration::days(1),
    )
}

fn pem_seed() -> Vec<u8> {
    let i = issued();
    format!("{}{}", i.chain_pem, i.key_pem.as_str()).into_bytes()
}

fn service_key_seed() -> Vec<u8> {
    common::service_key(&issued(), "sb-fuzz")
        .to_string()
        .into_bytes()
}

const CONFIG_SEED: &str = "state_dir = \"/var/lib/certrot\"\n[daemon]\nlisten = \"127.0.0.1:9464\"\n\
[defaults]\nrenew_before = \"33%\"\n[service_manager.main]\nservice_key = \"/etc/certrot/sm.json\"\n\
[[credential]]\nname = \"orders\"\nkind = \"xsuaa\"\ntarget.path = \"/srv/orders\"\n\
target.layout = \"servicebinding\"\nfields.certurl = \"https://a.authentication.cert.x\"\n\
issuer.type = \"service-manager\"\nissuer.instance_id = \"0f8e-11\"\n\
[[credential.hook]]\nexec = [\"/bin/true\"]\n";

const STATE_SEED: &str = r#"{"version":1,"credential":"orders","current":{"serial":"01","fingerprint_sha256":"AA","not_after":"2026-12-09T00:00:00Z","generation":"..2026","binding_id":"b1","committed_at":"2026-12-02T00:00:00Z","source":"rotate"},"consecutive_failures":2,"next_attempt":"2026-12-02T01:00:00Z","retiring":[{"binding_id":"b0","service_manager":"main","fingerprint_sha256":"BB","retire_at":"2026-12-03T00:00:00Z","reason":"replaced","attempts":0}],"installation":"00ff"}"#;

const SM_ERROR_SEED: &str = r#"{"error":"BrokerError","description":"Failed bind request: Status: 409; ErrorMessage: x","broker_error":{"StatusCode":409,"ErrorMessage":"Conflict","Description":"d"}}"#;

fn token_seed() -> Vec<u8> {
    use base64::Engine as _;
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let jwt = format!(
        "{}.{}.{}",
        e(br#"{"alg":"ES256"}"#),
        e(br#"{"aud":["sb-fuzz"],"sub":"sb-fuzz","exp":4102444800}"#),
        e(b"sig")
    );
    serde_json::json!({"access_token": jwt, "token_type": "bearer"})
        .to_string()
        .into_bytes()
}

fn bytes_or_mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        mutated(seed)
    ]
}

proptest! {
    #[test]
    fn pem_chains_and_keys(input in bytes_or_mutated(pem_seed())) {
        let _ = certrot::x509::parse_chain(&input, "fuzz");
        let _ = certrot::x509::parse_key(&input, "fuzz");
        let _ = certrot::generation::Generation::from_pem(&input, "c", &input, "k");
    }

    #[test]
    fn service_keys(input in bytes_or_mutated(service_key_seed())) {
        let _ = certrot::servicekey::parse_service_key(&input, "fuzz.json");
    }

    #[test]
    fn configuration(input in bytes_or_mutated(CONFIG_SEED.as_bytes().to_vec())) {
        let text = String::from_utf8_lossy(&input);
        let _ = certrot::config::Config::parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn state_files(input in bytes_or_mutated(STATE_SEED.as_bytes().to_vec())) {
        let _ = serde_json::from_slice::<certrot::state::State>(&input);
    }

    #[test]
    fn token_responses(input in bytes_or_mutated(token_seed())) {
        let now = time::OffsetDateTime::now_utc();
        let _ = certrot::check::judge_token_response(&input, "https://t/oauth/token", "sb-fuzz", now);
    }

    #[test]
    fn service_manager_answers(input in bytes_or_mutated(SM_ERROR_SEED.as_bytes().to_vec())) {
        let _ = certrot::issuer::service_manager::broker_status(&input);
        let text = String::from_utf8_lossy(&input);
        let _ = certrot::issuer::service_manager::parse_retry_after(&text, std::time::SystemTime::now());
        let _ = certrot::issuer::service_manager::parse_retry_after(
            "2024-11-11 15:00:03 +0000 UTC",
            std::time::SystemTime::UNIX_EPOCH,
        );
    }

    #[test]
    fn servicebinding_metadata(input in bytes_or_mutated(
        br#"{"credentialProperties":[{"name":"clientid","format":"text"},{"name":"domains","format":"json"}]}"#.to_vec()
    )) {
        let _ = certrot::target::binding::parse_fields(|n| match n {
            ".metadata" => Some(&input[..]),
            "clientid" => Some(&b"sb"[..]),
            "domains" => Some(&input[..input.len().min(40)]),
            _ => None,
        });
    }
}
