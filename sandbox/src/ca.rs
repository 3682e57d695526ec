//! A local certificate authority (rcgen): a root, optionally an intermediate, and client
//! certificates with any lifetime, for the demo, tests and benchmarks.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// Key algorithms the sandbox can issue for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    EcdsaP256,
    Rsa2048,
    Rsa4096,
}

/// An error from rcgen while making keys or certificates.
#[derive(Debug, thiserror::Error)]
#[error("sandbox CA: {0}")]
pub struct CaError(String);

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError(e.to_string())
    }
}

/// A client certificate chain and its key, as PEM.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// A root CA, and an intermediate that signs leaves when `with_intermediate` was used.
pub struct LocalCa {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: Option<CertifiedIssuer<'static, KeyPair>>,
}

/// A random positive 20-byte serial (rcgen's default repeats for the same key).
pub fn random_serial() -> SerialNumber {
    let mut b = [0u8; 20];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        let t = OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes();
        b[..16].copy_from_slice(&t);
    }
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "certrot sandbox");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    p
}

impl LocalCa {
    /// A new root CA with an ECDSA P-256 key.
    pub fn new(name: &str) -> Result<LocalCa, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(LocalCa {
            root: CertifiedIssuer::self_signed(ca_params(name, None), key)?,
            intermediate: None,
        })
    }

    /// A root plus an intermediate: leaves come with a 3-certificate chain.
    pub fn with_intermediate(name: &str) -> Result<LocalCa, CaError> {
        let mut ca = LocalCa::new(name)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(&format!("{name} intermediate"), Some(0));
        ca.intermediate = Some(CertifiedIssuer::signed_by(params, key, &ca.root)?);
        Ok(ca)
    }

    /// The root certificate (the file clients trust).
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses), valid for a year.
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(365);
        let issuer = self.intermediate.as_ref().unwrap_or(&self.root);
        let cert = p.signed_by(&key, issuer)?;
        let mut chain_pem = cert.pem();
        if let Some(i) = &self.intermediate {
            chain_pem.push_str(&i.pem());
        }
        Ok(Issued {
            chain_pem,
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// A server certificate for 127.0.0.1 and localhost as rustls wants it: chain and key.
    pub fn loopback_identity(
        &self,
    ) -> Result<
        (
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        ),
        CaError,
    > {
        use rustls_pki_types::pem::PemObject;
        let server = self.issue_server(&["127.0.0.1", "localhost"])?;
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(server.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| CaError(e.to_string()))?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())
            .map_err(|e| CaError(e.to_string()))?;
        Ok((chain, key))
    }

    /// Issues a client certificate for `cn`, valid from `not_before` to `not_after`.
    pub fn issue(
        &self,
        cn: &str,
        alg: KeyAlg,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        self.issue_for_key(cn, &generate_key(alg)?, not_before, not_after)
    }

    /// Issues a client certificate for `cn` on an existing key (the Service Manager stand-in
    /// draws on a pool of pre-generated RSA keys).
    pub fn issue_for_key(
        &self,
        cn: &str,
        key: &KeyPair,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "certrot sandbox");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial());
        p.not_before = not_before;
        p.not_after = not_after;
        let issuer = self.intermediate.as_ref().unwrap_or(&self.root);
        let cert = p.signed_by(key, issuer)?;
        let mut chain_pem = cert.pem();
        if let Some(i) = &self.intermediate {
            chain_pem.push_str(&i.pem());
            chain_pem.push_str(&self.root.pem());
        }
        Ok(Issued {
            chain_pem,
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// A new key pair of `alg`.
pub fn generate_key(alg: KeyAlg) -> Result<KeyPair, CaError> {
    Ok(match alg {
        KeyAlg::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyAlg::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
        KeyAlg::Rsa4096 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?
        }
    })
}
