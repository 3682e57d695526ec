//! Why the Kubernetes API could not be used, with the Secret or Lease and the server named.

/// Why the Kubernetes API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{place}: {message}")]
    Client { place: String, message: String },
    #[error("{place}: {action}: the API server answered {code} {reason}: {message}")]
    Api {
        place: String,
        action: &'static str,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{place}: {action}: {message}")]
    Transport {
        place: String,
        action: &'static str,
        message: String,
    },
    #[error(
        "{place}: changed by another certrot run while this one was {action}; re-read and decide again"
    )]
    Conflict { place: String, action: &'static str },
    #[error("{place}: {reason}")]
    Invalid { place: String, reason: String },
    #[error(
        "{place}: the lease is now held by {holder}, so this run writes nothing more (it outlived lease_duration or another run took the lease)"
    )]
    LeaseLost { place: String, holder: String },
}

impl KubeError {
    pub(super) fn of(place: &str, server: &str, action: &'static str, e: kube::Error) -> KubeError {
        match e {
            kube::Error::Api(s) => KubeError::Api {
                place: place.to_string(),
                action,
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => {
                // kube's message is terse ("client error (Connect)"): add the causes.
                let mut message = other.to_string();
                let mut cause = std::error::Error::source(&other);
                while let Some(c) = cause {
                    let text = c.to_string();
                    if !message.contains(&text) {
                        message = format!("{message}: {text}");
                    }
                    cause = c.source();
                }
                KubeError::Transport {
                    place: format!("{place} (API server {server})"),
                    action,
                    message,
                }
            }
        }
    }
}
