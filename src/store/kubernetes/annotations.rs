//! certrot's state in a Secret's annotations: one `certrot.io/<field>` annotation per state
//! field (strings as they are, everything else as JSON), read back with the annotation named
//! in every error. Pure.

use crate::state::State;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Prefix of certrot's annotations.
pub const ANNOTATION_PREFIX: &str = "certrot.io/";
/// The annotation naming the generation a Secret holds (a timestamp, like a directory name).
pub const GENERATION_ANNOTATION: &str = "certrot.io/generation";

/// Where unusable state annotations are kept (as a JSON object) when certrot's are rewritten.
pub const UNUSABLE_ANNOTATION: &str = "certrot.io/unusable-state";

/// certrot's part of a Secret: its `certrot.io/` annotations and the certificate. A change
/// in it between a read and a write means another certrot run (or an operator's rollback).
pub(super) fn ours(obj: &Option<Secret>) -> (BTreeMap<String, String>, Vec<u8>) {
    let Some(o) = obj else {
        return (BTreeMap::new(), Vec::new());
    };
    let ann = o
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX) && k.as_str() != UNUSABLE_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let crt = o
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .map(|v| v.0.clone())
        .unwrap_or_default();
    (ann, crt)
}

/// The state as annotations: one per field, `certrot.io/<field-name>`; strings as they are,
/// everything else as JSON; empty fields are removed (`None`).
pub(super) fn state_annotations(state: &State) -> Vec<(String, Option<String>)> {
    let Ok(Value::Object(map)) = serde_json::to_value(state) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| {
            let key = format!("{ANNOTATION_PREFIX}{}", k.replace('_', "-"));
            let value = match v {
                Value::Null => None,
                Value::Array(a) if a.is_empty() => None,
                Value::Number(n) if n.as_u64() == Some(0) && k != "version" => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            (key, value)
        })
        .collect()
}

/// State fields kept as plain strings (never parsed as JSON: a credential may be named `123`).
const STRING_FIELDS: [&str; 4] = ["credential", "last-success", "next-attempt", "installation"];

/// The state read back from annotations; `Err` names the annotation.
pub fn parse_state(
    annotations: Option<&BTreeMap<String, String>>,
    credential: &str,
) -> Result<State, String> {
    let mut map = Map::new();
    for (k, v) in annotations.into_iter().flatten() {
        let Some(field) = k.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        if k == GENERATION_ANNOTATION || k == UNUSABLE_ANNOTATION || field.starts_with("previous") {
            continue;
        }
        let value = if STRING_FIELDS.contains(&field) {
            Value::String(v.clone())
        } else {
            serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.clone()))
        };
        map.insert(field.replace('-', "_"), value);
    }
    if map.is_empty() {
        return Ok(State {
            version: 1,
            credential: credential.to_string(),
            ..State::default()
        });
    }
    let state: State = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let (field, rest) = path.split_once('.').unwrap_or((&path, ""));
        let at = format!("{ANNOTATION_PREFIX}{}", field.replace('_', "-"));
        let at = if rest.is_empty() {
            at
        } else {
            format!("{at} ({rest})")
        };
        format!("annotation {at}: {}", e.inner())
    })?;
    if state.credential != credential {
        return Err(format!(
            "annotation {ANNOTATION_PREFIX}credential says it belongs to credential {:?}, not {credential:?}",
            state.credential
        ));
    }
    if state.version != 1 {
        return Err(format!(
            "annotation {ANNOTATION_PREFIX}version: unsupported state version {}",
            state.version
        ));
    }
    Ok(state)
}

pub(super) fn set_annotation(obj: &mut Secret, key: &str, value: Option<&str>) {
    let a = obj.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => {
            a.insert(key.to_string(), v.to_string());
        }
        None => {
            a.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PendingRecord, RetiringRecord};

    #[test]
    fn state_round_trips_through_annotations() {
        let t = time::macros::datetime!(2026-11-23 12:00:00.123456789 UTC);
        let st = State {
            version: 1,
            credential: "orders".into(),
            consecutive_failures: 2,
            next_attempt: Some(t),
            pending: Some(PendingRecord {
                binding_name: "certrot-orders-1".into(),
                binding_id: Some("b1".into()),
                service_manager: "default".into(),
                instance_id: "i1".into(),
                started_at: t,
                fingerprint_sha256: None,
            }),
            retiring: vec![RetiringRecord {
                binding_id: "b0".into(),
                service_manager: "default".into(),
                fingerprint_sha256: Some("ab".into()),
                retire_at: t,
                reason: crate::state::RetireReason::Replaced,
                attempts: 0,
            }],
            ..State::default()
        };
        let ann: BTreeMap<String, String> = state_annotations(&st)
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        assert_eq!(ann["certrot.io/credential"], "orders");
        assert_eq!(ann["certrot.io/consecutive-failures"], "2");
        assert!(!ann.contains_key("certrot.io/current"));
        assert_eq!(parse_state(Some(&ann), "orders").unwrap(), st);
        // Someone else's credential, or a broken value, is reported with the annotation.
        let e = parse_state(Some(&ann), "billing").unwrap_err();
        assert!(e.contains("belongs to credential \"orders\""), "{e}");
        let mut bad = ann.clone();
        bad.insert("certrot.io/next-attempt".into(), "yesterday".into());
        let e = parse_state(Some(&bad), "orders").unwrap_err();
        assert!(e.starts_with("annotation certrot.io/next-attempt"), "{e}");
        // No annotations: a fresh state.
        assert_eq!(parse_state(None, "x").unwrap().credential, "x");
    }
}
