//! Every parser of input from outside certrot, one entry per kind of input, each taking
//! arbitrary bytes and ignoring the answer: a value or an error, never a panic. The fuzz
//! targets in `fuzz/` and the property tests in `tests/parsers_never_panic.rs` drive these
//! same entries, so a parser added here is covered by both.

use std::collections::BTreeMap;
use std::path::Path;

/// PEM certificate chains and private keys (target files, binding credentials, signers).
pub fn pem_chain_and_key(data: &[u8]) {
    let _ = crate::x509::parse_chain(data, "input");
    let _ = crate::x509::parse_key(data, "input");
    // A chain and a key from the two halves, as a target's cert.pem and key.pem.
    let (cert, key) = data.split_at(data.len() / 2);
    let _ = crate::generation::Generation::from_pem(cert, "cert", key, "key");
    let _ = crate::generation::Generation::from_pem(data, "cert", data, "key");
}

/// Service keys (`certrot import`, the Service Manager key).
pub fn service_key(data: &[u8]) {
    let _ = crate::servicekey::parse_service_key(data, "input.json", &Default::default());
    let _ = crate::issuer::service_manager::SmAccess::from_service_key(data, "input.json");
}

/// The configuration file (as text: certrot reads it as UTF-8 and refuses anything else).
pub fn configuration(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, Path::new("input.toml"));
    }
}

/// State files in `state_dir`.
pub fn state_file(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::state::State>(data);
}

/// Token endpoint answers, the JWT payload inside them included.
pub fn token_response(data: &[u8]) {
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let _ = crate::check::judge_token_response(data, "https://t/oauth/token", "sb-input", now);
}

/// Service Manager answers: binding lists and bindings, error bodies, `Retry-After`.
pub fn service_manager_answer(data: &[u8]) {
    use crate::issuer::service_manager as sm;
    let _ = sm::broker_status(data);
    let _ = sm::parse_list_page(data, "https://sm/v1/service_bindings");
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = sm::Binding::from_json(&v, "https://sm/v1/service_bindings/b");
    }
    let text = String::from_utf8_lossy(data);
    let _ = sm::parse_retry_after(&text, std::time::SystemTime::UNIX_EPOCH);
    let _ = sm::parse_retry_after(&text, std::time::SystemTime::now());
}

/// A servicebinding directory or Secret read back through its `.metadata` (the input is
/// `.metadata`; every field file holds the input's first 40 bytes).
pub fn servicebinding_metadata(data: &[u8]) {
    let head = &data[..data.len().min(40)];
    let _ = crate::store::binding::parse_fields(|name| match name {
        crate::store::binding::METADATA => Some(data),
        _ => Some(head),
    });
}

/// A Secret's state annotations (one `key=value` per line of the input).
pub fn kubernetes_annotations(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let map: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = crate::store::kubernetes::parse_state(Some(&map), "orders");
}

/// An entry: a parser of one kind of outside input, fed arbitrary bytes.
pub type Entry = fn(&[u8]);

/// Every entry, by name (the fuzz targets' names).
pub const ALL: [(&str, Entry); 8] = [
    ("pem_chain_and_key", pem_chain_and_key),
    ("service_key", service_key),
    ("configuration", configuration),
    ("state_file", state_file),
    ("token_response", token_response),
    ("service_manager_answer", service_manager_answer),
    ("servicebinding_metadata", servicebinding_metadata),
    ("kubernetes_annotations", kubernetes_annotations),
];
