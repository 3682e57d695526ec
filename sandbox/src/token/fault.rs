//! Faults the token stand-in can inject into its mTLS listener's requests, and their
//! `KIND[:VALUE][*N]` spec (`certrot sandbox --fault`).

/// A fault to inject into the next request(s) to the mTLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and an OAuth error body.
    Status(u16),
    /// 429 with `Retry-After`.
    RateLimited { retry_after: String },
    /// Wait this long before answering.
    Latency(std::time::Duration),
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a 2 MiB body.
    Oversize,
    /// Close the TCP connection before the TLS handshake.
    Reset,
    /// Read the ClientHello, answer with a fatal `handshake_failure` alert, close.
    HandshakeAbort,
    /// Wait until [`TokenServer::release_held`] (a minute at most) before answering: a check
    /// caught in the middle for as long as a test needs. Set with [`TokenServer::hold_next`].
    Held,
}

/// Repeat count meaning "every request from now on".
pub const ALWAYS: usize = usize::MAX;

impl Fault {
    /// Parses `KIND[:VALUE][*N]` — `status:503`, `rate-limited:30`, `latency:2s`, `malformed`,
    /// `oversize`, `reset`, `handshake-abort` — with an optional repeat count (default: every
    /// request).
    pub fn parse_spec(spec: &str) -> Result<(Fault, usize), String> {
        let (body, times) = match spec.rsplit_once('*') {
            Some((b, n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => (b, n),
                _ => {
                    return Err(format!(
                        "fault {spec:?}: the count after '*' must be 1 or more"
                    ));
                }
            },
            None => (spec, ALWAYS),
        };
        let (kind, value) = match body.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (body, None),
        };
        let need = |what: &str| {
            value.ok_or_else(|| format!("fault {spec:?}: {kind} needs a value ({what})"))
        };
        let fault = match kind {
            "status" => {
                let v = need("an HTTP status, e.g. status:503")?;
                match v.parse::<u16>() {
                    Ok(s) if (400..=599).contains(&s) => Fault::Status(s),
                    _ => return Err(format!("fault {spec:?}: status must be 400..599")),
                }
            }
            "rate-limited" => Fault::RateLimited {
                retry_after: need("the Retry-After value, e.g. rate-limited:30")?.to_string(),
            },
            "latency" => {
                let v = need("a duration, e.g. latency:2s")?;
                Fault::Latency(
                    humantime::parse_duration(v)
                        .map_err(|e| format!("fault {spec:?}: latency: {e}"))?,
                )
            }
            "malformed" | "oversize" | "reset" | "handshake-abort" if value.is_some() => {
                return Err(format!("fault {spec:?}: {kind} takes no value"));
            }
            "malformed" => Fault::Malformed,
            "oversize" => Fault::Oversize,
            "reset" => Fault::Reset,
            "handshake-abort" => Fault::HandshakeAbort,
            other => {
                return Err(format!(
                    "fault {spec:?}: unknown kind {other:?} (status, rate-limited, latency, malformed, oversize, reset, handshake-abort)"
                ));
            }
        };
        Ok((fault, times))
    }

    pub(super) fn at_connection(&self) -> bool {
        matches!(self, Fault::Reset | Fault::HandshakeAbort)
    }
}
