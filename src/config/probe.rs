//! What each credential kind reads of `[credential.check]` and the credential's field
//! names: `xsuaa` and `identity` prove a generation with a token request, `generic` with an
//! mTLS probe (`check.probe_url`, `probe_method`, `accept_status`) and may name the fields
//! that hold its certificate and key. Pure.

use super::*;

/// Checks `check` and the field names against `kind`; `Err((field, message))`.
pub(super) fn kind_rules(
    kind: Kind,
    check: &CheckConfig,
    issuer: Option<&Issuer>,
    certificate_field: Option<String>,
    key_field: Option<String>,
) -> Result<PemFields, (&'static str, String)> {
    let defaults = CheckConfig::default();
    if kind != Kind::Generic {
        for (set, f) in [
            (check.probe_url.is_some(), "check.probe_url"),
            (
                check.probe_method != defaults.probe_method,
                "check.probe_method",
            ),
            (check.probe_body.is_some(), "check.probe_body"),
            (!check.probe_headers.is_empty(), "check.probe_headers"),
            (
                check.accept_status != defaults.accept_status,
                "check.accept_status",
            ),
            (certificate_field.is_some(), "certificate_field"),
            (key_field.is_some(), "key_field"),
        ] {
            if set {
                return Err((
                    f,
                    format!(
                        "is for kind = \"generic\"; a {kind} credential is proven by a token request"
                    ),
                ));
            }
        }
        return Ok(PemFields::default());
    }
    for (set, f) in [
        (check.token_url.is_some(), "check.token_url"),
        (check.discovery_url.is_some(), "check.discovery_url"),
        (check.client_id.is_some(), "check.client_id"),
        (check.app_tid.is_some(), "check.app_tid"),
    ] {
        if set {
            return Err((
                f,
                "belongs to a token request; a generic credential is proven by an mTLS probe \
                 (check.probe_url)"
                    .into(),
            ));
        }
    }
    let Some(url) = &check.probe_url else {
        return Err((
            "check.probe_url",
            "a generic credential needs check.probe_url: an https URL of the service that \
             answers a request with its client certificate (e.g. \"https://{ingest-mtls-endpoint}/\")"
                .into(),
        ));
    };
    if let Err(m) = placeholders(url).map(|_| ()) {
        return Err(("check.probe_url", m));
    }
    if !url.starts_with("https://") && !url.starts_with('{') {
        return Err((
            "check.probe_url",
            format!("{url:?} must be an https URL (or start with a {{field}} holding one)"),
        ));
    }
    if check.accept_status.is_empty()
        || check.accept_status.iter().any(|s| !(100..=599).contains(s))
    {
        return Err((
            "check.accept_status",
            format!(
                "{:?} must list HTTP statuses (100 to 599), at least one",
                check.accept_status
            ),
        ));
    }
    if let Some(bad) = check
        .accept_status
        .iter()
        .find(|s| [401, 403, 495, 496].contains(*s))
    {
        return Err((
            "check.accept_status",
            format!("{bad} means the service refused the certificate; it cannot prove it"),
        ));
    }
    if check.probe_body.is_some()
        && !matches!(check.probe_method, ProbeMethod::Post | ProbeMethod::Put)
    {
        return Err((
            "check.probe_body",
            format!(
                "a {} probe sends no body; set probe_method = \"POST\" or \"PUT\"",
                check.probe_method.name()
            ),
        ));
    }
    for (name, value) in &check.probe_headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err((
                "check.probe_headers",
                format!("{name:?} is not an HTTP header name"),
            ));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err((
                "check.probe_headers",
                format!("the value of {name:?} has control characters"),
            ));
        }
        if [
            "host",
            "content-length",
            "authorization",
            "transfer-encoding",
        ]
        .contains(&name.to_ascii_lowercase().as_str())
        {
            return Err((
                "check.probe_headers",
                format!("{name:?} is set by certrot or would carry a secret in the configuration"),
            ));
        }
    }
    if let Some(Issuer::Csr(_)) = issuer {
        return Err((
            "issuer.type",
            "a generic credential gets its certificates from Service Manager bindings \
             (type = \"service-manager\", service-managed)"
                .into(),
        ));
    }
    // The usual names are not copied into every credential.
    let name = |v: Option<String>, default: &'static str, field: &'static str| match v {
        None => Ok(std::borrow::Cow::Borrowed(default)),
        Some(n) if n == default => Ok(std::borrow::Cow::Borrowed(default)),
        Some(n) if crate::names::is_field_name(&n) => Ok(std::borrow::Cow::Owned(n)),
        Some(n) => Err((
            field,
            format!("{n:?} is not a field name (letters, digits, '-', '_', '.')"),
        )),
    };
    let pem = PemFields {
        certificate: name(certificate_field, "certificate", "certificate_field")?,
        key: name(key_field, "key", "key_field")?,
    };
    if pem.certificate == pem.key {
        return Err((
            "key_field",
            "names the same field as certificate_field".into(),
        ));
    }
    Ok(pem)
}

/// The `{field}` names in a probe URL, in order; an unclosed or empty `{` is an error.
pub fn placeholders(url: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("{url:?}: a {{ without its }}"));
        };
        let name = &after[..close];
        if !crate::names::is_field_name(name) {
            return Err(format!("{url:?}: {{{name}}} is not a field name"));
        }
        out.push(name);
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// `url` with every `{field}` replaced by that string field of `fields`.
pub fn expand_probe_url(
    url: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, String> {
    let mut out = url.to_string();
    for name in placeholders(url)? {
        let value = fields
            .get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                format!("check.probe_url names {{{name}}}, which the credential fields do not have as a string")
            })?;
        out = out.replacen(&format!("{{{name}}}"), value.trim_end_matches('/'), 1);
    }
    if !out.starts_with("https://") {
        return Err(format!("the probe URL {out:?} is not https"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probe_urls_expand_credential_fields() {
        let f = json!({"ingest-mtls-endpoint": "https://ingest.example/", "n": 3});
        let f = f.as_object().unwrap();
        assert_eq!(
            expand_probe_url("{ingest-mtls-endpoint}/v1/logs", f).unwrap(),
            "https://ingest.example/v1/logs"
        );
        assert_eq!(
            expand_probe_url("https://fixed.example/x", f).unwrap(),
            "https://fixed.example/x"
        );
        assert!(
            expand_probe_url("{missing}/x", f)
                .unwrap_err()
                .contains("{missing}")
        );
        assert!(expand_probe_url("{n}/x", f).is_err());
        assert!(placeholders("https://a/{x").is_err());
        assert!(placeholders("https://a/{}").is_err());
        let plain = json!({"u": "http://plain.example"});
        assert!(
            expand_probe_url("{u}/x", plain.as_object().unwrap())
                .unwrap_err()
                .contains("https")
        );
    }
}
