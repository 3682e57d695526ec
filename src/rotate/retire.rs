//! Retirement: queued bindings are deleted once their grace period has passed — only those
//! that carry this credential's labels on its instance, re-read from Service Manager, and
//! never one whose certificate a target serves: the primary's (dropped from the queue: it
//! is live) or a replica's (kept queued until the replica is up to date).

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
        // What every replica serves; one that cannot be read stops retirement altogether.
        let mut on_replicas = Vec::new();
        for slot in w.backend.replicas() {
            match slot.served().await {
                Ok(g) => on_replicas.extend(g.map(|g| g.leaf().fingerprint_sha256.clone())),
                Err(e) => {
                    tracing::warn!(credential = %w.cred.name, target = %slot.place, "retirement skipped: a replica cannot be read, so what it serves is unknown: {e}");
                    for r in &due {
                        w.step(|s| s.retirement_failed(&r.binding_id, now));
                    }
                    w.retire_errors
                        .push(format!("{} cannot be read: {e}", slot.place));
                    if let Err(e) = w.backend.save_state(&w.state).await {
                        tracing::warn!(credential = %w.cred.name, "state not saved after retirement: {e}");
                    }
                    return;
                }
            }
        }
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
            if r.fingerprint_sha256
                .as_ref()
                .is_some_and(|f| on_replicas.contains(f))
            {
                w.step(|s| s.retirement_failed(&r.binding_id, now));
                tracing::warn!(credential = %w.cred.name, binding = %r.binding_id, "not retired yet: a replica still serves its certificate");
                w.retire_errors.push(format!(
                    "{}: a replica still serves its certificate",
                    r.binding_id
                ));
                continue;
            }
            let served = Served {
                primary: served.as_deref(),
                replicas: &on_replicas,
            };
            let result = match self.client(&r.service_manager).await {
                Ok(c) => Self::retire_one(&c, &r, w.cred, instance.as_deref(), served).await,
                Err(f) => Err(f.message),
            };
            match result {
                Ok(RetireOutcome::Postponed(why)) => {
                    w.step(|s| s.retirement_failed(&r.binding_id, now));
                    tracing::warn!(credential = %w.cred.name, binding = %r.binding_id, "not retired yet: {why}");
                    w.retire_errors.push(format!("{}: {why}", r.binding_id));
                }
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
        cred: &Credential,
        instance: Option<&str>,
        served: Served<'_>,
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
            && r.fingerprint_sha256.as_ref().is_some_and(|fp| {
                binding_fingerprints(&b, &cred.pem_fields.certificate).contains(fp)
            });
        if !adopted && !is_credentials_binding(&b, &cred.name, instance) {
            return Ok(RetireOutcome::Refused(format!(
                "binding {} does not carry this credential's labels on instance {}",
                r.binding_id,
                instance.unwrap_or("(any)")
            )));
        }
        let fps = binding_fingerprints(&b, &cred.pem_fields.certificate);
        if served.primary.is_some_and(|s| fps.iter().any(|f| f == s)) {
            return Ok(RetireOutcome::Refused(
                "its certificate is the one the target serves".into(),
            ));
        }
        if fps.iter().any(|f| served.replicas.contains(f)) {
            return Ok(RetireOutcome::Postponed(
                "a replica still serves its certificate".into(),
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
    /// Not deleted, for this reason (not this credential's, or served): dropped.
    Refused(String),
    /// Not deleted yet (a replica still serves it): kept queued, tried again later.
    Postponed(String),
}

/// What the targets serve, for the last look before a deletion.
#[derive(Clone, Copy)]
pub(super) struct Served<'a> {
    pub(super) primary: Option<&'a str>,
    pub(super) replicas: &'a [String],
}
