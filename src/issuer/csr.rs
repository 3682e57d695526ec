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
    let key = generate_key(key_type)?;
    let mut params = CertificateParams::default();
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
