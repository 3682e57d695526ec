//! Signers: turn a CSR into a certificate chain for self-managed credentials. `local-ca`
//! signs with a CA certificate and key on disk (rcgen); `vault` asks a Vault / OpenBao PKI
//! secrets engine over HTTPS; `command` runs a program (CSR on stdin, chain on stdout), which
//! covers step-ca, cfssl, openssl and in-house CAs.

pub use super::sign::{SignError, SignRequest};
use crate::config::{LocalCaConfig, SignerConfig};
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use std::time::Duration;
use time::OffsetDateTime;

/// A serial number for a certificate this signer issues: 20 random bytes (RFC 5280's
/// maximum; 159 bits of randomness, positive and without a leading zero byte, so that no
/// two certificates of one CA share a serial). No randomness, no certificate.
fn random_serial() -> Result<rcgen::SerialNumber, &'static str> {
    let mut b = [0u8; 20];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "no random bytes for a serial number")?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&b))
}

/// A configured signer.
pub enum Signer {
    LocalCa(LocalCaSigner),
    Vault(super::vault::VaultSigner),
    Command(super::command::CommandSigner),
}

impl Signer {
    /// Loads the signer described by `cfg`.
    pub fn load(cfg: &SignerConfig) -> Result<Signer, SignError> {
        match cfg {
            SignerConfig::LocalCa(c) => Ok(Signer::LocalCa(LocalCaSigner::load(c)?)),
            SignerConfig::Vault(c) => Ok(Signer::Vault(super::vault::VaultSigner::load(c)?)),
            SignerConfig::Command(c) => {
                Ok(Signer::Command(super::command::CommandSigner::load(c)?))
            }
        }
    }

    /// Signs the CSR; returns the chain (leaf first) as PEM.
    pub async fn sign(&self, req: &SignRequest<'_>) -> Result<String, SignError> {
        match self {
            Signer::LocalCa(s) => s.sign(req.csr_pem, req.now),
            Signer::Vault(s) => s.sign(req).await,
            Signer::Command(s) => s.sign(req).await,
        }
    }
}

/// `local-ca`: a CA certificate (its own chain may follow it in the file) and its key.
pub struct LocalCaSigner {
    name: String,
    ca_pem: String,
    /// The CA certificate's own chain above it, appended to every issued leaf.
    chain_above: String,
    key: KeyPair,
    validity: Duration,
}

impl LocalCaSigner {
    pub fn load(cfg: &LocalCaConfig) -> Result<LocalCaSigner, SignError> {
        let (cert_path, key_path) = (&cfg.ca_cert, &cfg.ca_key);
        let name = format!("local-ca ({})", cert_path.display());
        let e = |m: String| SignError {
            signer: name.clone(),
            message: m,
        };
        let cert_text = String::from_utf8(crate::fsutil::read_input(cert_path).map_err(e)?)
            .map_err(|_| e(format!("{}: not PEM text", cert_path.display())))?;
        let key_text = zeroize::Zeroizing::new(
            String::from_utf8(crate::fsutil::read_input(key_path).map_err(e)?)
                .map_err(|_| e(format!("{}: not PEM text", key_path.display())))?,
        );
        let blocks =
            pem::parse_many(&cert_text).map_err(|x| e(format!("{}: {x}", cert_path.display())))?;
        let Some(first) = blocks.first() else {
            return Err(e(format!("{}: no certificate", cert_path.display())));
        };
        let ca_pem = pem::encode(first);
        let chain_above: String = blocks[1..].iter().map(pem::encode).collect();
        let key =
            KeyPair::from_pem(&key_text).map_err(|x| e(format!("{}: {x}", key_path.display())))?;
        // The key must belong to the CA certificate.
        Issuer::from_ca_cert_pem(&ca_pem, &key)
            .map_err(|x| e(format!("{}: {x}", cert_path.display())))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(first.contents())
            .map_err(|x| e(format!("{}: {x}", cert_path.display())))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(e(format!(
                "{} does not belong to the CA certificate {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        Ok(LocalCaSigner {
            name,
            ca_pem,
            chain_above,
            key,
            validity: cfg
                .validity
                .map_or(Duration::from_secs(7 * 86_400), |s| s.0),
        })
    }

    /// Signs at `now`: validity `now - 1 min .. now + validity`, clientAuth, a random serial.
    pub fn sign(&self, csr_pem: &str, now: OffsetDateTime) -> Result<String, SignError> {
        let e = |m: String| SignError {
            signer: self.name.clone(),
            message: m,
        };
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|x| e(format!("the CSR does not parse: {x}")))?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.ca_pem, &self.key).map_err(|x| e(x.to_string()))?;
        let p = &mut csr.params;
        let validity = time::Duration::try_from(self.validity).unwrap_or(time::Duration::days(7));
        // Clock-skew allowance: a minute, never a noticeable share of a short lifetime.
        p.not_before = now - (validity / 10_i32).min(time::Duration::minutes(1));
        p.not_after = now + validity;
        p.serial_number = Some(random_serial().map_err(|x| e(x.to_string()))?);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        let cert = csr.signed_by(&issuer).map_err(|x| e(x.to_string()))?;
        Ok(format!("{}{}{}", cert.pem(), self.ca_pem, self.chain_above))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn serials_are_positive_twenty_bytes_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let s = super::random_serial().unwrap();
            let b = s.to_bytes();
            assert_eq!(b.len(), 20);
            assert!(b[0] & 0x80 == 0 && b[0] != 0, "{b:?}");
            assert!(seen.insert(b), "a serial repeated");
        }
    }
}
