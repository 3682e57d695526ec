//! Service keys and binding credentials as SAP tools print them (pure): flat JSON, nested
//! under `credentials` (`btp get services/binding`, cf v8) or `uaa` (wrapper services), with
//! or without the leading `Getting key …` line `cf service-key` prints.

use crate::generation::Generation;
use crate::x509::{InspectError, MAX_PEM_BYTES};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ServiceKeyError {
    #[error("{source_name}: {size} bytes is over the 1 MiB limit")]
    TooLarge { source_name: String, size: usize },
    #[error("{source_name}: not a service key: {reason}")]
    NotJson { source_name: String, reason: String },
    #[error("{source_name}: field `{field}`: {reason}")]
    Field {
        source_name: String,
        field: String,
        reason: String,
    },
    #[error(transparent)]
    Inspect(#[from] InspectError),
}

/// The binding id a service key document carries: the top-level `id` of a binding as
/// Service Manager and `btp get services/binding` print it (`{"id": …, "credentials": {…}}`).
/// A `cf service-key` printout has none.
pub fn binding_id(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let start = text.find('{')?;
    let value: Value = serde_json::from_str(text[start..].trim_end()).ok()?;
    let top = value.as_object()?;
    if !top.get("credentials").is_some_and(Value::is_object) {
        return None;
    }
    top.get("id").and_then(Value::as_str).map(str::to_string)
}

/// Finds the credential object in a service key document (`certificate_field`: the field
/// that tells the credential object from a wrapper).
pub fn credential_fields(
    text: &[u8],
    source_name: &str,
    certificate_field: &str,
) -> Result<Map<String, Value>, ServiceKeyError> {
    if text.len() > MAX_PEM_BYTES {
        return Err(ServiceKeyError::TooLarge {
            source_name: source_name.to_string(),
            size: text.len(),
        });
    }
    let not_json = |reason: String| ServiceKeyError::NotJson {
        source_name: source_name.to_string(),
        reason,
    };
    let text = std::str::from_utf8(text).map_err(|_| not_json("not UTF-8 text".into()))?;
    let start = text
        .find('{')
        .ok_or_else(|| not_json("no JSON object found".into()))?;
    let value: Value = serde_json::from_str(text[start..].trim_end())
        .map_err(|e| not_json(format!("invalid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(not_json("the JSON is not an object".into()));
    };
    for wrapper in ["credentials", "uaa"] {
        if let Some(Value::Object(inner)) = top.get(wrapper)
            && !top.contains_key(certificate_field)
        {
            let inner = inner.clone();
            // `{"credentials": {"uaa": {...}}}`
            if let Some(Value::Object(uaa)) = inner.get("uaa")
                && !inner.contains_key(certificate_field)
            {
                return Ok(uaa.clone());
            }
            return Ok(inner);
        }
    }
    Ok(top)
}

fn required<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    source_name: &str,
) -> Result<&'a str, ServiceKeyError> {
    match map.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(ServiceKeyError::Field {
            source_name: source_name.to_string(),
            field: field.to_string(),
            reason: "is empty".into(),
        }),
        Some(other) => Err(ServiceKeyError::Field {
            source_name: source_name.to_string(),
            field: field.to_string(),
            reason: format!("must be a string, found {}", json_type(other)),
        }),
        None => Err(ServiceKeyError::Field {
            source_name: source_name.to_string(),
            field: field.to_string(),
            reason: "is missing (is this an X.509 credential? create it with \
                     {\"credential-type\": \"x509\"})"
                .into(),
        }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a service key into a verified generation that keeps every credential field; `pem`
/// names the fields holding certificate and key.
pub fn parse_service_key(
    text: &[u8],
    source_name: &str,
    pem: &crate::config::PemFields,
) -> Result<Generation, ServiceKeyError> {
    let map = credential_fields(text, source_name, &pem.certificate)?;
    let cert = required(&map, &pem.certificate, source_name)?;
    let key = zeroize::Zeroizing::new(required(&map, &pem.key, source_name)?.to_string());
    if let Some(v) = map.get("clientid")
        && !v.is_string()
    {
        return Err(ServiceKeyError::Field {
            source_name: source_name.to_string(),
            field: "clientid".into(),
            reason: format!("must be a string, found {}", json_type(v)),
        });
    }
    let g = Generation::from_pem(
        cert.as_bytes(),
        &format!("{source_name}: field `{}`", pem.certificate),
        key.as_bytes(),
        &format!("{source_name}: field `{}`", pem.key),
    )?;
    Ok(g.with_credentials(map))
}
