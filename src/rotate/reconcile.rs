//! Reconcile: labelled bindings that are neither current nor queued are deleted — never
//! the one whose certificate the target serves, never another installation's; a commit whose
//! state write was interrupted is adopted; an interrupted rotation is settled.

use super::*;
use crate::store::Current;

impl Rotator {
    /// Reconcile alone (daemon start): under the credential's lock, deletes labelled
    /// bindings that are neither current nor queued; returns their ids.
    pub async fn reconcile_only(&self, cred: &Credential) -> Result<Vec<String>, String> {
        let Some(Issuer::ServiceManager(iss)) = &cred.issuer else {
            return Ok(Vec::new());
        };
        let backend = Backend::open(cred, &self.config.state_dir)
            .await
            .map_err(|e| e.to_string())?;
        let guard = backend
            .lock(&cred.name, false)
            .await
            .map_err(|e| e.to_string())?;
        let result = async {
            let loaded = backend
                .load_state(&cred.name, true)
                .await
                .map_err(|e| e.to_string())?;
            let client = self
                .client(&iss.service_manager)
                .await
                .map_err(|f| f.message)?;
            let mut w = Work::new(cred, &backend, loaded.state);
            w.state_lost = settle_tracking(&mut w.state, cred, self.now());
            let serves = !matches!(backend.read_current().await, Ok(None));
            w.note_untracked(serves, self.now());
            // Without an exclusive lock, a one-shot run may be creating a binding right now.
            if !backend.exclusive() {
                return Ok(Vec::new());
            }
            // Another run's intent is not an orphan's.
            if let Some(p) = &w.state.pending
                && backend.pending_in_flight(p, self.now())
            {
                return Ok(Vec::new());
            }
            self.adopt_committed(&mut w).await;
            self.reconcile(&mut w, iss, &client, true)
                .await
                .map_err(|f| f.message)?;
            Ok(w.reconciled)
        };
        let result = backend.hold(&guard, result).await;
        backend.release(guard).await;
        result
    }

    /// Deletes labelled bindings of this credential that are neither current nor queued.
    /// With `clear_pending`, a leftover intent is settled too (its binding, if any, was
    /// among the orphans).
    pub(super) async fn reconcile(
        &self,
        w: &mut Work<'_>,
        iss: &SmIssuer,
        client: &SmClient,
        clear_pending: bool,
    ) -> Result<(), Failure> {
        if w.state_lost {
            tracing::warn!(credential = %w.cred.name, "reconcile skipped: the state was unusable and set aside, so which bindings are current or retiring is unknown (until a new generation has been current for retire_after); delete orphans by hand (label certrot_credential)");
            return Ok(());
        }
        // Only this installation's bindings: another installation's (or those made before
        // this state existed) are never taken for orphans.
        // (A state from before installation ids: only its intent's own binding, read by id.)
        let fields = format!("service_instance_id eq {}", quote(&iss.instance_id));
        let found = match w.state.installation.clone() {
            Some(installation) => client
                .list_bindings(&own_labels(&w.cred.name, &installation), &fields)
                .await
                .map_err(|e| sm_failure(Step::Reconcile, &e))?,
            None => {
                let mut own = Vec::new();
                let ids = w
                    .state
                    .pending
                    .as_ref()
                    .and_then(|p| p.binding_id.clone())
                    .into_iter()
                    .chain(w.earlier_attempt.clone().map(|(id, _)| id));
                for id in ids {
                    if let Some(b) = client
                        .get_binding(&id)
                        .await
                        .map_err(|e| sm_failure(Step::Reconcile, &e))?
                        && is_credentials_binding(&b, &w.cred.name, Some(&iss.instance_id))
                    {
                        own.push(b);
                    }
                }
                own
            }
        };
        // The list may have taken a while: deleting on the view of a run that has lost its
        // Lease could remove the binding another run is creating.
        w.backend
            .still_held()
            .await
            .map_err(|e| failure(Step::Reconcile, "lease", e.to_string()))?;
        let current = w.state.current.as_ref().and_then(|c| c.binding_id.clone());
        // What the target serves right now decides, whatever the state says.
        let known = |w: &Work<'_>, b: &Binding| {
            Some(&b.id) == current.as_ref() || w.state.retiring.iter().any(|r| r.binding_id == b.id)
        };
        let served = match w.backend.served_everywhere().await {
            Ok(fps) => fps,
            Err(e) => {
                tracing::warn!(credential = %w.cred.name, "reconcile skipped: a target cannot be read, so what it serves is unknown: {e}");
                // Nothing is deleted, but a commit whose state write was lost is still
                // adopted from what the primary target serves: a rotation that goes on
                // would otherwise leave that binding untracked once it is no longer served,
                // and the next reconcile would delete it with no grace period.
                for b in &found {
                    if known(w, b) {
                        continue;
                    }
                    // Best effort: a binding that cannot be read now is adopted later.
                    let Ok(Some(full)) = full_binding(client, b).await else {
                        continue;
                    };
                    let fps = binding_fingerprints(&full, &w.cred.pem_fields.certificate);
                    if !fps.is_empty() && self.adopt_served(w, iss, &b.id, &b.name, &fps).await {
                        if let Err(e) = w.backend.save_state(&w.state).await {
                            tracing::warn!(credential = %w.cred.name, "state not saved after adoption: {e}");
                        }
                        break;
                    }
                }
                return Ok(());
            }
        };
        let mut adopted = false;
        let mut queued = false;
        // The certificates of the generations the primary target keeps (read when needed).
        let mut kept = None;
        // Where binding and fingerprint are written down before each commit, an intent
        // without them never reached a target.
        let records_before_commit = w.records_before_commit(iss);
        for b in found {
            if known(w, &b) {
                continue;
            }
            let Some(full) = full_binding(client, &b).await? else {
                continue;
            };
            let fps = binding_fingerprints(&full, &w.cred.pem_fields.certificate);
            if fps.iter().any(|f| served.contains(f)) {
                if self.adopt_served(w, iss, &b.id, &b.name, &fps).await {
                    adopted = true;
                } else {
                    tracing::warn!(credential = %w.cred.name, binding = %b.id, "not deleted: this binding's certificate is one a target serves");
                }
                continue;
            }
            // A binding whose certificate a generation the target keeps holds was served
            // once: applications may still hold it, and a lost state write (or an import)
            // may be why nothing names it. Retired after `retire_after`, never at once.
            if !fps.is_empty() {
                match served_once(w.backend, &mut kept, &fps).await {
                    Ok(Some(fp)) => {
                        let record = RetiringRecord {
                            binding_id: b.id.clone(),
                            service_manager: iss.service_manager.clone(),
                            fingerprint_sha256: Some(fp),
                            retire_at: self.now() + w.cred.policy.retire_after.to_time(),
                            reason: RetireReason::Orphan,
                            attempts: 0,
                        };
                        w.step(|s| s.queue(record));
                        queued = true;
                        tracing::warn!(credential = %w.cred.name, binding = %b.id, name = %b.name, "not deleted at once: its certificate is in a generation the target keeps, so it was served; queued for retirement after retire_after");
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(credential = %w.cred.name, binding = %b.id, "not deleted: the generations the target keeps cannot be read, so whether it was ever served is unknown: {e}");
                        continue;
                    }
                }
            }
            // A binding that shows no certificate (self-managed) is deleted only when it is
            // this run's own interrupted attempt, whose certificate the target does not serve.
            let own_attempt = w
                .state
                .pending
                .as_ref()
                .and_then(|p| {
                    p.binding_id
                        .clone()
                        .map(|id| (id, p.fingerprint_sha256.clone()))
                })
                .into_iter()
                .chain(w.earlier_attempt.clone())
                .any(|(id, fp)| id == b.id && fp.is_none_or(|f| !served.contains(&f)))
                // An attempt killed before its binding id and fingerprint were written down
                // (just before its commit) never reached the target: found by its name. Not
                // so where that record is not written (a binding that shows its certificate,
                // the state on this host): such a binding is told by its certificate above.
                || records_before_commit && w
                    .state
                    .pending
                    .as_ref()
                    .filter(|p| p.binding_id.is_none() && p.fingerprint_sha256.is_none())
                    .map(|p| &p.binding_name)
                    .into_iter()
                    .chain(w.earlier_attempt_name.as_ref())
                    .any(|name| *name == b.name);
            if fps.is_empty() && !own_attempt {
                tracing::warn!(credential = %w.cred.name, binding = %b.id, name = %b.name, "not deleted: the binding shows no certificate, so it cannot be told apart from the one the target serves; delete it by hand if it is an orphan");
                continue;
            }
            client
                .delete_binding(&b.id)
                .await
                .map_err(|e| sm_failure(Step::Reconcile, &e))?;
            tracing::info!(credential = %w.cred.name, binding = %b.id, name = %b.name, "deleted orphan binding");
            w.reconciled.push(b.id);
        }
        let cleared = clear_pending && w.state.pending.take().is_some();
        if (cleared || adopted || queued || !w.reconciled.is_empty())
            && let Err(e) = w.backend.save_state(&w.state).await
        {
            tracing::warn!(credential = %w.cred.name, "state not saved after reconcile: {e}");
        }
        Ok(())
    }

    /// After a crash between the target commit and the state write of a rotation that kept
    /// no record of binding and fingerprint (a binding that shows its certificate, the state
    /// on this host): the primary target serves the certificate of this labelled binding,
    /// `binding_id`, while the state names another current generation. That binding is the
    /// current one: adopted (the one the state named goes to retirement, after
    /// `retire_after`). The interrupted rotation's intent (its binding's name) is settled
    /// with it; this run's own intent stays. False when the target serves something else.
    async fn adopt_served(
        &self,
        w: &mut Work<'_>,
        iss: &SmIssuer,
        binding_id: &str,
        binding_name: &str,
        fingerprints: &[String],
    ) -> bool {
        let Ok(Some(cur)) = w.backend.read_current().await else {
            return false;
        };
        let served = &cur.generation.leaf().fingerprint_sha256;
        let known = w
            .state
            .current
            .as_ref()
            .is_some_and(|c| &c.fingerprint_sha256 == served);
        if known || !fingerprints.contains(served) {
            return false;
        }
        let its_intent = w
            .state
            .pending
            .as_ref()
            .is_some_and(|p| p.binding_name == binding_name && p.fingerprint_sha256.is_none());
        self.adopt(w, &cur, binding_id, &iss.service_manager, its_intent);
        tracing::warn!(credential = %w.cred.name, binding = %binding_id, "adopted the binding whose certificate the target serves: a commit whose state write was interrupted");
        true
    }

    /// The generation `cur` the target serves becomes current with `binding_id` (recovered
    /// from an interrupted commit); the binding the state named current goes to retirement
    /// after `retire_after`. With `settles_intent`, the intent was that commit's: settled,
    /// and the rotation counted as a success.
    fn adopt(
        &self,
        w: &mut Work<'_>,
        cur: &Current,
        binding_id: &str,
        service_manager: &str,
        settles_intent: bool,
    ) {
        let now = self.now();
        let retire = RetirePlan {
            service_manager: service_manager.to_string(),
            at: now + w.cred.policy.retire_after.to_time(),
            reason: RetireReason::Replaced,
        };
        let current = CurrentRecord::of(
            cur.generation.leaf(),
            Some(cur.dir_name.clone()),
            Some(binding_id.to_string()),
            CommitSource::Recovered,
            now,
        );
        w.step(|s| {
            let s = s.committed(current, Some(retire));
            match settles_intent {
                true => s.intent_done().rotation_succeeded(now),
                false => s,
            }
        });
    }

    /// After a crash between the target commit and the state write, the target already
    /// shows the pending certificate: its binding is the current one. Adopt it (the
    /// previous binding goes to retirement) instead of letting reconcile delete it.
    pub(super) async fn adopt_committed(&self, w: &mut Work<'_>) {
        let Some(p) = w.state.pending.clone() else {
            return;
        };
        let (Some(id), Some(fp)) = (p.binding_id.clone(), p.fingerprint_sha256.clone()) else {
            return;
        };
        let Ok(Some(cur)) = w.backend.read_current().await else {
            return;
        };
        if cur.generation.leaf().fingerprint_sha256 != fp {
            return;
        }
        // The commit happened: a rotation that succeeded (its bookkeeping too).
        self.adopt(w, &cur, &id, &p.service_manager, true);
        tracing::warn!(credential = %w.cred.name, binding = %id, "adopted the binding of a commit whose state write was interrupted");
        if let Err(e) = w.backend.save_state(&w.state).await {
            tracing::warn!(credential = %w.cred.name, "state not saved after adoption: {e}");
        }
    }

    /// A run that is not rotating still settles an interrupted rotation's intent (a binding
    /// created, its run killed before the commit): reconcile deletes that orphan unless the
    /// target serves it, so it does not live on until the next renewal.
    pub(super) async fn settle_interrupted(&self, w: &mut Work<'_>, now: OffsetDateTime) {
        let Some(p) = w.state.pending.clone() else {
            return;
        };
        // Without an exclusive lock another run may be creating a binding right now.
        // (An intent without a binding id may still have one: its name finds it.)
        if !w.backend.exclusive() || w.backend.pending_in_flight(&p, now) {
            return;
        }
        let Some(Issuer::ServiceManager(iss)) = &w.cred.issuer else {
            return;
        };
        let client = match self.client(&iss.service_manager).await {
            Ok(c) => c,
            Err(f) => {
                tracing::warn!(credential = %w.cred.name, "interrupted rotation not settled: {}", f.message);
                return;
            }
        };
        if let Err(f) = self.reconcile(w, iss, &client, true).await {
            tracing::warn!(credential = %w.cred.name, "interrupted rotation not settled: {}", f.message);
        }
    }
}

/// What a binding's credentials show of its certificate: the fingerprints of every
/// certificate in its certificate field (`certificate`, or what `certificate_field` names;
/// empty when it shows none, as for a self-managed one).
pub(super) fn binding_fingerprints(b: &Binding, certificate_field: &str) -> Vec<String> {
    b.credentials
        .as_ref()
        .and_then(|c| c.get(certificate_field))
        .and_then(Value::as_str)
        .and_then(|pem| crate::x509::parse_chain(pem.as_bytes(), "binding certificate").ok())
        .map(|chain| {
            chain
                .iter()
                .map(|c| c.info.fingerprint_sha256.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// True when `b` carries this credential's labels and lives on its instance.
pub(super) fn is_credentials_binding(b: &Binding, cred: &str, instance_id: Option<&str>) -> bool {
    let has = |k: &str, v: &str| {
        b.labels
            .get(k)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(v)))
    };
    instance_id.is_none_or(|i| b.instance_id == i)
        && has(LABEL_MANAGED_BY.0, LABEL_MANAGED_BY.1)
        && has(LABEL_CREDENTIAL, cred)
}

/// A listed binding with its credentials: the list may not show them, so the binding is
/// read by itself then (`None`: it is gone).
async fn full_binding(client: &SmClient, b: &Binding) -> Result<Option<Binding>, Failure> {
    match &b.credentials {
        Some(_) => Ok(Some(b.clone())),
        None => client
            .get_binding(&b.id)
            .await
            .map_err(|e| sm_failure(Step::Reconcile, &e)),
    }
}

/// Which of `fingerprints` is in a generation the primary target keeps (`Some`: served
/// once). The kept generations are read at the first call and remembered in `kept`.
async fn served_once(
    backend: &Backend,
    kept: &mut Option<Result<Vec<String>, String>>,
    fingerprints: &[String],
) -> Result<Option<String>, String> {
    if kept.is_none() {
        *kept = Some(backend.kept_fingerprints().await.map_err(|e| e.to_string()));
    }
    match kept {
        Some(Ok(k)) => Ok(fingerprints.iter().find(|f| k.contains(f)).cloned()),
        Some(Err(e)) => Err(e.clone()),
        None => Ok(None),
    }
}
