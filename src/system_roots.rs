//! The system's trusted root certificates, read once and shared by every client of a run.
//!
//! They are read as rustls' platform verifier reads them on Linux (rustls-native-certs:
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the distribution's store), keeping the
//! certificates that parse as trust anchors. Reading them costs about 2 ms and a file per
//! root (some 150), which every token check, probe and Service Manager client paid again;
//! now they are read at most once every [`READ_AGAIN_AFTER`], so a long-running daemon also
//! sees an updated store within that time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the roots read are used before the store is read again.
pub const READ_AGAIN_AFTER: Duration = Duration::from_secs(600);

/// The roots last read, and when.
static READ: Mutex<Option<(Instant, Arc<[reqwest::Certificate]>)>> = Mutex::new(None);

/// The system's roots (possibly none: the caller decides whether other roots suffice).
pub fn system_roots() -> Arc<[reqwest::Certificate]> {
    let mut read = READ.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((at, roots)) = read.as_ref()
        && at.elapsed() < READ_AGAIN_AFTER
    {
        return roots.clone();
    }
    let roots: Arc<[reqwest::Certificate]> = load().into();
    *read = Some((Instant::now(), roots.clone()));
    roots
}

fn load() -> Vec<reqwest::Certificate> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("reading the system's root certificates: {e}");
    }
    let mut skipped = 0;
    let roots: Vec<reqwest::Certificate> = found
        .certs
        .iter()
        .filter(|der| {
            // What a root store accepts as a trust anchor; others are skipped, as the
            // platform verifier skips them.
            let parses = webpki_anchor(der);
            skipped += usize::from(!parses);
            parses
        })
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect();
    if skipped > 0 {
        tracing::warn!("{skipped} of the system's root certificates do not parse and are skipped");
    }
    roots
}

fn webpki_anchor(der: &rustls_pki_types::CertificateDer<'_>) -> bool {
    rustls::RootCertStore::empty().add(der.clone()).is_ok()
}

#[cfg(test)]
mod tests {
    /// Within `READ_AGAIN_AFTER`, every client gets the roots of the one read.
    #[test]
    fn the_store_is_read_once_per_period() {
        let a = super::system_roots();
        let b = super::system_roots();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
    }
}
