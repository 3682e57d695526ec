//! Steps 2 and 3 of a run: inspect what the target serves (and bound the waits Service
//! Manager may ask for by the credential's critical point), adopt a commit whose state write
//! was interrupted, and decide; a run that does not rotate still settles an interrupted
//! attempt and retires what is due.

use super::*;

/// What the target serves, as the decision sees it.
pub(super) struct Inspected {
    pub(super) current: Option<Generation>,
    pub(super) view: CurrentView,
    pub(super) critical_at: Option<OffsetDateTime>,
}

impl Rotator {
    /// Step 2, inspect: the current generation and when it renews and turns critical.
    pub(super) async fn inspect(&self, w: &mut Work<'_>, now: OffsetDateTime) -> Inspected {
        let cred = w.cred;
        let (current, view, critical_at) = match w.backend.read_current().await {
            Ok(None) => (None, CurrentView::Missing, None),
            Err(e) => (None, CurrentView::Unusable(e.to_string()), None),
            Ok(Some(c)) => {
                let leaf = c.generation.leaf();
                let v = Validity {
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                };
                let r = policy::renewal(&cred.policy, v, &leaf.serial);
                let view = CurrentView::Valid {
                    not_after: leaf.not_after,
                    renews_at: r.at,
                };
                (Some(c.generation), view, Some(r.critical_at))
            }
        };
        w.note_untracked(
            current.is_some() || matches!(view, CurrentView::Unusable(_)),
            now,
        );
        // No wait Service Manager asks for may run past the credential's critical point.
        // Past that point, no longer than the critical backoff either.
        if let Some(c) = critical_at {
            let left = if c > now {
                (c - now).unsigned_abs()
            } else {
                policy::BACKOFF_CRITICAL_CAP.unsigned_abs()
            };
            crate::issuer::service_manager::bound_waits(std::time::Instant::now() + left);
        }
        Inspected {
            current,
            view,
            critical_at,
        }
    }

    /// A commit whose state write was interrupted (or whose answer was lost) is adopted
    /// first, whatever the decision: the state then names the live binding.
    pub(super) async fn adopt_interrupted_commit(
        &self,
        w: &mut Work<'_>,
        opts: Options,
        now: OffsetDateTime,
    ) {
        let in_flight = w
            .state
            .pending
            .as_ref()
            .is_some_and(|p| w.backend.pending_in_flight(p, now));
        if !opts.dry_run && !in_flight {
            self.adopt_committed(w).await;
        }
    }

    /// Step 3, decide: why to rotate, or (`Err`) the outcome of a run that does not.
    pub(super) async fn decide_step(
        &self,
        w: &mut Work<'_>,
        opts: Options,
        seen: &Inspected,
        now: OffsetDateTime,
    ) -> Result<Reason, Outcome> {
        let cred = w.cred;
        let next_attempt =
            policy::trusted_next_attempt(w.state.next_attempt, now, seen.critical_at);
        let not_rotating = match decide(opts.force, &seen.view, next_attempt, now) {
            Decision::Rotate(reason) => {
                tracing::info!(credential = %cred.name, reason = reason.label(), event = "decided", "renewal decided");
                if let CurrentView::Unusable(why) = &seen.view {
                    tracing::warn!(credential = %cred.name, "current generation unusable: {why}");
                }
                return Ok(reason);
            }
            Decision::NotDue { renews_at } => Outcome::NotDue { renews_at },
            Decision::BackingOff { until } => Outcome::BackingOff { until },
        };
        if !opts.dry_run {
            self.settle_interrupted(w, now).await;
            if let Some(g) = &seen.current {
                self.sync_replicas(w, g, opts.force, now).await;
            }
            self.retire(w, false).await;
        }
        Err(not_rotating)
    }
}
