//! Self-made keys and certificate signing requests (rcgen): the key is born here and never
//! leaves the host; only the CSR goes to a signer. The subject is built from the
//! configuration alone, so it stays byte-for-byte stable across rotations.

use crate::config::KeyType;
use rcgen::{CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, KeyPair};
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
    use crate::dn::{parse_dn, subject};
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
