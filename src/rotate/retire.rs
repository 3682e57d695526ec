//! Retirement: queued bindings are deleted once their grace period has passed — only those
//! that carry this credential's labels on its instance, re-read from Service Manager, and
//! never the one the target serves.

use super::*;

impl Rotator {
    /// Deletes queued bindings whose deadline passed (all of them with `now_all`).
    pub(super) async fn retire(&self, w: &mut Work<'_>, now_all: bool) {
        let now = self.now();
        let due = w.state.due_retirements(now, now_all);
        if due.is_empty() {
            return;
        }
        if let Err(e) = w.backend.still_held().await {
            tracing::warn!(credential = %w.cred.name, "retirement skipped: {e}");
            return;
        }
        let served = match w.backend.served_fingerprint().await {
            Ok(fp) => fp,
            Err(e) => {
                tracing::warn!(credential = %w.cred.name, "retirement skipped: the target cannot be read, so what it serves is unknown: {e}");
                return;
            }
        };
        let instance = match &w.cred.issuer {
            Some(Issuer::ServiceManager(i)) => Some(i.instance_id.clone()),
            _ => None,
        };
        let mut retired_fps = Vec::new();
        for r in due {
            if served.is_some() && r.fingerprint_sha256 == served {
                w.step(|s| s.unqueued(&r.binding_id));
                tracing::warn!(credential = %w.cred.name, binding = %r.binding_id, "not retired: its certificate is the one the target serves; dropped from the queue");
                continue;
            }
            let result = match self.client(&r.service_manager).await {
                Ok(c) => {
                    Self::retire_one(&c, &r, &w.cred.name, instance.as_deref(), served.as_deref())
                        .await
                }
                Err(f) => Err(f.message),
            };
            match result {
                Ok(RetireOutcome::Refused(why)) => {
                    w.step(|s| s.unqueued(&r.binding_id));
                    tracing::warn!(credential = %w.cred.name, binding = %r.binding_id, "not retired: {why}; dropped from the queue, left in Service Manager");
                }
                Ok(RetireOutcome::Deleted) => {
                    w.step(|s| s.unqueued(&r.binding_id));
                    tracing::info!(credential = %w.cred.name, binding = %r.binding_id, reason = %r.reason, event = "retired", "retired binding");
                    retired_fps.extend(r.fingerprint_sha256.clone());
                    w.retired.push(r.binding_id);
                }
                Err(e) => {
                    // Try again later, further out each time (1 min, 2, 4, … at most 1 h).
                    w.step(|s| s.retirement_failed(&r.binding_id, now));
                    w.retire_errors.push(format!("{}: {e}", r.binding_id));
                }
            }
        }
        if let Err(e) = w.backend.save_state(&w.state).await {
            tracing::warn!(credential = %w.cred.name, "state not saved after retirement: {e}");
        }
        if !retired_fps.is_empty() {
            w.backend.retired(&retired_fps).await;
        }
    }

    /// Re-reads a queued binding from Service Manager and deletes it only if it carries this
    /// credential's labels on its instance and does not hold the certificate the target
    /// serves (a forged or stale state must not retire another credential's binding).
    pub(super) async fn retire_one(
        client: &SmClient,
        r: &RetiringRecord,
        cred: &str,
        instance: Option<&str>,
        served: Option<&str>,
    ) -> Result<RetireOutcome, String> {
        let b = match client.get_binding(&r.binding_id).await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(RetireOutcome::Deleted),
            Err(e) => return Err(e.to_string()),
        };
        // An adopted binding (made by hand, behind an imported key) has no labels: it is this
        // credential's if it is on its instance and shows the certificate that was imported.
        let adopted = r.reason == RetireReason::Adopted
            && instance.is_some_and(|i| b.instance_id == i)
            && r.fingerprint_sha256
                .as_ref()
                .is_some_and(|fp| binding_fingerprints(&b).contains(fp));
        if !adopted && !is_credentials_binding(&b, cred, instance) {
            return Ok(RetireOutcome::Refused(format!(
                "binding {} does not carry this credential's labels on instance {}",
                r.binding_id,
                instance.unwrap_or("(any)")
            )));
        }
        if served.is_some_and(|s| binding_fingerprints(&b).iter().any(|f| f == s)) {
            return Ok(RetireOutcome::Refused(
                "its certificate is the one the target serves".into(),
            ));
        }
        client
            .delete_binding(&r.binding_id)
            .await
            .map(|_| RetireOutcome::Deleted)
            .map_err(|e| e.to_string())
    }
}

/// How one queued retirement ended.
pub(super) enum RetireOutcome {
    Deleted,
    /// Not deleted, for this reason (not this credential's, or served).
    Refused(String),
}
