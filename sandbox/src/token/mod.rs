//! A local stand-in for XSUAA's two hosts, on 127.0.0.1 (rustls + hyper):
//!
//! - the **plain** listener (like `<subdomain>.authentication.<landscape>`): server TLS only;
//!   serves the OIDC discovery document, the JWKS at `/token_keys`, and a token endpoint that
//!   accepts only client secrets — a request without one gets 401 "Unsupported credential";
//! - the **mTLS** listener (like `<subdomain>.authentication.cert.<landscape>`): asks for a
//!   client certificate (optional at the TLS layer, so a missing one gets an HTTP 401),
//!   verifies it against the configured client CAs (expired → rejected in the handshake), and
//!   issues an ES256 JWT only to a live registration: a registered certificate fingerprint
//!   (service-managed) or any valid certificate with a registered subject and issuer DN
//!   (self-managed, pinning off). Token requests are served at `/oauth/token` and
//!   `/oauth2/token` (Identity Services' path).
//!
//! - the **Identity Authentication** host (like `<tenant>.accounts.ondemand.com`): one host
//!   for secrets and certificates (client certificate optional, verified as above); its
//!   discovery document names its own `/oauth2/token` as `token_endpoint` and has no
//!   `mtls_endpoint_aliases`, as SAP documents for IAS; tokens carry `iss`, `sub`, `aud`,
//!   `exp`, `iat`, `jti` (the client in `sub` and `aud`, no `cid`), or additionally `azp`
//!   when [`TokenHandle::ias_tokens_with_azp`] says so (both shapes occur).
//!
//! - the **Cloud Logging ingest** host (like `ingest-mtls-sf-<id>.<cluster>`): `PUT` or
//!   `POST /` with a JSON body from a client whose certificate a Cloud Logging binding issued
//!   → 200 with an empty body; a body that is not JSON → 400 "Received event is not JSON"
//!   (both as SAP documents); no or an unknown certificate → 401 (not documented by SAP).
//!
//! It records the fingerprint of every client certificate presented to a token request and
//! injects faults on demand. The server tasks are owned by [`TokenServer`] and stop when it
//! is dropped.

use super::ca::LocalCa;

/// The token server's ports on 127.0.0.1 (0 = any free one).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ports {
    /// XSUAA's `authentication.cert.` host.
    pub mtls: u16,
    /// XSUAA's `authentication.` host.
    pub plain: u16,
    /// The Identity Authentication tenant.
    pub ias: u16,
    /// Cloud Logging's ingest host.
    pub ingest: u16,
}

/// Registrations for the ingest host carry this prefix before the instance's client id.
pub const INGEST_CLIENT_PREFIX: &str = "ingest:";
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod fault;
mod routes;

pub use fault::{ALWAYS, Fault};
use routes::*;

/// A client the sandbox knows.
#[derive(Clone, Debug)]
enum Client {
    /// A registered certificate (service-managed credential, pinning on).
    Cert { id: String, fingerprint: String },
    /// Any valid certificate with this subject and issuer DN (self-managed, pinning off).
    Dn {
        id: String,
        subject: String,
        issuer: String,
    },
    /// A client secret (plain listener only).
    Secret { id: String, secret: String },
}

#[derive(Default)]
struct State {
    clients: Vec<Client>,
    revoked: HashSet<String>,
    seen: Vec<String>,
    faults: VecDeque<(Fault, usize)>,
    /// Serial number of the last token issued (`jti`).
    last_jti: u64,
    /// Tokens with a `jti` at or below this are refused by [`TokenHandle::verify_token`].
    expired_up_to: u64,
    /// Identity Authentication tokens also carry `azp`.
    ias_azp: bool,
    /// XSUAA's discovery document lists no `mtls_endpoint_aliases`.
    no_mtls_alias: bool,
    /// Token requests that met [`Fault::Held`] so far.
    held: usize,
}

impl State {
    /// Takes one use of the front fault if `pick` accepts it.
    fn take_fault(&mut self, pick: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let (f, n) = self.faults.front_mut()?;
        if !pick(f) {
            return None;
        }
        let f = f.clone();
        if *n != ALWAYS {
            *n -= 1;
            if *n == 0 {
                self.faults.pop_front();
            }
        }
        Some(f)
    }
}

/// The client certificate presented on one connection.
#[derive(Clone)]
struct Peer {
    fingerprint: String,
    subject: String,
    issuer: String,
}

/// What every connection handler shares.
struct Shared {
    state: Mutex<State>,
    signing_key: EcdsaKeyPair,
    jwks: String,
    discovery: String,
    /// The same document without `mtls_endpoint_aliases` (see
    /// [`TokenHandle::discovery_without_mtls_alias`]).
    discovery_no_alias: String,
    /// `iss` of the tokens: the plain host's token endpoint, as XSUAA.
    issuer: String,
    cert_base: String,
    plain_base: String,
    ias_base: String,
    ias_discovery: String,
    /// `127.0.0.1:<port>` of the ingest host (no scheme, as Cloud Logging's service keys).
    ingest_host: String,
    /// Open (`true`) once held requests may go on.
    gate: tokio::sync::watch::Sender<bool>,
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
#[error("sandbox token endpoint: {0}")]
pub struct SandboxError(String);

/// A running token endpoint (both listeners). Dereferences to its [`TokenHandle`].
pub struct TokenServer {
    /// `https://127.0.0.1:<mtls port>/oauth/token`
    pub url: String,
    /// `https://127.0.0.1:<mtls port>`, the `certurl` of a service key.
    pub cert_base: String,
    /// `https://127.0.0.1:<plain port>`, the `url` of a service key.
    pub plain_base: String,
    /// `https://127.0.0.1:<plain port>/.well-known/openid-configuration`
    pub discovery_url: String,
    /// `https://127.0.0.1:<ias port>`, the `url` of an Identity Authentication binding.
    pub ias_base: String,
    handle: TokenHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The registry of a running token endpoint: clients, revocations, faults, issued tokens.
/// Cheap to clone; the Service Manager stand-in holds one to register the certificates of
/// the bindings it creates.
#[derive(Clone)]
pub struct TokenHandle {
    shared: Arc<Shared>,
}

impl std::ops::Deref for TokenServer {
    type Target = TokenHandle;
    fn deref(&self) -> &TokenHandle {
        &self.handle
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

impl TokenServer {
    /// Starts both listeners on 127.0.0.1 (`port` for the mTLS listener, 0 = any; the plain
    /// listener always takes any free port) with a server certificate from `server_ca`,
    /// accepting client certificates that chain to any of `client_roots_pem`.
    pub async fn start(
        server_ca: &LocalCa,
        client_roots_pem: &[String],
        port: u16,
    ) -> Result<TokenServer, SandboxError> {
        let ports = Ports {
            mtls: port,
            ..Ports::default()
        };
        TokenServer::start_on(server_ca, client_roots_pem, ports).await
    }

    /// Like [`TokenServer::start`], each host on its own port (0 = any free one).
    pub async fn start_on(
        server_ca: &LocalCa,
        client_roots_pem: &[String],
        ports: Ports,
    ) -> Result<TokenServer, SandboxError> {
        let e = |m: &dyn std::fmt::Display| SandboxError(m.to_string());
        let (chain, key) = server_ca.loopback_identity().map_err(|x| e(&x))?;
        let mut roots = rustls::RootCertStore::empty();
        for pem in client_roots_pem {
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.map_err(|x| e(&x))?).map_err(|x| e(&x))?;
            }
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .allow_unauthenticated()
            .build()
            .map_err(|x| e(&x))?;
        let mut mtls = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|x| e(&x))?;
        mtls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut plain = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|x| e(&x))?;
        plain.alpn_protocols = vec![b"http/1.1".to_vec()];

        let mtls_listener = tokio::net::TcpListener::bind(("127.0.0.1", ports.mtls))
            .await
            .map_err(|x| e(&x))?;
        let plain_listener = tokio::net::TcpListener::bind(("127.0.0.1", ports.plain))
            .await
            .map_err(|x| e(&x))?;
        let ias_listener = tokio::net::TcpListener::bind(("127.0.0.1", ports.ias))
            .await
            .map_err(|x| e(&x))?;
        let ingest_listener = tokio::net::TcpListener::bind(("127.0.0.1", ports.ingest))
            .await
            .map_err(|x| e(&x))?;
        let ingest_host = format!(
            "127.0.0.1:{}",
            ingest_listener.local_addr().map_err(|x| e(&x))?.port()
        );
        let ias_base = format!(
            "https://127.0.0.1:{}",
            ias_listener.local_addr().map_err(|x| e(&x))?.port()
        );
        let cert_base = format!(
            "https://127.0.0.1:{}",
            mtls_listener.local_addr().map_err(|x| e(&x))?.port()
        );
        let plain_base = format!(
            "https://127.0.0.1:{}",
            plain_listener.local_addr().map_err(|x| e(&x))?.port()
        );
        let signing_key =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|x| e(&x))?;
        let point = signing_key.public_key().as_ref().to_vec();
        if point.len() != 65 {
            return Err(e(&"unexpected P-256 public key encoding"));
        }
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "sandbox-1",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }]})
        .to_string();
        let discovery_no_alias = serde_json::json!({
            "issuer": format!("{plain_base}/oauth/token"),
            "token_endpoint": format!("{plain_base}/oauth/token"),
            "jwks_uri": format!("{plain_base}/token_keys"),
            "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "tls_client_auth"],
            "grant_types_supported": ["client_credentials"],
        })
        .to_string();
        let discovery = serde_json::json!({
            "issuer": format!("{plain_base}/oauth/token"),
            "token_endpoint": format!("{plain_base}/oauth/token"),
            "jwks_uri": format!("{plain_base}/token_keys"),
            "mtls_endpoint_aliases": {"token_endpoint": format!("{cert_base}/oauth/token")},
            "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "tls_client_auth"],
            "grant_types_supported": ["client_credentials"],
        })
        .to_string();
        // As SAP documents an IAS tenant's document: mTLS uses the one token endpoint.
        let ias_discovery = serde_json::json!({
            "issuer": ias_base,
            "token_endpoint": format!("{ias_base}/oauth2/token"),
            "jwks_uri": format!("{ias_base}/oauth2/certs"),
            "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "tls_client_auth"],
            "grant_types_supported": ["client_credentials", "jwt-bearer"],
        })
        .to_string();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            signing_key,
            jwks,
            discovery,
            discovery_no_alias,
            issuer: format!("{plain_base}/oauth/token"),
            cert_base: cert_base.clone(),
            plain_base: plain_base.clone(),
            ias_base: ias_base.clone(),
            ias_discovery,
            ingest_host,
            gate: tokio::sync::watch::Sender::new(true),
        });
        let mtls = tokio_rustls::TlsAcceptor::from(Arc::new(mtls));
        let tasks = vec![
            tokio::spawn(accept_loop(
                mtls_listener,
                mtls.clone(),
                shared.clone(),
                Host::XsuaaCert,
            )),
            tokio::spawn(accept_loop(
                plain_listener,
                tokio_rustls::TlsAcceptor::from(Arc::new(plain)),
                shared.clone(),
                Host::Plain,
            )),
            tokio::spawn(accept_loop(
                ias_listener,
                mtls.clone(),
                shared.clone(),
                Host::Ias,
            )),
            tokio::spawn(accept_loop(
                ingest_listener,
                mtls,
                shared.clone(),
                Host::Ingest,
            )),
        ];
        Ok(TokenServer {
            url: format!("{cert_base}/oauth/token"),
            discovery_url: format!("{plain_base}/.well-known/openid-configuration"),
            cert_base,
            plain_base,
            ias_base,
            handle: TokenHandle { shared },
            tasks,
        })
    }

    /// A handle on the registry that outlives borrows of the server.
    pub fn handle(&self) -> TokenHandle {
        self.handle.clone()
    }
}

impl TokenHandle {
    /// `https://127.0.0.1:<mtls port>` (a service key's `certurl`).
    pub fn cert_base(&self) -> &str {
        &self.shared.cert_base
    }

    /// `https://127.0.0.1:<plain port>` (a service key's `url`).
    pub fn plain_base(&self) -> &str {
        &self.shared.plain_base
    }

    /// `127.0.0.1:<ingest port>`: a Cloud Logging binding's `ingest-mtls-endpoint`.
    pub fn ingest_host(&self) -> &str {
        &self.shared.ingest_host
    }

    /// `https://127.0.0.1:<ias port>` (an Identity Authentication binding's `url`).
    pub fn ias_base(&self) -> &str {
        &self.shared.ias_base
    }

    /// Whether XSUAA's discovery document leaves out `mtls_endpoint_aliases` (its
    /// `token_endpoint` stays the secrets host, which refuses certificates).
    pub fn discovery_without_mtls_alias(&self, on: bool) {
        lock(&self.shared.state).no_mtls_alias = on;
    }

    /// Whether the Identity Authentication host's tokens also carry `azp` (default: only
    /// `sub` and `aud` name the client, as in SAP's documented example).
    pub fn ias_tokens_with_azp(&self, on: bool) {
        lock(&self.shared.state).ias_azp = on;
    }

    /// Verifies a bearer token this endpoint issued (signature, `exp`, not expired by
    /// [`TokenHandle::expire_tokens`]) and returns its client id.
    pub fn verify_token(&self, jwt: &str) -> Option<String> {
        let (input, sig) = jwt.rsplit_once('.')?;
        let (_, payload) = input.split_once('.')?;
        let d = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            self.shared.signing_key.public_key().as_ref(),
        );
        key.verify(input.as_bytes(), &d.decode(sig).ok()?).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&d.decode(payload).ok()?).ok()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if claims["exp"].as_i64()? <= now {
            return None;
        }
        if claims["jti"].as_str()?.parse::<u64>().ok()? <= lock(&self.shared.state).expired_up_to {
            return None;
        }
        claims["cid"]
            .as_str()
            .or(claims["sub"].as_str())
            .map(str::to_string)
    }

    /// Makes every token issued so far unacceptable (as if it had expired).
    pub fn expire_tokens(&self) {
        let mut s = lock(&self.shared.state);
        s.expired_up_to = s.last_jti;
    }

    /// Registers a client certificate (by SHA-256 fingerprint) for `client_id`.
    pub fn register(&self, client_id: &str, fingerprint: &str) {
        let mut s = lock(&self.shared.state);
        s.revoked.remove(fingerprint);
        s.clients.push(Client::Cert {
            id: client_id.to_string(),
            fingerprint: fingerprint.to_string(),
        });
    }

    /// Registers `client_id` by subject and issuer DN (as `CertInfo::subject` / `issuer`
    /// print them): any valid certificate with both is accepted, without re-registration.
    pub fn register_dn(&self, client_id: &str, subject: &str, issuer: &str) {
        lock(&self.shared.state).clients.push(Client::Dn {
            id: client_id.to_string(),
            subject: subject.to_string(),
            issuer: issuer.to_string(),
        });
    }

    /// Registers a client secret, accepted by the plain listener's token endpoint.
    pub fn register_secret(&self, client_id: &str, secret: &str) {
        lock(&self.shared.state).clients.push(Client::Secret {
            id: client_id.to_string(),
            secret: secret.to_string(),
        });
    }

    /// Revokes `fingerprint`: its registrations go, and a DN registration no longer accepts
    /// it either (as deleting a binding does).
    pub fn revoke(&self, fingerprint: &str) {
        let mut s = lock(&self.shared.state);
        s.clients
            .retain(|c| !matches!(c, Client::Cert { fingerprint: f, .. } if f == fingerprint));
        s.revoked.insert(fingerprint.to_string());
    }

    /// Removes every registration of `client_id`.
    pub fn unregister(&self, client_id: &str) {
        lock(&self.shared.state).clients.retain(|c| match c {
            Client::Cert { id, .. } | Client::Dn { id, .. } | Client::Secret { id, .. } => {
                id != client_id
            }
        });
    }

    /// How many tokens this endpoint has issued (to every client, every grant).
    pub fn issued(&self) -> u64 {
        lock(&self.shared.state).last_jti
    }

    /// Fingerprints of the client certificates presented to token requests, in order.
    pub fn seen(&self) -> Vec<String> {
        lock(&self.shared.state).seen.clone()
    }

    /// Injects `fault` into the next `times` token requests ([`ALWAYS`] = every one), or
    /// connections for `Reset` and `HandshakeAbort`. Faults queue in order.
    pub fn inject(&self, fault: Fault, times: usize) {
        if times > 0 {
            lock(&self.shared.state).faults.push_back((fault, times));
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.state).faults.clear();
    }

    /// Holds the next token request until [`TokenServer::release_held`].
    pub fn hold_next(&self) {
        self.shared.gate.send_replace(false);
        self.inject(Fault::Held, 1);
    }

    /// How many token requests have met a hold so far: a test knows a run has reached its
    /// token check.
    pub fn held_requests(&self) -> usize {
        lock(&self.shared.state).held
    }

    /// Lets held token requests (and later ones meeting `Held`) go on.
    pub fn release_held(&self) {
        self.shared.gate.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs() {
        assert_eq!(
            Fault::parse_spec("status:503*3").unwrap(),
            (Fault::Status(503), 3)
        );
        assert_eq!(
            Fault::parse_spec("rate-limited:30").unwrap(),
            (
                Fault::RateLimited {
                    retry_after: "30".into()
                },
                ALWAYS
            )
        );
        assert_eq!(
            Fault::parse_spec("latency:250ms*1").unwrap(),
            (Fault::Latency(std::time::Duration::from_millis(250)), 1)
        );
        assert_eq!(
            Fault::parse_spec("handshake-abort").unwrap(),
            (Fault::HandshakeAbort, ALWAYS)
        );
        for (bad, why) in [
            ("status", "needs a value"),
            ("status:200", "400..599"),
            ("reset:1", "takes no value"),
            ("teapot", "unknown kind"),
            ("malformed*0", "1 or more"),
            ("latency:soon", "latency"),
        ] {
            let e = Fault::parse_spec(bad).unwrap_err();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn counted_faults_run_out_and_always_faults_stay() {
        let mut s = State::default();
        s.faults.push_back((Fault::Status(500), 2));
        s.faults.push_back((Fault::Malformed, ALWAYS));
        assert_eq!(s.take_fault(|_| true), Some(Fault::Status(500)));
        assert_eq!(s.take_fault(Fault::at_connection), None);
        assert_eq!(s.take_fault(|_| true), Some(Fault::Status(500)));
        for _ in 0..3 {
            assert_eq!(s.take_fault(|_| true), Some(Fault::Malformed));
        }
    }
}
