//! What a run writes down after its commit (current, retiring, the last rotation) and after
//! a failure (the attempt's binding deleted or queued, the backoff), and the commit itself
//! with a lost answer settled by what the target serves.

use super::*;

impl Rotator {
    /// Commits `g`; when the target answers an error, looks again: a write that landed
    /// anyway (a lost answer) is a commit, and when even that cannot be read the outcome is
    /// unknown (the caller must not delete the binding of a generation that may be live).
    pub(super) async fn commit_outcome(
        &self,
        w: &Work<'_>,
        g: &Generation,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<String, (Failure, CommitUnknown)> {
        let e = match w.backend.commit(g, now).await {
            Ok(d) => return Ok(d),
            Err(e) => e,
        };
        match w.backend.shows(fingerprint).await {
            Ok(Some(d)) => {
                tracing::warn!(credential = %w.cred.name, "the commit answered an error ({e}), but the target holds the new generation: it is committed");
                Ok(d)
            }
            Ok(None) => Err((
                failure(Step::Commit, "write-failed", e.to_string()),
                CommitUnknown::No,
            )),
            Err(again) => Err((
                failure(
                    Step::Commit,
                    "write-unknown",
                    format!(
                        "{e}; whether it landed is unknown ({again}): the next run adopts or removes it"
                    ),
                ),
                CommitUnknown::Yes,
            )),
        }
    }

    /// Steps 7 (state) to 9 after the target commit: the new current record, the replaced
    /// binding queued for retirement (or due now with `--revoke-previous`), hooks, retirement.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn after_commit(
        &self,
        w: &mut Work<'_>,
        reason: Reason,
        g: &Generation,
        dir: String,
        new_binding: Option<(String, String)>,
        opts: Options,
        now: OffsetDateTime,
        section: tokio::sync::OwnedRwLockReadGuard<()>,
    ) -> Outcome {
        let cred = w.cred;
        let old = w.state.current.clone();
        let old_binding = old.as_ref().and_then(|c| c.binding_id.clone());
        // The replaced binding belongs to the Service Manager of the new one, or, when the
        // issuer changed to one without bindings, to the one that made it.
        let retire = RetirePlan {
            service_manager: new_binding
                .as_ref()
                .map(|(_, sm)| sm.clone())
                .or_else(|| self.config.service_managers.keys().next().cloned())
                .unwrap_or_default(),
            at: if opts.revoke_previous {
                now
            } else {
                now + cred.policy.retire_after.to_time()
            },
            reason: RetireReason::Replaced,
        };
        let current = CurrentRecord::of(
            g.leaf(),
            Some(dir.clone()),
            new_binding.as_ref().map(|(id, _)| id.clone()),
            CommitSource::Rotate,
            now,
        );
        w.step(|s| s.committed(current, Some(retire)).rotation_succeeded(now));
        // Atomic, not durable: a power cut that loses this write leaves the intent written
        // just before the commit, and the next run adopts the commit from it (queueing the
        // old binding with a fresh grace period). With `--revoke-previous` the old binding
        // is due now, which adoption would not know: then durable.
        let durability = if opts.revoke_previous {
            crate::fsutil::Durability::Durable
        } else {
            crate::fsutil::Durability::Atomic
        };
        let state_not_saved = match w.backend.save_state_as(&w.state, durability).await {
            Ok(()) => None,
            Err(e) => {
                // The new generation is live and works; the binding ids are in the log, and
                // the intent still names the commit for the next run to adopt.
                tracing::error!(credential = %cred.name, binding = ?new_binding, old_binding = ?old_binding, "state not saved after commit: {e}");
                Some(crate::text::printable(&e.to_string(), 300))
            }
        };
        // The commit is recorded (or its record failed): a stop may abandon the run from here.
        drop(section);
        // Every replica gets the new generation (after the state names it: a crash between
        // leaves replicas behind, which the next run repairs).
        self.sync_replicas(w, g, true, now).await;
        // A rotated Service Manager access: later calls use the new generation.
        self.forget_clients_of(&cred.name).await;
        // 8. hooks
        let env = crate::hooks::HookEnv {
            credential: cred.name.clone(),
            target: w.backend.hook_target(),
            files: w.backend.has_files(),
            not_after: short_time(g.leaf().not_after),
            result: "success",
        };
        let hook_failures = crate::hooks::run(&cred.hooks, HookOn::Success, &env).await;
        // 9. retire
        self.retire(w, opts.revoke_previous).await;
        Outcome::Rotated {
            reason,
            old_not_after: old.map(|c| c.not_after),
            new_not_after: g.leaf().not_after,
            old_binding,
            new_binding: new_binding.map(|(id, _)| id),
            generation: dir,
            hook_failures,
            state_not_saved,
        }
    }

    /// Records a failure: deletes the attempt's binding (or queues it), clears the intent,
    /// counts the failure and schedules the next attempt; runs failure hooks.
    pub(super) async fn record_failure(
        &self,
        w: &mut Work<'_>,
        f: Failure,
        new_binding: Option<(String, Option<String>)>,
        critical_at: Option<OffsetDateTime>,
    ) -> Outcome {
        let now = self.now();
        let sm_name = w.state.pending.as_ref().map(|p| p.service_manager.clone());
        if let Some((id, fp)) = new_binding {
            let sm_name = sm_name.clone().unwrap_or_default();
            // Never the binding of the certificate the target serves (a commit that landed
            // although it answered an error): that one is kept, and the intent with it.
            // (Replicas receive a generation only after its commit: never this attempt's.)
            let served = w.backend.served_fingerprint().await.ok().flatten();
            let is_served = fp.is_some() && fp == served;
            if is_served {
                w.keep_pending = true;
                tracing::warn!(credential = %w.cred.name, binding = %id, "not deleted: the target serves this attempt's certificate; the next run adopts it");
            }
            let deleted = if is_served {
                Err("the target serves its certificate".to_string())
            } else {
                match self.client(&sm_name).await {
                    Ok(c) => c.delete_binding(&id).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.message),
                }
            };
            match deleted {
                Ok(_) => {
                    tracing::info!(credential = %w.cred.name, binding = %id, "deleted the binding of the failed attempt")
                }
                Err(_) if is_served => {}
                Err(e) => {
                    tracing::warn!(credential = %w.cred.name, binding = %id, "could not delete the binding of the failed attempt, queued: {e}");
                    w.step(|s| {
                        s.queue(RetiringRecord {
                            binding_id: id,
                            service_manager: sm_name,
                            fingerprint_sha256: fp,
                            retire_at: now,
                            reason: RetireReason::FailedRotation,
                            attempts: 0,
                        })
                    });
                }
            }
        }
        let note = FailureNote {
            step: f.step,
            label: f.label.clone(),
            message: f.message.clone(),
        };
        let keep = w.keep_pending;
        w.step(|s| s.rotation_failed(&note, keep, critical_at, now));
        if let Err(e) = w.backend.save_state(&w.state).await {
            tracing::error!(credential = %w.cred.name, "state not saved after a failed rotation: {e}");
        }
        let env = crate::hooks::HookEnv {
            credential: w.cred.name.clone(),
            target: w.backend.hook_target(),
            files: w.backend.has_files(),
            not_after: String::new(),
            result: "failure",
        };
        crate::hooks::run(&w.cred.hooks, HookOn::Failure, &env).await;
        Outcome::Failed(f)
    }
}
