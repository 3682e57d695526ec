//! The whole stand-in in one value: a CA, the token endpoint (both hosts) and the Service
//! Manager API wired together, with ready-made Service Manager access keys. Used by
//! `certrot sandbox`, the demo, the tests and the benchmarks.

use super::ca::{KeyAlg, LocalCa};
use super::sm::{SmOptions, SmServer};
use super::token::{Ports, TokenServer};
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Client id of the Service Manager's own OAuth client (secret flavour).
pub const SM_CLIENT: &str = "sb-sm!b1";
/// Its secret. Sandbox only.
pub const SM_SECRET: &str = "sandbox-sm-secret";
/// Client id of the x509-flavour Service Manager access.
pub const SM_X509_CLIENT: &str = "sb-sm-x509!b1";

/// The running stand-ins.
pub struct Stack {
    pub ca: Arc<LocalCa>,
    /// The CA file to trust for every sandbox server (PEM).
    pub ca_pem: String,
    pub tokens: TokenServer,
    pub sm: SmServer,
}

impl Stack {
    /// Starts the token endpoint (mTLS port `port`, 0 = any) and the Service Manager API.
    pub async fn start(port: u16, opts: SmOptions) -> Result<Stack, String> {
        Stack::start_trusting(port, opts, &[]).await
    }

    /// Like [`Stack::start`], also trusting client certificates from `extra_roots` (PEM), as
    /// XSUAA trusts the CAs of self-managed certificates.
    pub async fn start_trusting(
        port: u16,
        opts: SmOptions,
        extra_roots: &[String],
    ) -> Result<Stack, String> {
        let ports = Ports {
            mtls: port,
            ..Ports::default()
        };
        Stack::start_on(ports, opts, extra_roots).await
    }

    /// Like [`Stack::start_trusting`], every token host on a port of `ports` and Service
    /// Manager on `opts.port` (0 = any free one).
    pub async fn start_on(
        ports: Ports,
        opts: SmOptions,
        extra_roots: &[String],
    ) -> Result<Stack, String> {
        let ca = Arc::new(LocalCa::new("certrot sandbox CA").map_err(|e| e.to_string())?);
        let ca_pem = ca.root_pem();
        let mut roots = vec![ca_pem.clone()];
        roots.extend_from_slice(extra_roots);
        let tokens = TokenServer::start_on(&ca, &roots, ports)
            .await
            .map_err(|e| e.to_string())?;
        let sm = SmServer::start(&ca, ca.clone(), tokens.handle(), &roots, opts)
            .await
            .map_err(|e| e.to_string())?;
        tokens.register_secret(SM_CLIENT, SM_SECRET);
        sm.allow_client(SM_CLIENT);
        sm.allow_client(SM_X509_CLIENT);
        Ok(Stack {
            ca,
            ca_pem,
            tokens,
            sm,
        })
    }

    /// A Service Manager service key of the secret flavour.
    pub fn sm_secret_key(&self) -> Value {
        json!({
            "clientid": SM_CLIENT, "clientsecret": SM_SECRET,
            "url": self.tokens.plain_base, "sm_url": self.sm.url,
            "xsappname": "sb-sm",
        })
    }

    /// A Service Manager service key of the x509 flavour, its certificate valid for
    /// `lifetime` and registered with the token endpoint.
    pub fn sm_x509_key(&self, lifetime: Duration) -> Result<Value, String> {
        let now = OffsetDateTime::now_utc();
        let issued = self
            .ca
            .issue(
                "sm access",
                KeyAlg::EcdsaP256,
                now - Duration::seconds(5),
                now + lifetime,
            )
            .map_err(|e| e.to_string())?;
        let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .next()
            .ok_or("the sandbox CA issued no certificate")?
            .map_err(|e| e.to_string())?;
        self.tokens
            .register(SM_X509_CLIENT, &super::fingerprint(&leaf));
        Ok(json!({
            "clientid": SM_X509_CLIENT, "certificate": issued.chain_pem,
            "key": issued.key_pem.as_str(), "certurl": self.tokens.cert_base,
            "url": self.tokens.plain_base, "sm_url": self.sm.url,
            "credential-type": "x509", "xsappname": "sb-sm",
        }))
    }
}
