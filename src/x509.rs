//! Certificate and private-key inspection (pure): parse a PEM chain in any order and a
//! private key (PKCS#8, PKCS#1 RSA or SEC1 EC), find the leaf as the certificate whose public
//! key matches the key, order the chain leaf first, and describe each certificate.
//!
//! Nothing here touches disk or network. Inputs over [`MAX_PEM_BYTES`] are refused; every
//! error names the input it came from (a file path or a service-key field).

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use std::borrow::Cow;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

/// PEM inputs (chains, keys, service keys) above this size are refused.
pub const MAX_PEM_BYTES: usize = 1 << 20;

/// Why a chain or key could not be inspected. `source` names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("{input}: {size} bytes is over the 1 MiB limit")]
    TooLarge { input: String, size: usize },
    #[error("{input}: no PEM \"CERTIFICATE\" block found")]
    NoCertificate { input: String },
    #[error("{input}: malformed PEM: {reason}")]
    BadPem { input: String, reason: String },
    #[error("{input}: certificate {index} is not a valid X.509 certificate: {reason}")]
    BadCertificate {
        input: String,
        index: usize,
        reason: String,
    },
    #[error(
        "{input}: no private key found (expected \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"
    )]
    NoKey { input: String },
    #[error("{input}: the private key is encrypted; certrot needs an unencrypted key")]
    EncryptedKey { input: String },
    #[error("{input}: the private key is not usable: {reason}")]
    BadKey { input: String, reason: String },
    #[error("{input}: the private key matches none of the {count} certificate(s) in {chain}")]
    KeyMismatch {
        input: String,
        chain: String,
        count: usize,
    },
}

/// What certrot reports about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// SHA-256 of the DER encoding, colon-separated upper-case hex (as `openssl -fingerprint`).
    pub fingerprint_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: time::OffsetDateTime,
    /// e.g. `RSA 2048`, `ECDSA P-256`.
    pub key_type: String,
    pub is_ca: bool,
}

/// One parsed certificate: its DER and what we need to link and match it.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    pub der: Vec<u8>,
    pub info: CertInfo,
    subject_raw: Vec<u8>,
    issuer_raw: Vec<u8>,
    key_bits: Vec<u8>,
}

/// A private key, normalised to PKCS#8, with its public key. Redacting `Debug`.
pub struct ParsedKey {
    pkcs8: Zeroizing<Vec<u8>>,
    key_bits: Vec<u8>,
    pub key_type: String,
}

impl std::fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedKey({}, [REDACTED])", self.key_type)
    }
}

impl ParsedKey {
    /// The key as a PKCS#8 PEM block.
    pub fn pkcs8_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem_block("PRIVATE KEY", &self.pkcs8))
    }
    /// The key as PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }
}

/// A chain ordered leaf first, with the matching key.
#[derive(Debug)]
pub struct Inspected {
    pub chain: Vec<ParsedCert>,
    pub key: ParsedKey,
    /// True when every certificate after the leaf issued the one before it.
    pub chain_linked: bool,
}

impl Inspected {
    pub fn leaf(&self) -> &CertInfo {
        &self.chain[0].info
    }
    /// The ordered chain as PEM text.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| pem_block("CERTIFICATE", &c.der))
            .collect()
    }
}

/// Encodes DER as one PEM block with `\n` line endings.
pub fn pem_block(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Turns literal `\n` sequences (as copied from JSON or environment variables) into newlines.
pub fn normalise_newlines(text: &[u8]) -> Cow<'_, [u8]> {
    if text.windows(2).any(|w| w == b"\\n") {
        let s = String::from_utf8_lossy(text)
            .replace("\\r\\n", "\n")
            .replace("\\n", "\n");
        Cow::Owned(s.into_bytes())
    } else {
        Cow::Borrowed(text)
    }
}

fn check_size(bytes: &[u8], source: &str) -> Result<(), InspectError> {
    if bytes.len() > MAX_PEM_BYTES {
        return Err(InspectError::TooLarge {
            input: source.to_string(),
            size: bytes.len(),
        });
    }
    Ok(())
}

fn hex_colon(bytes: &[u8], upper: bool) -> String {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(digits[(b >> 4) as usize] as char);
        out.push(digits[(b & 0x0f) as usize] as char);
    }
    out
}

/// A JSON parse error without the text it was parsing (serde_json quotes offending string
/// values, which may hold a key): its category and position only.
pub fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not a JSON object of the expected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// SHA-256 fingerprint of DER bytes, as certrot prints it.
pub fn fingerprint(der: &[u8]) -> String {
    hex_colon(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref(),
        true,
    )
}

fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let curve = || {
        spki.algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| curve_name(&oid.to_id_string()).to_string())
            .unwrap_or_else(|| "unknown curve".into())
    };
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => format!("ECDSA {}", curve()),
        _ => match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "Ed25519".into(),
            other => format!("unknown ({other})"),
        },
    }
}

fn parse_one(der: &[u8], index: usize, source: &str) -> Result<ParsedCert, InspectError> {
    let bad = |reason: String| InspectError::BadCertificate {
        input: source.to_string(),
        index,
        reason,
    };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the certificate".into()));
    }
    let v = cert.validity();
    let info = CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: hex_colon(cert.raw_serial(), false),
        fingerprint_sha256: fingerprint(der),
        not_before: v.not_before.to_datetime(),
        not_after: v.not_after.to_datetime(),
        key_type: describe_key(cert.public_key()),
        is_ca: cert.is_ca(),
    };
    Ok(ParsedCert {
        der: der.to_vec(),
        info,
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        key_bits: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// Parses every `CERTIFICATE` block in `text` (other blocks, such as a key, are skipped).
pub fn parse_chain(text: &[u8], source: &str) -> Result<Vec<ParsedCert>, InspectError> {
    check_size(text, source)?;
    let text = normalise_newlines(text);
    let mut certs = Vec::new();
    // Certificates are public, so they take the fast base64 decoder of x509-parser; only
    // CERTIFICATE blocks are decoded here (a bundle's key block is left to `parse_key`,
    // which uses the constant-time decoder).
    for block in certificate_blocks(&text) {
        let bad_pem = |reason: String| InspectError::BadPem {
            input: source.to_string(),
            reason,
        };
        let block = block.map_err(|()| bad_pem("a CERTIFICATE block has no END line".into()))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(block).map_err(|e| bad_pem(e.to_string()))?;
        certs.push(parse_one(&pem.contents, certs.len() + 1, source)?);
    }
    if certs.is_empty() {
        return Err(InspectError::NoCertificate {
            input: source.to_string(),
        });
    }
    Ok(certs)
}

const BEGIN_CERT: &[u8] = b"-----BEGIN CERTIFICATE-----";
const END_CERT: &[u8] = b"-----END CERTIFICATE-----";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The `-----BEGIN CERTIFICATE-----` … `-----END CERTIFICATE-----` slices of `text`.
fn certificate_blocks(text: &[u8]) -> impl Iterator<Item = Result<&[u8], ()>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = find(rest, BEGIN_CERT)?;
        let from = &rest[start..];
        match find(from, END_CERT) {
            Some(end) => {
                let block = &from[..end + END_CERT.len()];
                rest = &from[end + END_CERT.len()..];
                Some(Ok(block))
            }
            None => {
                rest = &[];
                Some(Err(()))
            }
        }
    })
}

fn spki_bits(spki_der: &[u8]) -> Option<Vec<u8>> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    Some(spki.subject_public_key.data.to_vec())
}

fn ec_algs() -> [(&'static signature::EcdsaSigningAlgorithm, &'static str); 3] {
    [
        (&signature::ECDSA_P256_SHA256_ASN1_SIGNING, "ECDSA P-256"),
        (&signature::ECDSA_P384_SHA384_ASN1_SIGNING, "ECDSA P-384"),
        (&signature::ECDSA_P521_SHA512_ASN1_SIGNING, "ECDSA P-521"),
    ]
}

/// Parses the first private key in `text` and normalises it to PKCS#8.
pub fn parse_key(text: &[u8], source: &str) -> Result<ParsedKey, InspectError> {
    check_size(text, source)?;
    let text = normalise_newlines(text);
    let der = match PrivateKeyDer::from_pem_slice(&text) {
        Ok(d) => d,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            let encrypted = text
                .windows(b"ENCRYPTED PRIVATE KEY".len())
                .any(|w| w == b"ENCRYPTED PRIVATE KEY");
            return Err(if encrypted {
                InspectError::EncryptedKey {
                    input: source.to_string(),
                }
            } else {
                InspectError::NoKey {
                    input: source.to_string(),
                }
            });
        }
        Err(e) => {
            return Err(InspectError::BadPem {
                input: source.to_string(),
                reason: e.to_string(),
            });
        }
    };
    let bad = |reason: &str| InspectError::BadKey {
        input: source.to_string(),
        reason: reason.to_string(),
    };
    let (pkcs8, spki, key_type): (Vec<u8>, Vec<u8>, String) = match &der {
        PrivateKeyDer::Pkcs1(k) => {
            let kp = RsaKeyPair::from_der(k.secret_pkcs1_der())
                .map_err(|e| bad(&format!("RSA key rejected: {e}")))?;
            rsa_parts(&kp).ok_or_else(|| bad("RSA key could not be encoded"))?
        }
        PrivateKeyDer::Sec1(k) => ec_algs()
            .into_iter()
            .find_map(|(alg, name)| {
                let kp = EcdsaKeyPair::from_private_key_der(alg, k.secret_sec1_der()).ok()?;
                let p8 = kp.to_pkcs8v1().ok()?.as_ref().to_vec();
                let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().ok()?;
                Some((p8, spki.as_ref().to_vec(), name.to_string()))
            })
            .ok_or_else(|| bad("EC key on an unsupported curve or malformed"))?,
        PrivateKeyDer::Pkcs8(k) => {
            let p8 = k.secret_pkcs8_der();
            // Pick the loader from the algorithm identifier: a failed attempt with the wrong
            // loader costs as much as a successful one.
            let (alg, curve) =
                pkcs8_algorithm(p8).ok_or_else(|| bad("not a PKCS#8 private key"))?;
            match alg.as_str() {
                OID_RSA => {
                    let kp = RsaKeyPair::from_pkcs8(p8)
                        .map_err(|e| bad(&format!("RSA key rejected: {e}")))?;
                    rsa_parts(&kp).ok_or_else(|| bad("RSA key could not be encoded"))?
                }
                OID_EC => ec_algs()
                    .into_iter()
                    .filter(|(_, name)| {
                        curve.as_deref().is_none_or(|c| curve_name(c) == &name[6..])
                    })
                    .find_map(|(alg, name)| {
                        let kp = EcdsaKeyPair::from_pkcs8(alg, p8).ok()?;
                        let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().ok()?;
                        Some((p8.to_vec(), spki.as_ref().to_vec(), name.to_string()))
                    })
                    .ok_or_else(|| bad("EC key on an unsupported curve or malformed"))?,
                OID_ED25519 => {
                    let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(p8)
                        .map_err(|e| bad(&format!("Ed25519 key rejected: {e}")))?;
                    let spki: PublicKeyX509Der<'static> = kp
                        .public_key()
                        .as_der()
                        .map_err(|_| bad("Ed25519 key could not be encoded"))?;
                    (p8.to_vec(), spki.as_ref().to_vec(), "Ed25519".to_string())
                }
                other => {
                    return Err(bad(&format!(
                        "algorithm {other} is not RSA, ECDSA (P-256/384/521) or Ed25519"
                    )));
                }
            }
        }
        _ => return Err(bad("unsupported key format")),
    };
    let key_bits = spki_bits(&spki).ok_or_else(|| bad("public key could not be derived"))?;
    Ok(ParsedKey {
        pkcs8: Zeroizing::new(pkcs8),
        key_bits,
        key_type,
    })
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

/// The algorithm OID of a PKCS#8 key and, for EC keys, the curve OID.
fn pkcs8_algorithm(p8: &[u8]) -> Option<(String, Option<String>)> {
    let (_, obj) = x509_parser::der_parser::parse_der(p8).ok()?;
    let seq = obj.as_sequence().ok()?;
    let alg = seq.get(1)?.as_sequence().ok()?;
    let oid = alg.first()?.as_oid().ok()?.to_id_string();
    let params = alg
        .get(1)
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    Some((oid, params))
}

fn curve_name(oid: &str) -> &str {
    match oid {
        "1.2.840.10045.3.1.7" => "P-256",
        "1.3.132.0.34" => "P-384",
        "1.3.132.0.35" => "P-521",
        other => other,
    }
}

fn rsa_parts(kp: &RsaKeyPair) -> Option<(Vec<u8>, Vec<u8>, String)> {
    let p8: Pkcs8V1Der<'static> = kp.as_der().ok()?;
    let spki: PublicKeyX509Der<'static> = kp.public_key().as_der().ok()?;
    Some((
        p8.as_ref().to_vec(),
        spki.as_ref().to_vec(),
        format!("RSA {}", kp.public_modulus_len() * 8),
    ))
}

/// Finds the leaf for `key` among `certs` and orders the chain leaf first by issuer links.
pub fn assemble(
    mut certs: Vec<ParsedCert>,
    key: ParsedKey,
    chain_source: &str,
    key_source: &str,
) -> Result<Inspected, InspectError> {
    let count = certs.len();
    let Some(leaf_at) = certs.iter().position(|c| c.key_bits == key.key_bits) else {
        return Err(InspectError::KeyMismatch {
            input: key_source.to_string(),
            chain: chain_source.to_string(),
            count,
        });
    };
    let mut ordered = vec![certs.remove(leaf_at)];
    let mut linked = true;
    while !certs.is_empty() {
        let last = &ordered[ordered.len() - 1];
        if last.issuer_raw == last.subject_raw {
            break; // self-signed: nothing issues it
        }
        match certs.iter().position(|c| c.subject_raw == last.issuer_raw) {
            Some(i) => ordered.push(certs.remove(i)),
            None => break,
        }
    }
    if !certs.is_empty() {
        linked = false;
        ordered.append(&mut certs);
    }
    Ok(Inspected {
        chain: ordered,
        key,
        chain_linked: linked,
    })
}

/// Parses chain and key and assembles them: the whole inspection in one call.
pub fn inspect(
    chain_text: &[u8],
    chain_source: &str,
    key_text: &[u8],
    key_source: &str,
) -> Result<Inspected, InspectError> {
    let certs = parse_chain(chain_text, chain_source)?;
    let key = parse_key(key_text, key_source)?;
    assemble(certs, key, chain_source, key_source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certrot_sandbox::ca::{KeyAlg, LocalCa};
    use time::{Duration, OffsetDateTime};

    /// Unwraps PKCS#8 to the inner PKCS#1 (RSA) or SEC1 (EC) key.
    fn inner_key(pkcs8_pem: &str) -> Vec<u8> {
        let der = PrivateKeyDer::from_pem_slice(pkcs8_pem.as_bytes()).unwrap();
        let (_, obj) = x509_parser::der_parser::parse_der(der.secret_der()).unwrap();
        let seq = obj.as_sequence().unwrap();
        seq[2].as_slice().unwrap().to_vec()
    }

    fn issued(alg: KeyAlg) -> (LocalCa, certrot_sandbox::ca::Issued) {
        let ca = LocalCa::with_intermediate("x509 test CA").unwrap();
        let now = OffsetDateTime::now_utc();
        let i = ca.issue("leaf", alg, now, now + Duration::days(7)).unwrap();
        (ca, i)
    }

    #[test]
    fn hex_rendering() {
        assert_eq!(hex_colon(&[0x0a, 0xff, 0x00], true), "0A:FF:00");
        assert_eq!(hex_colon(&[0x0a, 0xff], false), "0a:ff");
        assert_eq!(hex_colon(&[], false), "");
    }

    #[test]
    fn any_order_chain_is_ordered_leaf_first() {
        let (_, i) = issued(KeyAlg::EcdsaP256);
        let blocks: Vec<&str> = i
            .chain_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .collect();
        let shuffled = format!("{}{}{}", blocks[2], blocks[0], blocks[1]);
        let ins = inspect(shuffled.as_bytes(), "c", i.key_pem.as_bytes(), "k").unwrap();
        assert!(ins.chain_linked);
        assert_eq!(ins.chain_pem(), i.chain_pem);
        assert_eq!(ins.leaf().subject, "O=certrot sandbox, CN=leaf");
        assert_eq!(ins.leaf().key_type, "ECDSA P-256");
        assert_eq!(ins.chain.len(), 3);
        assert!(ins.chain[2].info.is_ca);
    }

    #[test]
    fn pkcs1_and_sec1_keys_are_accepted_and_normalised() {
        for (alg, tag, kind) in [
            (KeyAlg::Rsa2048, "RSA PRIVATE KEY", "RSA 2048"),
            (KeyAlg::EcdsaP256, "EC PRIVATE KEY", "ECDSA P-256"),
        ] {
            let (_, i) = issued(alg);
            let legacy = pem_block(tag, &inner_key(&i.key_pem));
            let ins = inspect(i.chain_pem.as_bytes(), "c", legacy.as_bytes(), "k").unwrap();
            assert_eq!(ins.key.key_type, kind);
            assert!(
                ins.key
                    .pkcs8_pem()
                    .starts_with("-----BEGIN PRIVATE KEY-----")
            );
            // The normalised key parses to the same key.
            let again = parse_key(ins.key.pkcs8_pem().as_bytes(), "k2").unwrap();
            assert_eq!(again.key_bits, ins.key.key_bits);
        }
    }

    #[test]
    fn literal_newlines_and_mismatch() {
        let (_, i) = issued(KeyAlg::EcdsaP256);
        let (_, other) = issued(KeyAlg::EcdsaP256);
        let esc = |s: &str| s.replace('\n', "\\n");
        assert!(
            inspect(
                esc(&i.chain_pem).as_bytes(),
                "c",
                esc(&i.key_pem).as_bytes(),
                "k"
            )
            .is_ok()
        );
        let e = inspect(
            i.chain_pem.as_bytes(),
            "chain.pem",
            other.key_pem.as_bytes(),
            "key.pem",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "key.pem: the private key matches none of the 3 certificate(s) in chain.pem"
        );
        let big = vec![b'a'; MAX_PEM_BYTES + 1];
        assert_eq!(
            parse_chain(&big, "big.pem").unwrap_err().to_string(),
            format!(
                "big.pem: {} bytes is over the 1 MiB limit",
                MAX_PEM_BYTES + 1
            )
        );
    }
}
