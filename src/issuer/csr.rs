//! Self-made keys and certificate signing requests (rcgen): the key is born here and never
//! leaves the host; only the CSR goes to a signer. The subject is built from the
//! configuration alone, so it stays byte-for-byte stable across rotations.

use crate::config::KeyType;
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};
use zeroize::Zeroizing;

/// Why a key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
#[error("key or CSR generation ({what}): {message}")]
pub struct CsrError {
    what: String,
    message: String,
}

/// A new private key with its CSR.
pub struct KeyAndCsr {
    /// PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("key_pem", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Generates a key of `key_type` (RSA takes tens of milliseconds: call from a blocking task).
pub fn generate_key(key_type: KeyType) -> Result<KeyPair, CsrError> {
    let e = |m: rcgen::Error| CsrError {
        what: format!("{key_type:?}"),
        message: m.to_string(),
    };
    match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyType::Rsa3072 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
        KeyType::Rsa4096 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        }
    }
    .map_err(e)
}

/// Parses an RFC 4514 distinguished name (`CN=orders,OU=apps,O=ACME,C=DE`; attribute types
/// CN, OU, O, L, ST, C, STREET, DC, UID, SERIALNUMBER or dotted OIDs; `\,`-style and `\XX`
/// hex escapes; multi-valued RDNs with `+` are refused). RFC 4514 lists the most specific
/// RDN first, so the DER order is the reverse; the same string always gives the same DER.
pub fn parse_dn(text: &str) -> Result<DistinguishedName, String> {
    let mut rdns: Vec<(DnType, String)> = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut ty = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            ty.push(c);
        }
        let ty = ty.trim().to_string();
        if ty.is_empty() {
            return Err(format!("{text:?}: expected TYPE=value"));
        }
        let mut value = String::new();
        let mut escaped_tail = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let a = chars
                        .next()
                        .ok_or_else(|| format!("{text:?}: dangling '\\'"))?;
                    if a.is_ascii_hexdigit() {
                        let b = chars
                            .next()
                            .filter(char::is_ascii_hexdigit)
                            .ok_or_else(|| format!("{text:?}: bad hex escape"))?;
                        let byte = u8::from_str_radix(&format!("{a}{b}"), 16)
                            .map_err(|_| format!("{text:?}: bad hex escape"))?;
                        if !byte.is_ascii() {
                            return Err(format!(
                                "{text:?}: write non-ASCII characters directly, not as hex escapes"
                            ));
                        }
                        value.push(byte as char);
                    } else {
                        value.push(a);
                    }
                    escaped_tail = true;
                }
                ',' => break,
                '+' => {
                    return Err(format!(
                        "{text:?}: multi-valued RDNs ('+') are not supported"
                    ));
                }
                c => {
                    value.push(c);
                    escaped_tail = false;
                }
            }
        }
        let value = if escaped_tail {
            value.trim_start().to_string()
        } else {
            value.trim().to_string()
        };
        if value.is_empty() {
            return Err(format!("{text:?}: {ty} has an empty value"));
        }
        let dn_type = match ty.to_ascii_uppercase().as_str() {
            "CN" => DnType::CommonName,
            "OU" => DnType::OrganizationalUnitName,
            "O" => DnType::OrganizationName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            "C" => DnType::CountryName,
            "STREET" => DnType::CustomDnType(vec![2, 5, 4, 9]),
            "SERIALNUMBER" => DnType::CustomDnType(vec![2, 5, 4, 5]),
            "DC" => DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            "UID" => DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
            t if t.contains('.') => DnType::CustomDnType(
                t.split('.')
                    .map(|p| p.parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("{text:?}: {ty} is not an OID"))?,
            ),
            _ => return Err(format!("{text:?}: unknown attribute type {ty:?}")),
        };
        if dn_type == DnType::CountryName && value.len() != 2 {
            return Err(format!("{text:?}: C must be a two-letter country code"));
        }
        rdns.push((dn_type, value));
        if chars.peek().is_none() {
            break;
        }
    }
    let mut dn = DistinguishedName::new();
    for (t, v) in rdns.into_iter().rev() {
        dn.push(t, v);
    }
    Ok(dn)
}

/// The subject certrot requests: `CN=<common_name>` plus `O=<organization>` when given.
pub fn subject(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A new key of `key_type` and a CSR for `subject` asking for `clientAuth`.
pub fn key_and_csr(key_type: KeyType, subject: DistinguishedName) -> Result<KeyAndCsr, CsrError> {
    csr_for(generate_key(key_type)?, subject, &[])
}

/// A CSR for `subject` (and `sans`: DNS names or IP addresses) with `key`, which is an
/// existing key (PEM, for `rotate_key = "never"`) or a new one of `key_type`.
pub fn key_and_csr_with(
    key_type: KeyType,
    existing_key_pem: Option<&str>,
    subject: DistinguishedName,
    sans: &[String],
) -> Result<KeyAndCsr, CsrError> {
    let key = match existing_key_pem {
        Some(pem) => KeyPair::from_pem(pem).map_err(|e| CsrError {
            what: "the current key".into(),
            message: e.to_string(),
        })?,
        None => generate_key(key_type)?,
    };
    csr_for(key, subject, sans)
}

fn csr_for(
    key: KeyPair,
    subject: DistinguishedName,
    sans: &[String],
) -> Result<KeyAndCsr, CsrError> {
    let mut params = CertificateParams::new(sans.to_vec()).map_err(|e| CsrError {
        what: "subjectAltName".into(),
        message: e.to_string(),
    })?;
    params.distinguished_name = subject;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let csr = params.serialize_request(&key).map_err(|e| CsrError {
        what: "CSR".into(),
        message: e.to_string(),
    })?;
    let csr_pem = csr.pem().map_err(|e| CsrError {
        what: "CSR".into(),
        message: e.to_string(),
    })?;
    Ok(KeyAndCsr {
        key_pem: Zeroizing::new(key.serialize_pem()),
        csr_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn rfc4514_subjects() {
        let subject_of = |dn: &str| {
            let k = key_and_csr(KeyType::EcdsaP256, parse_dn(dn).unwrap()).unwrap();
            let der = pem::parse(&k.csr_pem).unwrap();
            let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(
                der.contents(),
            )
            .unwrap();
            csr.certification_request_info.subject.to_string()
        };
        assert_eq!(
            subject_of("CN=orders,OU=apps,O=ACME,C=DE"),
            "C=DE, O=ACME, OU=apps, CN=orders"
        );
        assert_eq!(subject_of("CN=a\\,b , O = x"), "O=x, CN=a,b");
        assert_eq!(subject_of("CN=\\41pp"), "CN=App");
        for bad in ["", "CN", "CN=", "CN=a+OU=b", "XX=a", "C=DEU", "CN=a\\"] {
            assert!(parse_dn(bad).is_err(), "{bad:?}");
        }
        // Byte-for-byte stable.
        let a = key_and_csr(KeyType::EcdsaP256, parse_dn("CN=x,O=y").unwrap()).unwrap();
        let b = key_and_csr(KeyType::EcdsaP256, parse_dn("CN=x,O=y").unwrap()).unwrap();
        let subj = |p: &str| {
            let der = pem::parse(p).unwrap();
            let (_, c) = x509_parser::certification_request::X509CertificationRequest::from_der(
                der.contents(),
            )
            .unwrap();
            c.certification_request_info.subject.as_raw().to_vec()
        };
        assert_eq!(subj(&a.csr_pem), subj(&b.csr_pem));
    }

    #[test]
    fn every_key_type_makes_a_parseable_csr_with_the_subject() {
        for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
            let k = key_and_csr(kt, subject("orders", Some("ACME"))).unwrap();
            let der = pem::parse(&k.csr_pem).unwrap();
            let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(
                der.contents(),
            )
            .unwrap();
            assert_eq!(
                csr.certification_request_info.subject.to_string(),
                "O=ACME, CN=orders"
            );
            csr.verify_signature().unwrap();
            assert!(!format!("{k:?}").contains("PRIVATE KEY"));
        }
    }
}
