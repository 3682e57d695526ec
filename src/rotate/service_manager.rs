//! The pipeline for a credential issued by Service Manager (a new binding per generation,
//! service- or self-managed certificate), and the Service Manager clients it uses: one per
//! access, rebuilt when the access credential itself rotates.

use super::*;

impl Rotator {
    /// Steps 4 to 9 for a Service Manager issuer: a new binding (its certificate made here
    /// when self-managed), verified against the request, token-checked, committed.
    pub(super) async fn pipeline_sm(
        &self,
        w: &mut Work<'_>,
        opts: Options,
        iss: &SmIssuer,
        reason: Reason,
        seen: Inspected,
        now: OffsetDateTime,
    ) -> Outcome {
        let cred = w.cred;
        let critical_at = seen.critical_at;
        let name = binding_name(&iss.binding_prefix, now);
        let signer = iss.certificate.signer();
        let self_managed = signer.is_some();
        if opts.dry_run {
            let placeholder = self_managed.then_some("<certificate signed for a new key>");
            return Outcome::DryRun {
                decision: format!("would rotate ({})", reason.label()),
                binding_name: Some(name),
                parameters: Some(binding_parameters(cred.kind, iss, placeholder)),
            };
        }
        // Self-managed: the key is born here; only the CSR goes to the signer.
        let own = match signer {
            Some(signer) => match self_made(cred.kind, iss, signer, &name, now).await {
                Ok(o) => Some(o),
                Err(f) => return self.record_failure(w, f, None, critical_at).await,
            },
            None => None,
        };
        let parameters = binding_parameters(
            cred.kind,
            iss,
            own.as_ref().map(|(chain, _)| chain.as_str()),
        );
        let client = match self.client(&iss.service_manager).await {
            Ok(c) => c,
            Err(f) => return self.record_failure(w, f, None, critical_at).await,
        };
        // Without an exclusive lock, an intent may be another run's, still at work.
        if let Some(p) = &w.state.pending
            && w.backend.pending_in_flight(p, now)
        {
            return Outcome::Locked {
                message: format!(
                    "credential {:?} is being rotated by another run (binding {} since {}, {}); retry later",
                    cred.name,
                    p.binding_name,
                    short_time(p.started_at),
                    w.backend.describe()
                ),
            };
        }
        // The token Service Manager wants is fetched while the intent is written.
        let ahead = tokio::spawn({
            let client = client.clone();
            async move { client.fetch_token_ahead().await }
        });
        // 4. issue
        let binding = self
            .issue_binding(w, iss, &client, &name, parameters, now, critical_at)
            .await;
        ahead.abort();
        let binding = match binding {
            Ok(b) => b,
            Err(outcome) => return outcome,
        };
        // 5. verify
        let own_pem = own.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
        let g = match verify(cred, &binding, own_pem, seen.current.as_ref(), self.now()) {
            Ok(g) => g,
            Err(f) => {
                return self
                    .record_failure(w, f, Some((binding.id.clone(), None)), critical_at)
                    .await;
            }
        };
        let new_fp = g.leaf().fingerprint_sha256.clone();
        // 6. check, and beside it the first step of 7. commit: record (durably) the binding
        // and the certificate about to go live, so that a crash between the commit and the
        // state write is recognised (and adopted, not deleted). A failed check deletes the
        // binding as before (its certificate was never served); a run that lost its Lease
        // stops here and deletes its binding.
        // Not for a binding that shows its certificate with the state on this host: after
        // such a crash that certificate, the one the target serves, finds the binding again
        // (reconcile adopts it, `adopt_served`), and before the commit the binding is an
        // orphan like any other. One durable write, two sync calls, less per rotation.
        if let Some(p) = w.state.pending.as_mut() {
            p.fingerprint_sha256 = Some(new_fp.clone());
        }
        let record_first = w.records_before_commit(iss);
        let record = async {
            match record_first {
                true => w.backend.save_state(&w.state).await,
                false => Ok(()),
            }
        };
        let (checked, saved) = tokio::join!(check_with_retries(cred, &g), record);
        if let Err(f) = checked {
            return self
                .record_failure(w, f, Some((binding.id.clone(), Some(new_fp))), critical_at)
                .await;
        }
        if let Err(e) = saved {
            let label = if crate::store::is_lease_lost(&e) {
                "lease"
            } else {
                "state"
            };
            let f = failure(Step::Commit, label, e.to_string());
            return self
                .record_failure(w, f, Some((binding.id.clone(), Some(new_fp))), critical_at)
                .await;
        }
        // Then the target, then the state.
        let now = self.now();
        let section = self.commit_section().await;
        let dir = match self.commit_outcome(w, &g, &new_fp, now).await {
            Ok(d) => d,
            Err((f, CommitUnknown::No)) => {
                drop(section);
                return self
                    .record_failure(w, f, Some((binding.id.clone(), Some(new_fp))), critical_at)
                    .await;
            }
            Err((f, CommitUnknown::Yes)) => {
                // Maybe live: the binding stays, and the intent (binding id + fingerprint)
                // stays for the next run to adopt or reconcile.
                w.keep_pending = true;
                drop(section);
                return self.record_failure(w, f, None, critical_at).await;
            }
        };
        tracing::info!(credential = %cred.name, generation = %dir, not_after = %short_time(g.leaf().not_after), event = "committed", "committed");
        let new_binding = Some((binding.id.clone(), iss.service_manager.clone()));
        self.after_commit(w, reason, &g, dir, new_binding, opts, now, section)
            .await
    }

    /// Step 4, issue: the intent first (it also claims the credential where no lock excludes
    /// other runs: a second run's write of its intent conflicts), then reconcile, then the
    /// binding (a name taken within the same second: the next suffix). `Err` is the run's
    /// outcome, the failure already recorded.
    #[allow(clippy::too_many_arguments)]
    async fn issue_binding(
        &self,
        w: &mut Work<'_>,
        iss: &SmIssuer,
        client: &SmClient,
        name: &str,
        parameters: Value,
        now: OffsetDateTime,
        critical_at: Option<OffsetDateTime>,
    ) -> Result<Binding, Outcome> {
        let cred = w.cred;
        let first_of_installation = w.state.installation.is_none();
        if first_of_installation {
            w.state.installation = new_installation_id();
        }
        let Some(installation) = w.state.installation.clone() else {
            return Err(Outcome::Failed(failure(
                Step::Issue,
                "keygen",
                "no random bytes",
            )));
        };
        // An earlier run's intent with a binding (interrupted): reconcile below may delete
        // that binding as this credential's own attempt, even if it shows no certificate.
        if let Some(p) = &w.state.pending {
            match &p.binding_id {
                Some(id) => w.earlier_attempt = Some((id.clone(), p.fingerprint_sha256.clone())),
                None if p.fingerprint_sha256.is_none() => {
                    w.earlier_attempt_name = Some(p.binding_name.clone())
                }
                None => {}
            }
        }
        w.state.pending = Some(PendingRecord {
            binding_name: name.to_string(),
            binding_id: None,
            service_manager: iss.service_manager.clone(),
            instance_id: iss.instance_id.clone(),
            started_at: now,
            fingerprint_sha256: None,
        });
        // Durable, but atomic only for a binding that shows its certificate (state on this
        // host, its installation id already on disk): if a power cut loses this intent, the
        // binding is an orphan that reconcile finds by its labels and tells by its
        // certificate (deleted, or adopted when the target serves it). A self-managed
        // binding shows none, and a new installation id is on no disk yet.
        let durability = if !w.records_before_commit(iss) && !first_of_installation {
            crate::fsutil::Durability::Atomic
        } else {
            crate::fsutil::Durability::Durable
        };
        if let Err(e) = w.backend.save_state_as(&w.state, durability).await {
            w.state.pending = None;
            w.redecide = crate::store::is_conflict(&e);
            return Err(Outcome::Failed(failure(
                Step::Issue,
                "state",
                e.to_string(),
            )));
        }
        // reconcile: labelled bindings of earlier runs that are neither current nor queued
        // (every rotation: an orphan may outlive its intent — a failed reconcile, a skipped
        // one, an import that replaced a binding — and only this listing finds it).
        if let Err(f) = self.reconcile(w, iss, client, false).await {
            // Nothing was created for this intent.
            w.state.pending = None;
            return Err(self.record_failure(w, f, None, critical_at).await);
        }
        let request = BindingRequest {
            name: name.to_string(),
            instance_id: iss.instance_id.clone(),
            parameters,
            labels: vec![
                (LABEL_MANAGED_BY.0.into(), LABEL_MANAGED_BY.1.into()),
                (LABEL_CREDENTIAL.into(), cred.name.clone()),
                (LABEL_INSTALLATION.into(), installation),
            ],
        };
        let issue_started = std::time::Instant::now();
        let binding = self
            .create_under_free_name(w, iss, client, request, critical_at)
            .await?;
        tracing::info!(credential = %cred.name, binding = %binding.id, name = %binding.name, ms = issue_started.elapsed().as_millis() as u64, event = "issued", "binding created");
        // The id is written down with the certificate's fingerprint just before the commit
        // (one state write less): until then the intent's binding name finds this binding.
        if let Some(p) = w.state.pending.as_mut() {
            p.binding_id = Some(binding.id.clone());
        }
        Ok(binding)
    }

    /// Creates the binding; a name taken (two rotations within one second) moves to the next
    /// free suffix, queuing a binding of a lost answer that holds it. A failure deletes what
    /// the request may have created (found by name) and is recorded (`Err`).
    async fn create_under_free_name(
        &self,
        w: &mut Work<'_>,
        iss: &SmIssuer,
        client: &SmClient,
        mut request: BindingRequest,
        critical_at: Option<OffsetDateTime>,
    ) -> Result<Binding, Outcome> {
        let cred = w.cred;
        let name = request.name.clone();
        let mode = client.mode;
        let mut suffix = 1;
        loop {
            match client.create_binding(&request, mode).await {
                Ok(b) => return Ok(b),
                // The name is taken (two rotations within one second): the next free suffix.
                Err(e) if e.kind == SmErrorKind::Conflict && suffix < 100 => {
                    // Our own earlier attempt may hold the name (a retried POST whose first
                    // answer was lost): queue it for deletion so it is never forgotten.
                    // (Not when the state was lost: then every binding looks untracked.)
                    let lost = if w.state_lost {
                        None
                    } else {
                        self.find_by_name(client, iss, &request.name, &w.state)
                            .await
                            .ok()
                            .flatten()
                    };
                    if let Some(lost) = lost {
                        tracing::warn!(credential = %cred.name, binding = %lost, "a binding from a lost answer holds the name; queued for deletion");
                        let r = RetiringRecord {
                            binding_id: lost,
                            service_manager: iss.service_manager.clone(),
                            fingerprint_sha256: None,
                            retire_at: self.now(),
                            reason: RetireReason::Orphan,
                            attempts: 0,
                        };
                        w.step(|s| s.queue(r));
                    }
                    suffix += 1;
                    request.name = format!("{name}-{suffix}");
                    if let Some(p) = w.state.pending.as_mut() {
                        p.binding_name = request.name.clone();
                    }
                    if let Err(e) = w.backend.save_state(&w.state).await {
                        let f = failure(Step::Issue, "state", e.to_string());
                        return Err(self.record_failure(w, f, None, critical_at).await);
                    }
                }
                Err(e) => {
                    let f = sm_failure(Step::Issue, &e);
                    // The request may have created a binding (async failure, lost answer):
                    // find it by name and delete it now; reconcile catches anything left.
                    let found = if e.kind == SmErrorKind::Conflict {
                        Ok(None)
                    } else if w.state_lost {
                        // Unknown: keep the intent; reconcile is up to the operator.
                        Err(())
                    } else {
                        self.find_by_name(client, iss, &request.name, &w.state)
                            .await
                    };
                    match &found {
                        // Nothing was created: the intent is settled.
                        Ok(None) => w.state.pending = None,
                        Ok(Some(id)) => {
                            if let Some(p) = w.state.pending.as_mut() {
                                p.binding_id = Some(id.clone());
                            }
                        }
                        // Unknown: the intent stays for the next reconcile.
                        Err(()) => {}
                    }
                    let id = found.ok().flatten();
                    return Err(self
                        .record_failure(w, f, id.map(|i| (i, None)), critical_at)
                        .await);
                }
            }
        }
    }

    /// The binding named `name` on the instance, unless it is one certrot already tracks.
    pub(super) async fn find_by_name(
        &self,
        client: &SmClient,
        iss: &SmIssuer,
        name: &str,
        state: &State,
    ) -> Result<Option<String>, ()> {
        let field = format!(
            "service_instance_id eq {} and name eq {}",
            quote(&iss.instance_id),
            quote(name)
        );
        // Only bindings this installation made for this credential (a name clash with a
        // foreign binding is not ours).
        let Some(installation) = &state.installation else {
            return Ok(None);
        };
        let labels = own_labels(&state.credential, installation);
        let found = client.list_bindings(&labels, &field).await.map_err(|e| {
            tracing::warn!(binding = %name, "could not look for the binding of the failed attempt: {e}");
        })?;
        Ok(found.into_iter().map(|b| b.id).find(|id| {
            state.current.as_ref().and_then(|c| c.binding_id.as_ref()) != Some(id)
                && !state.retiring.iter().any(|r| &r.binding_id == id)
        }))
    }

    /// The client for Service Manager `name`, built on first use.
    pub(super) async fn client(&self, name: &str) -> Result<Arc<SmClient>, Failure> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(name) {
            return Ok(c.clone());
        }
        let f = |m: String| failure(Step::Issue, "sm-access-key", m);
        let cfg = self
            .config
            .service_managers
            .get(name)
            .ok_or_else(|| f(format!("no [service_manager.{name}] is configured")))?;
        let access = match &cfg.access {
            SmAccessSource::ServiceKey(path) => {
                let bytes = zeroize::Zeroizing::new(crate::fsutil::read_input(path).map_err(f)?);
                SmAccess::from_service_key(&bytes, &path.display().to_string())
                    .map_err(|e| f(e.to_string()))?
            }
            SmAccessSource::Credential(cred_name) => {
                let cred = self
                    .config
                    .credentials
                    .iter()
                    .find(|c| &c.name == cred_name)
                    .ok_or_else(|| f(format!("no credential named {cred_name:?}")))?;
                let backend = Backend::open(cred, &self.config.state_dir)
                    .await
                    .map_err(|e| f(format!("Service Manager access {cred_name:?}: {e}")))?;
                let current = backend
                    .read_current()
                    .await
                    .map_err(|e| f(format!("Service Manager access {cred_name:?}: {e}")))?
                    .ok_or_else(|| {
                        f(format!(
                            "Service Manager access {cred_name:?} has no current generation (import it first)"
                        ))
                    })?;
                let fields = current.generation.credentials().clone();
                SmAccess::from_fields(
                    &fields,
                    Some(current.generation),
                    &format!("credential {cred_name}"),
                )
                .map_err(|e| f(e.to_string()))?
            }
        };
        let ca = match &cfg.ca_file {
            Some(p) => Some(crate::fsutil::read_input(p).map_err(f)?),
            None => None,
        };
        let trust = crate::net::ServerTrust {
            system_roots: cfg.system_roots,
            extra_ca_pem: ca.as_deref(),
        };
        let limits = crate::net::Limits {
            connect_timeout: cfg.connect_timeout.0,
            timeout: cfg.timeout.0,
            ..crate::net::Limits::default()
        };
        let retry = RetryPolicy {
            attempts: cfg.attempts,
            base: self.retry_base,
            max_delay: std::time::Duration::from_secs(30),
            max_server_wait: std::time::Duration::from_secs(300),
        };
        let mut client =
            SmClient::new(access, trust, limits, retry).map_err(|e| f(e.to_string()))?;
        client.operation_timeout = cfg.operation_timeout.0;
        client.mode = match cfg.mode {
            SmMode::Auto => Mode::Auto,
            SmMode::Sync => Mode::Sync,
            SmMode::Async => Mode::Async,
        };
        let client = Arc::new(client);
        clients.insert(name.to_string(), client.clone());
        Ok(client)
    }

    pub(super) async fn forget_clients_of(&self, credential: &str) {
        let names: Vec<String> = self
            .config
            .service_managers
            .iter()
            .filter(|(_, m)| m.access_credential() == Some(credential))
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        let mut clients = self.clients.lock().await;
        for n in names {
            clients.remove(&n);
        }
    }
}
