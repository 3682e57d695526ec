//! Bringing replicas up to date: after each commit, and in every run that does not rotate
//! (so a replica that failed, or was emptied, is repaired), each replica is made to serve
//! what the primary serves. A failure is recorded per replica and retried with backoff
//! (1 min, 2, 4, … at most 1 h; `--now` retries at once); while a replica still serves a
//! replaced certificate, retirement keeps that certificate's binding.

use super::*;

impl Rotator {
    /// Makes every replica serve `g` (the primary's generation); `force`: also those
    /// backing off. Records the outcome in the state (saved when it changed) and the report.
    pub(super) async fn sync_replicas(
        &self,
        w: &mut Work<'_>,
        g: &Generation,
        force: bool,
        now: OffsetDateTime,
    ) {
        let slots = w.backend.replicas();
        if slots.is_empty() && w.state.lagging.is_empty() {
            return;
        }
        let before = w.state.lagging.clone();
        let places: Vec<&str> = slots.iter().map(|r| r.place.as_str()).collect();
        w.step(|s| s.replicas_configured(&places));
        let mut reports = Vec::with_capacity(slots.len());
        for slot in slots {
            let lag = w.state.lagging.iter().find(|l| l.target == slot.place);
            if let Some(l) = lag
                && l.next_attempt > now
                && !force
            {
                reports.push(ReplicaReport {
                    target: slot.place.clone(),
                    result: "waiting".into(),
                    detail: Some(format!(
                        "next attempt at {} after: {}",
                        short_time(l.next_attempt),
                        l.error
                    )),
                });
                continue;
            }
            match slot.sync(g, now, w.backend.held_lock()).await {
                Ok(done) => {
                    let (result, detail) = match done {
                        Synced::Already => ("in-sync", None),
                        Synced::Written(name) => {
                            tracing::info!(credential = %w.cred.name, target = %slot.place, generation = %name, event = "replicated", "replica brought up to date");
                            ("written", Some(name))
                        }
                    };
                    w.step(|s| s.replica_synced(&slot.place));
                    reports.push(ReplicaReport {
                        target: slot.place.clone(),
                        result: result.into(),
                        detail,
                    });
                }
                Err(e) => {
                    let message = e.to_string();
                    tracing::warn!(credential = %w.cred.name, target = %slot.place, "replica not brought up to date (retried with backoff): {message}");
                    w.step(|s| s.replica_failed(&slot.place, &message, now));
                    reports.push(ReplicaReport {
                        target: slot.place.clone(),
                        result: "failed".into(),
                        detail: Some(crate::text::printable(&message, 300)),
                    });
                }
            }
        }
        w.replicas = reports;
        if w.state.lagging != before
            && let Err(e) = w.backend.save_state(&w.state).await
        {
            tracing::warn!(credential = %w.cred.name, "state not saved after updating replicas: {e}");
        }
    }
}
