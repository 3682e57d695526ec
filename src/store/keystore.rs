//! `keystore.p12`: a generation as a PKCS#12 keystore for Java consumers (`p12-keystore`,
//! pure Rust): one key entry under the configured alias holding the private key and the
//! chain, leaf first. Encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and protected by
//! an HMAC-SHA256 MAC, which OpenSSL 3 and Java 8u301 / 11.0.12 / 17 and later read without
//! legacy options. [`pkcs12`] is pure; [`seal`] reads the password file.

use super::TargetError;
use crate::config::Keystore;
use crate::generation::Generation;
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use zeroize::Zeroizing;

/// The keystore's name in a directory target and its key in a Secret.
pub const KEYSTORE_FILE: &str = "keystore.p12";

/// PBKDF2 iterations for the encryption and the MAC (OpenSSL 3's default is 2048).
const ITERATIONS: u32 = 10_000;

/// The keystore of `g`: key and chain under `alias`, encrypted with `password`.
pub fn pkcs12(g: &Generation, alias: &str, password: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let key = PrivateKey::from_der(g.key_pkcs8_der())
        .map_err(|e| format!("the private key cannot go into a keystore: {e}"))?;
    let certs = g
        .chain_der()
        .map(Certificate::from_der)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a certificate cannot go into a keystore: {e}"))?;
    // The local key id ties the key to its certificate: the leaf's SHA-256 fingerprint.
    let local_key_id = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, g.leaf_der())
        .as_ref()
        .to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map(Zeroizing::new)
        .map_err(|e| format!("writing the keystore failed: {e}"))
}

/// The password in `path`: its content up to one trailing newline (`\n` or `\r\n`); UTF-8,
/// not empty.
pub fn read_password(path: &std::path::Path) -> Result<Zeroizing<String>, String> {
    let bytes = Zeroizing::new(crate::fsutil::read_input(path)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{}: the keystore password is not UTF-8", path.display()))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(format!(
            "{}: the keystore password file is empty",
            path.display()
        ));
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// The keystore of `g` for the target at `place`, with the password read from its file now.
pub fn seal(g: &Generation, k: &Keystore, place: &str) -> Result<Zeroizing<Vec<u8>>, TargetError> {
    let fail = |reason: String| TargetError::Keystore {
        place: place.to_string(),
        reason,
    };
    let password = read_password(&k.password_file).map_err(fail)?;
    pkcs12(g, &k.alias, &password).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p12_keystore::Pkcs12ImportPolicy;

    fn generation() -> Generation {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "ks ca");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec![]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "ks leaf");
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
        Generation::from_pem(chain.as_bytes(), "c", key.serialize_pem().as_bytes(), "k").unwrap()
    }

    #[test]
    fn the_keystore_holds_key_and_chain_under_the_alias_and_needs_the_password() {
        let g = generation();
        let p12 = pkcs12(&g, "orders", "s3cret pass").unwrap();
        let back = KeyStore::from_pkcs12(&p12, "s3cret pass", Pkcs12ImportPolicy::Strict).unwrap();
        let (alias, chain) = back.private_key_chain().unwrap();
        assert_eq!(alias, "orders");
        assert_eq!(chain.key().as_der(), g.key_pkcs8_der());
        let ders: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
        assert_eq!(ders, g.chain_der().collect::<Vec<_>>());
        assert!(KeyStore::from_pkcs12(&p12, "wrong", Pkcs12ImportPolicy::Strict).is_err());
    }

    #[test]
    fn the_password_file_loses_one_trailing_newline_and_may_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        for (content, want) in [
            ("a b\n", Some("a b")),
            ("x\r\n", Some("x")),
            ("y\n\n", Some("y\n")),
            ("\n", None),
            ("", None),
        ] {
            std::fs::write(&p, content).unwrap();
            let got = read_password(&p);
            assert_eq!(got.as_ref().ok().map(|s| s.as_str()), want, "{content:?}");
            if want.is_none() {
                assert!(got.unwrap_err().contains("empty"));
            }
        }
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_password(&p).unwrap_err().contains("not UTF-8"));
        let missing = read_password(&dir.path().join("nope")).unwrap_err();
        assert!(missing.contains("nope"), "{missing}");
    }
}
