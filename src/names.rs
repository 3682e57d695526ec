//! The names certrot's targets must obey, shared by the configuration's validation and the
//! targets themselves: Kubernetes object names (Secrets, Leases, namespaces) and the file
//! names of servicebinding fields. Pure.

/// Suffix of the Secret that keeps the previous generation.
pub const PREVIOUS_SUFFIX: &str = "-previous";

/// True for a DNS-1123 subdomain (Secret and Lease names).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// The Secrets a target named `name` uses: itself and its `-previous` copy.
pub fn secret_names(name: &str) -> [String; 2] {
    [name.to_string(), format!("{name}{PREVIOUS_SUFFIX}")]
}

/// True for a DNS-1123 label (namespace names).
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

/// certrot's own files: every generation directory holds them.
pub const OWN_FILES: [&str; 4] = ["cert.pem", "key.pem", "bundle.pem", "credentials.json"];
/// The servicebinding property list (`@sap/xsenv`'s `.metadata`).
pub const METADATA: &str = ".metadata";
/// Names no credential field may take: certrot's own files, the `.metadata` file and the
/// `kubernetes.io/tls` keys of a Secret.
pub const RESERVED: [&str; 7] = [
    "cert.pem",
    "key.pem",
    "bundle.pem",
    "credentials.json",
    METADATA,
    "tls.crt",
    "tls.key",
];

/// True for a credential field name that can be a file (and a Secret key).
pub fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("orders-credentials"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("Orders"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain("a_b"));
        assert!(!is_dns_subdomain(""));
        assert!(is_dns_label("apps"));
        assert!(!is_dns_label("a.b"));
    }
}
