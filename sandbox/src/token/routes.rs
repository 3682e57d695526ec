//! The listeners and their routes: TLS accept (client certificate optional, verified against
//! the client CAs), discovery and JWKS, the token endpoints of each host, token replies.

use super::*;

/// A fatal TLS alert record: `handshake_failure`.
pub(super) const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// Which of the stand-in's hosts a listener is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Host {
    /// XSUAA's `authentication.` host: secrets only.
    Plain,
    /// XSUAA's `authentication.cert.` host: certificates.
    XsuaaCert,
    /// An Identity Authentication tenant: one host for both.
    Ias,
    /// Cloud Logging's mTLS ingest host.
    Ingest,
}

pub(super) async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    host: Host,
) {
    let mtls = host != Host::Plain;
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        // Small writes go out at once (no Nagle + delayed-ACK stalls of ~40 ms).
        let _ = tcp.set_nodelay(true);
        let fault = if mtls {
            lock(&shared.state).take_fault(Fault::at_connection)
        } else {
            None
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            match fault {
                Some(Fault::Reset) => return,
                Some(_) => {
                    let mut hello = [0u8; 512];
                    let _ = tcp.read(&mut hello).await;
                    let _ = tcp.write_all(&HANDSHAKE_FAILURE_ALERT).await;
                    let _ = tcp.shutdown().await;
                    return;
                }
                None => {}
            }
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| peer_of(c));
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (peer, shared) = (peer.clone(), shared.clone());
                async move {
                    let r = match host {
                        Host::Plain => handle_plain(req, &shared).await,
                        Host::XsuaaCert => handle_mtls(req, peer, &shared, host).await,
                        Host::Ias => match ias_route(&req, &shared) {
                            Some(r) => r,
                            None => handle_mtls(req, peer, &shared, host).await,
                        },
                        Host::Ingest => handle_ingest(req, peer, &shared).await,
                    };
                    Ok::<_, hyper::Error>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

pub(super) fn peer_of(der: &[u8]) -> Peer {
    let (subject, issuer) = match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string()),
        Err(_) => (String::new(), String::new()),
    };
    Peer {
        fingerprint: crate::fingerprint(der),
        subject,
        issuer,
    }
}

pub(super) fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn oauth_error(status: u16, error: &str, description: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({"error": error, "error_description": description}).to_string(),
    )
}

/// The Identity Authentication host's own routes; `None` for a token request.
pub(super) fn ias_route(req: &Request<Incoming>, shared: &Shared) -> Option<Response<Full<Bytes>>> {
    match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/.well-known/openid-configuration") => {
            Some(reply(200, shared.ias_discovery.clone()))
        }
        (&hyper::Method::GET, "/oauth2/certs") => Some(reply(200, shared.jwks.clone())),
        (&hyper::Method::POST, "/oauth2/token") => None,
        _ => Some(oauth_error(404, "not_found", "no such endpoint")),
    }
}

/// Routes both XSUAA listeners share; `None` for a token request.
pub(super) fn common_route(
    req: &Request<Incoming>,
    shared: &Shared,
) -> Option<Response<Full<Bytes>>> {
    match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/.well-known/openid-configuration") => Some(reply(
            200,
            if lock(&shared.state).no_mtls_alias {
                shared.discovery_no_alias.clone()
            } else {
                shared.discovery.clone()
            },
        )),
        (&hyper::Method::GET, "/token_keys") => Some(reply(200, shared.jwks.clone())),
        (&hyper::Method::POST, "/oauth/token" | "/oauth2/token") => None,
        _ => Some(oauth_error(404, "not_found", "no such endpoint")),
    }
}

/// The request's form fields and Basic credentials.
pub(super) struct TokenRequest {
    pub(super) form: Vec<(String, String)>,
    pub(super) basic: Option<(String, String)>,
}

impl TokenRequest {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) async fn read_token_request(req: Request<Incoming>) -> Result<TokenRequest, String> {
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            v.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let body = Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| "body too large".to_string())?
        .to_bytes();
    let form = form_urlencoded::parse(&body).into_owned().collect();
    Ok(TokenRequest { form, basic })
}

pub(super) async fn handle_plain(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if let Some(r) = common_route(&req, shared) {
        return r;
    }
    let t = match read_token_request(req).await {
        Ok(t) => t,
        Err(m) => return oauth_error(400, "invalid_request", &m),
    };
    if t.field("grant_type") != Some("client_credentials") {
        return oauth_error(400, "unsupported_grant_type", "only client_credentials");
    }
    let (id, secret) = match (&t.basic, t.field("client_id"), t.field("client_secret")) {
        (Some((i, s)), _, _) => (i.clone(), s.clone()),
        (None, Some(i), Some(s)) => (i.to_string(), s.to_string()),
        _ => return oauth_error(401, "unauthorized", "Unsupported credential"),
    };
    let ok = lock(&shared.state)
        .clients
        .iter()
        .any(|c| matches!(c, Client::Secret { id: i, secret: s } if *i == id && *s == secret));
    if !ok {
        return oauth_error(401, "invalid_client", "Bad credentials");
    }
    token_reply(shared, &id, None, Host::Plain)
}

pub(super) async fn handle_mtls(
    req: Request<Incoming>,
    peer: Option<Peer>,
    shared: &Shared,
    host: Host,
) -> Response<Full<Bytes>> {
    if host == Host::XsuaaCert
        && let Some(r) = common_route(&req, shared)
    {
        return r;
    }
    let t = match read_token_request(req).await {
        Ok(t) => t,
        Err(m) => return oauth_error(400, "invalid_request", &m),
    };
    let fault = lock(&shared.state).take_fault(|f| !f.at_connection());
    match fault {
        Some(Fault::Status(s)) => return oauth_error(s, "server_error", "injected fault"),
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = oauth_error(429, "too_many_requests", "injected fault");
            if let Ok(v) = hyper::header::HeaderValue::from_str(&retry_after) {
                r.headers_mut().insert("retry-after", v);
            }
            return r;
        }
        Some(Fault::Latency(d)) => tokio::time::sleep(d).await,
        Some(Fault::Held) => {
            lock(&shared.state).held += 1;
            let mut open = shared.gate.subscribe();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                open.wait_for(|open| *open),
            )
            .await;
        }
        Some(Fault::Malformed) => return reply(200, "<html>gateway</html>"),
        Some(Fault::Oversize) => return reply(200, vec![b' '; 2 << 20]),
        Some(Fault::Reset | Fault::HandshakeAbort) | None => {}
    }
    if t.field("grant_type") != Some("client_credentials") {
        return oauth_error(400, "unsupported_grant_type", "only client_credentials");
    }
    let Some(peer) = peer else {
        return oauth_error(401, "unauthorized", "Unsupported credential");
    };
    let client = t.field("client_id").unwrap_or_default().to_string();
    let ok = {
        let mut s = lock(&shared.state);
        s.seen.push(peer.fingerprint.clone());
        !s.revoked.contains(&peer.fingerprint)
            && s.clients.iter().any(|c| match c {
                Client::Cert { id, fingerprint } => {
                    *id == client && *fingerprint == peer.fingerprint
                }
                Client::Dn {
                    id,
                    subject,
                    issuer,
                } => *id == client && *subject == peer.subject && *issuer == peer.issuer,
                Client::Secret { .. } => false,
            })
    };
    if !ok {
        return oauth_error(401, "invalid_client", "Bad credentials");
    }
    token_reply(shared, &client, Some(&peer), host)
}

/// Cloud Logging's JSON ingest: `PUT`/`POST /` with a JSON object or array, from a client
/// certificate a Cloud Logging binding issued and that has not been revoked.
pub(super) async fn handle_ingest(
    req: Request<Incoming>,
    peer: Option<Peer>,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/" {
        return reply(404, "");
    }
    if !matches!(*req.method(), hyper::Method::PUT | hyper::Method::POST) {
        return reply(405, "");
    }
    let known = peer.as_ref().is_some_and(|p| {
        let mut s = lock(&shared.state);
        s.seen.push(p.fingerprint.clone());
        !s.revoked.contains(&p.fingerprint)
            && s.clients.iter().any(|c| {
                matches!(c, Client::Cert { id, fingerprint }
                    if id.starts_with(super::INGEST_CLIENT_PREFIX) && *fingerprint == p.fingerprint)
            })
    });
    if !known {
        return reply(401, "Unauthorized");
    }
    let body = match Limited::new(req.into_body(), 4 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(413, "Request Entity Too Large"),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() || v.is_array() => reply(200, ""),
        _ => reply(400, "Received event is not JSON"),
    }
}

/// 200 with an ES256 JWT for `client` (bound to the peer's certificate when there is one).
pub(super) fn token_reply(
    shared: &Shared,
    client: &str,
    peer: Option<&Peer>,
    host: Host,
) -> Response<Full<Bytes>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (jti, ias_azp) = {
        let mut s = lock(&shared.state);
        s.last_jti += 1;
        (s.last_jti, s.ias_azp)
    };
    let mut claims = if host == Host::Ias {
        let mut c = serde_json::json!({
            "iss": shared.ias_base, "sub": client, "aud": client,
            "iat": now, "exp": now + 3_600, "jti": jti.to_string(),
        });
        if ias_azp {
            c["azp"] = client.into();
        }
        c
    } else {
        serde_json::json!({
            "iss": shared.issuer, "cid": client, "client_id": client, "azp": client,
            "grant_type": "client_credentials", "iat": now, "exp": now + 43_199,
            "jti": jti.to_string(),
        })
    };
    if let Some(p) = peer {
        let hex = p.fingerprint.replace(':', "");
        let raw: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        claims["cnf"] = serde_json::json!({"x5t#S256": b64(&raw)});
    }
    let header = br#"{"alg":"ES256","typ":"JWT","kid":"sandbox-1"}"#;
    let signing_input = format!("{}.{}", b64(header), b64(claims.to_string().as_bytes()));
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let Ok(sig) = shared.signing_key.sign(&rng, signing_input.as_bytes()) else {
        return oauth_error(500, "server_error", "signing failed");
    };
    let jwt = format!("{signing_input}.{}", b64(sig.as_ref()));
    reply(
        200,
        serde_json::json!({"access_token": jwt, "token_type": "bearer", "expires_in": 43_199})
            .to_string(),
    )
}
