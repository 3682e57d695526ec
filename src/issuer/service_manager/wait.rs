//! The bound on waits Service Manager asks for: within a credential's pipeline, no
//! `Retry-After` is waited past the credential's critical point.

use super::*;

tokio::task_local! {
    /// The latest instant a wait Service Manager asks for may end (see [`bound_waits`]).
    static WAIT_BOUND: std::cell::Cell<Option<Instant>>;
}

/// Runs `f` so that [`bound_waits`] inside it bounds the server-asked waits of every call.
pub async fn with_wait_bound<F: std::future::Future>(f: F) -> F::Output {
    WAIT_BOUND.scope(std::cell::Cell::new(None), f).await
}

/// Within [`with_wait_bound`]: a wait Service Manager asks for (`Retry-After`) that would
/// end after `until` (the credential's critical point) is not waited; the call fails at once
/// and the credential's own backoff, which is short near its critical point, takes over.
pub fn bound_waits(until: Instant) {
    let _ = WAIT_BOUND.try_with(|b| b.set(Some(until)));
}

pub(super) fn wait_bound() -> Option<Instant> {
    WAIT_BOUND.try_with(std::cell::Cell::get).ok().flatten()
}
