//! What a generation looks like on disk or in a Secret, per layout. Pure: rendering and
//! parsing, no I/O.
//!
//! - `files`: certrot's own files, `cert.pem`, `key.pem`, `bundle.pem`, `credentials.json`.
//! - `servicebinding` (servicebinding.io, as SAP's BTP service operator writes bindings and
//!   `@sap/xsenv` reads them from `SERVICE_BINDING_ROOT/<binding>/`): one file per
//!   credential field, `type`, `label` and `tags`, and `.metadata` naming every property with
//!   its format (`text`, or `json` for values that are not strings), so that a library reads
//!   `domains` back as an array and `certificate-pinning` as a boolean. certrot's own files
//!   are shown only when the operator asks for them (`show_files`): @sap/xsenv takes every
//!   file of a binding directory for a credential property.

use crate::config::{Layout, ServiceBinding};
use crate::generation::Generation;
pub use crate::names::{METADATA, OWN_FILES, RESERVED, is_field_name};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// At most this many credential fields become files (a binding is a handful; a runaway
/// answer must not become thousands of files).
pub const MAX_FIELDS: usize = 100;
/// Binding metadata (not credentials) in the servicebinding layout.
const META_PROPERTIES: [&str; 3] = ["type", "label", "tags"];

/// Name → content of each file of a generation.
pub type Files = Vec<(String, Zeroizing<Vec<u8>>)>;

/// Why a generation cannot be laid out.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum BindingError {
    #[error(
        "the credential has {count} fields; the servicebinding layout writes at most {MAX_FIELDS} (one file each)"
    )]
    TooManyFields { count: usize },
    #[error(
        "credential field {name:?} cannot be a file name in the servicebinding layout (letters, digits, '-', '_', '.'; not starting with '.'; at most 100 bytes)"
    )]
    BadFieldName { name: String },
    #[error("{METADATA}: {reason}")]
    BadMetadata { reason: String },
}

/// A generation laid out: every file it holds, and the names shown to consumers (visible
/// links of a directory target; keys of a Secret besides `tls.crt`/`tls.key`).
pub struct Rendered {
    pub files: Files,
    pub visible: Vec<String>,
}

impl Rendered {
    /// Adds a file that consumers see (the keystore).
    pub fn add_shown(&mut self, name: &str, content: Zeroizing<Vec<u8>>) {
        self.files.push((name.to_string(), content));
        self.visible.push(name.to_string());
    }
}

/// Lays out `g` in `layout`.
pub fn render(
    g: &Generation,
    layout: Layout,
    binding: &ServiceBinding,
) -> Result<Rendered, BindingError> {
    let z = |s: String| Zeroizing::new(s.into_bytes());
    let mut files: Files = vec![
        ("cert.pem".to_string(), z(g.chain_pem())),
        ("key.pem".to_string(), z(g.key_pem().to_string())),
        ("bundle.pem".to_string(), z(g.bundle_pem().to_string())),
        (
            "credentials.json".to_string(),
            z(g.credentials_json().to_string()),
        ),
    ];
    if layout == Layout::Files {
        let visible = OWN_FILES.iter().map(|s| s.to_string()).collect();
        return Ok(Rendered { files, visible });
    }
    let fields = g.library_fields();
    if fields.len() > MAX_FIELDS {
        return Err(BindingError::TooManyFields {
            count: fields.len(),
        });
    }
    let mut visible: Vec<String> = binding.show_files.clone();
    let mut credential_properties = Vec::new();
    for (k, v) in &fields {
        if !is_field_name(k) || RESERVED.contains(&k.as_str()) {
            return Err(BindingError::BadFieldName { name: k.clone() });
        }
        let (text, format) = match v {
            Value::String(s) => (s.clone(), "text"),
            other => (other.to_string(), "json"),
        };
        files.push((k.clone(), z(text)));
        visible.push(k.clone());
        credential_properties.push(json!({"name": k, "format": format}));
    }
    let mut meta_properties = Vec::new();
    for name in META_PROPERTIES {
        if fields.contains_key(name) {
            continue;
        }
        let (text, format) = if name == "tags" {
            (json!([binding.type_]).to_string(), "json")
        } else {
            (binding.type_.clone(), "text")
        };
        files.push((name.to_string(), z(text)));
        visible.push(name.to_string());
        meta_properties.push(json!({"name": name, "format": format}));
    }
    let metadata = json!({
        "metaDataProperties": meta_properties,
        "credentialProperties": credential_properties,
    });
    files.push((METADATA.to_string(), z(metadata.to_string())));
    visible.push(METADATA.to_string());
    Ok(Rendered { files, visible })
}

/// The credential fields of a servicebinding layout read back through its `.metadata`
/// (`get`: the content of a file or key). Fields listed there but absent are skipped.
pub fn parse_fields<'a>(
    get: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<Map<String, Value>, BindingError> {
    let bad = |reason: String| BindingError::BadMetadata { reason };
    let meta = get(METADATA).ok_or_else(|| bad("missing".into()))?;
    let meta: Value = serde_json::from_slice(meta).map_err(|e| bad(crate::x509::json_error(&e)))?;
    let props = meta
        .get("credentialProperties")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no credentialProperties list".into()))?;
    let mut out = Map::new();
    for p in props.iter().take(MAX_FIELDS) {
        let (Some(name), Some(format)) = (
            p.get("name").and_then(Value::as_str),
            p.get("format").and_then(Value::as_str),
        ) else {
            return Err(bad("a property without name or format".into()));
        };
        if !is_field_name(name) || RESERVED.contains(&name) {
            return Err(bad(format!("{name:?} cannot be a credential field")));
        }
        let Some(bytes) = get(name) else { continue };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| bad(format!("property {name:?} is not UTF-8")))?;
        let value = match format {
            "text" => Value::String(text.to_string()),
            "json" => serde_json::from_str(text).map_err(|e| {
                bad(format!(
                    "property {name:?}: {}",
                    crate::x509::json_error(&e)
                ))
            })?,
            other => return Err(bad(format!("property {name:?}: unknown format {other:?}"))),
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(fields: Value) -> Generation {
        let ca = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "binding test");
        let cert = p.self_signed(&ca).unwrap();
        Generation::from_pem(
            cert.pem().as_bytes(),
            "c",
            ca.serialize_pem().as_bytes(),
            "k",
        )
        .unwrap()
        .with_credentials(fields.as_object().unwrap().clone())
    }

    fn binding(show: &[&str]) -> ServiceBinding {
        ServiceBinding {
            type_: "identity".into(),
            show_files: show.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn servicebinding_shows_fields_and_metadata_not_own_files() {
        let g = generation(json!({"clientid": "c1", "domains": ["a.example"], "token_url": "x"}));
        let r = render(&g, Layout::Servicebinding, &binding(&[])).unwrap();
        let mut v = r.visible.clone();
        v.sort();
        assert_eq!(
            v,
            [
                ".metadata",
                "certificate",
                "clientid",
                "domains",
                "key",
                "label",
                "tags",
                "type"
            ]
        );
        // Every generation still holds certrot's own files (read back from there).
        for f in OWN_FILES {
            assert!(r.files.iter().any(|(n, _)| n == f), "{f}");
        }
        let get = |n: &str| {
            r.files
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_slice())
        };
        assert_eq!(get("type"), Some(&b"identity"[..]));
        assert_eq!(get("tags"), Some(&br#"["identity"]"#[..]));
        let back = parse_fields(get).unwrap();
        assert_eq!(back["domains"], json!(["a.example"]));
        assert_eq!(back["clientid"], json!("c1"));
        assert_eq!(back["certificate"], json!(g.chain_pem()));
        assert!(!back.contains_key("token_url"));
        assert!(!back.contains_key("type"));
    }

    #[test]
    fn show_files_and_files_layout() {
        let g = generation(json!({"clientid": "c1"}));
        let r = render(&g, Layout::Servicebinding, &binding(&["cert.pem"])).unwrap();
        assert!(r.visible.contains(&"cert.pem".to_string()));
        assert!(!r.visible.contains(&"credentials.json".to_string()));
        let r = render(&g, Layout::Files, &binding(&[])).unwrap();
        assert_eq!(r.visible, OWN_FILES);
        assert_eq!(r.files.len(), 4);
    }

    #[test]
    fn limits_and_bad_names_are_errors() {
        let mut many = Map::new();
        for i in 0..MAX_FIELDS {
            many.insert(format!("f{i}"), json!("v"));
        }
        let g = generation(Value::Object(many));
        assert_eq!(
            render(&g, Layout::Servicebinding, &binding(&[])).err(),
            Some(BindingError::TooManyFields {
                count: MAX_FIELDS + 2
            })
        );
        for name in ["../x", ".metadata", "cert.pem", "tls.key", "a/b", ""] {
            let g = generation(json!({ name: "v" }));
            assert_eq!(
                render(&g, Layout::Servicebinding, &binding(&[])).err(),
                Some(BindingError::BadFieldName { name: name.into() }),
                "{name}"
            );
        }
        let bad = parse_fields(|n| (n == METADATA).then_some(&b"{}"[..])).unwrap_err();
        assert!(bad.to_string().contains("credentialProperties"), "{bad}");
        let meta = br#"{"credentialProperties":[{"name":"tls.key","format":"text"}]}"#;
        let bad = parse_fields(|n| match n {
            METADATA => Some(&meta[..]),
            _ => Some(&b"x"[..]),
        })
        .unwrap_err();
        assert!(bad.to_string().contains("tls.key"), "{bad}");
    }
}
