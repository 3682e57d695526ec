//! Valid inputs for each entry of `certrot::inputs`, the starting points the property tests
//! mutate and the fuzzers' seed corpus (`examples/fuzz_seeds.rs` writes them to disk).
//! Self-contained (rcgen, serde_json): included by path from the example too.

use base64::Engine as _;

/// A self-signed ECDSA certificate and its PKCS#8 key, both PEM.
fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let params = rcgen::CertificateParams::new(vec!["sb-input".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

const CONFIG: &str = "state_dir = \"/var/lib/certrot\"\n[daemon]\nlisten = \"127.0.0.1:9464\"\n\
[defaults]\nrenew_before = \"33%\"\n[service_manager.main]\nservice_key = \"/etc/certrot/sm.json\"\n\
[[credential]]\nname = \"orders\"\nkind = \"xsuaa\"\ntarget.path = \"/srv/orders\"\n\
target.layout = \"servicebinding\"\nfields.certurl = \"https://a.authentication.cert.x\"\n\
issuer.type = \"service-manager\"\nissuer.instance_id = \"0f8e-11\"\n\
[[credential.hook]]\nexec = [\"/bin/true\"]\n";

const STATE: &str = r#"{"version":1,"credential":"orders","current":{"serial":"01","fingerprint_sha256":"AA","not_after":"2026-12-09T00:00:00Z","generation":"..2026","binding_id":"b1","committed_at":"2026-12-02T00:00:00Z","source":"rotate"},"consecutive_failures":2,"next_attempt":"2026-12-02T01:00:00Z","retiring":[{"binding_id":"b0","service_manager":"main","fingerprint_sha256":"BB","retire_at":"2026-12-03T00:00:00Z","reason":"replaced","attempts":0}],"installation":"i00ff00ff00ff00ff"}"#;

const SM_ERROR: &str = r#"{"error":"BrokerError","description":"Failed bind request: Status: 409; ErrorMessage: x","broker_error":{"StatusCode":409,"ErrorMessage":"Conflict","Description":"d"}}"#;

const SM_LIST: &str = r#"{"token":"b1","num_items":2,"items":[{"id":"b1","name":"certrot-orders-1","service_instance_id":"i1","labels":{"certrot_credential":["orders"],"certrot_installation":["i00ff00ff00ff00ff"]},"credentials":{"clientid":"sb-orders","certificate":"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"},"created_at":"2026-12-02T00:00:00Z"}]}"#;

const METADATA: &str = r#"{"credentialProperties":[{"name":"clientid","format":"text"},{"name":"domains","format":"json"}]}"#;

const ANNOTATIONS: &str = "certrot.io/version=1\ncertrot.io/credential=orders\n\
certrot.io/consecutive-failures=2\ncertrot.io/next-attempt=2026-12-02T01:00:00Z\n\
certrot.io/retiring=[{\"binding_id\":\"b0\",\"service_manager\":\"main\",\"fingerprint_sha256\":null,\"retire_at\":\"2026-12-03T00:00:00Z\",\"reason\":\"replaced\",\"attempts\":0}]\n\
certrot.io/installation=i00ff00ff00ff00ff\n";

fn token_response() -> String {
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let jwt = format!(
        "{}.{}.{}",
        e(br#"{"alg":"ES256"}"#),
        e(br#"{"aud":["sb-input"],"sub":"sb-input","azp":"sb-input","exp":4102444800}"#),
        e(b"sig")
    );
    serde_json::json!({"access_token": jwt, "token_type": "bearer", "expires_in": 43199})
        .to_string()
}

/// The seeds of the input kind `name` (a name from `certrot::inputs::ALL`).
pub fn for_input(name: &str) -> Vec<Vec<u8>> {
    let seeds: Vec<String> = match name {
        "pem_chain_and_key" => {
            let (cert, key) = certificate();
            vec![format!("{cert}{key}"), cert, key]
        }
        "service_key" => {
            let (cert, key) = certificate();
            let inner = serde_json::json!({
                "clientid": "sb-input", "certificate": cert, "key": key,
                "certurl": "https://t.authentication.cert.example.invalid",
                "url": "https://t.authentication.example.invalid",
                "credential-type": "x509", "xsappname": "app!t1", "identityzone": "t",
                "sm_url": "https://service-manager.example.invalid",
            });
            vec![
                serde_json::json!({ "credentials": inner }).to_string(),
                inner.to_string(),
            ]
        }
        "configuration" => vec![CONFIG.to_string()],
        "state_file" => vec![STATE.to_string()],
        "token_response" => vec![token_response()],
        "service_manager_answer" => vec![
            SM_ERROR.to_string(),
            SM_LIST.to_string(),
            "120".to_string(),
            "Wed, 21 Oct 2026 07:28:00 GMT".to_string(),
            "2024-11-11 15:00:03 +0000 UTC".to_string(),
        ],
        "servicebinding_metadata" => vec![METADATA.to_string()],
        "kubernetes_annotations" => vec![ANNOTATIONS.to_string()],
        other => panic!("no seeds for input {other}"),
    };
    seeds.into_iter().map(String::into_bytes).collect()
}
