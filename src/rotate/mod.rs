//! The rotation pipeline: lock → inspect → decide → (reconcile) → issue → verify → check →
//! commit → hooks → retire. This module holds the run itself (`Rotator::rotate_all`,
//! `Rotator::rotate`: lock, load the state, settle what an earlier run left, hand over to
//! the issuer's path); each step lives in its own module:
//!
//! - `inspect`: steps 2 and 3 (what the target serves, the decision);
//! - `plan`: pure decisions and bookkeeping (`decide`, `binding_parameters`, `binding_name`,
//!   `rolled_back`, `settle_tracking`);
//! - `service_manager` and `csr`: the two issuer paths (issue → verify → check → commit);
//! - `verify`: the new generation proved against the request and by a token request;
//! - `commit`: what is written after a commit or a failure;
//! - `replicas`: bringing a credential's further targets up to date, with backoff;
//! - `reconcile` and `retire`: deleting orphans and retired bindings, never one whose
//!   certificate any target serves;
//! - `outcome`: what a run reports.
//!
//! On a failure in issue, verify, check or commit nothing visible changes: the old
//! generation stays, a binding created for the attempt is deleted (or, if that fails, queued
//! for retirement so it is never forgotten), and the failure is recorded with the next
//! attempt time from the policy's backoff. The intent is written to the state file before a
//! binding is created, so a crash at any point leaves a record; the next run's reconcile
//! deletes every labelled binding that is neither current nor queued for retirement.

use crate::config::{Config, Credential, HookOn, Issuer, Kind, SmAccessSource, SmIssuer, SmMode};
use crate::generation::{Generation, merge_fields};
use crate::issuer::service_manager::{
    Binding, BindingRequest, Mode, RetryPolicy, SmAccess, SmClient, SmError, SmErrorKind, quote,
};
use crate::lock::LockError;
use crate::policy::{self, Validity};
use crate::state::transition::FailureNote;
use crate::state::{
    CommitSource, CurrentRecord, PendingRecord, RetirePlan, RetireReason, RetiringRecord, State,
};
use crate::status::short_time;
use crate::store::{Backend, Synced};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use time::OffsetDateTime;

mod commit;
mod csr;
mod in_order;
mod inspect;
mod outcome;
mod plan;
mod reconcile;
mod replicas;
mod retire;
mod service_manager;
mod verify;

use csr::self_made;
use inspect::Inspected;
pub use outcome::*;
pub use plan::*;
use reconcile::{binding_fingerprints, is_credentials_binding};
use verify::{check_with_retries, verify, verify_signed};

/// Labels every binding certrot creates carries.
pub const LABEL_MANAGED_BY: (&str, &str) = ("managed_by", "certrot");
/// Label naming the credential a binding belongs to.
pub const LABEL_CREDENTIAL: &str = "certrot_credential";
/// Label naming the installation (its state) that made a binding.
pub const LABEL_INSTALLATION: &str = "certrot_installation";

/// A fresh installation id: `i` and 16 random hex digits (never mistaken for a number).
fn new_installation_id() -> Option<String> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(format!(
        "i{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// The label query for this installation's bindings of `credential`.
fn own_labels(credential: &str, installation: &str) -> String {
    format!(
        "{} eq {} and {LABEL_CREDENTIAL} eq {} and {LABEL_INSTALLATION} eq {}",
        LABEL_MANAGED_BY.0,
        quote(LABEL_MANAGED_BY.1),
        quote(credential),
        quote(installation)
    )
}
/// How far in the future a new certificate's `not_before` may lie (clock skew).
const NOT_BEFORE_SKEW: time::Duration = time::Duration::minutes(5);

/// How `certrot rotate` was asked to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `--now`: rotate regardless of the policy and of backoff.
    pub force: bool,
    /// `--revoke-previous`: delete the replaced binding right after the commit.
    pub revoke_previous: bool,
    /// `--dry-run`: decide and show, create nothing.
    pub dry_run: bool,
    /// `--wait`: wait for the credential's lock instead of giving up.
    pub wait: bool,
}

/// Runs rotations for one configuration; caches one Service Manager client per access.
pub struct Rotator {
    config: Arc<Config>,
    clients: tokio::sync::Mutex<HashMap<String, Arc<SmClient>>>,
    /// Retry policy of Service Manager calls (attempts from the configuration).
    pub retry_base: std::time::Duration,
    /// Where every step reads the time.
    clock: Arc<dyn crate::clock::Clock>,
    /// Held (read) from a commit until the state write that records it: a stopping daemon
    /// takes it (write) before it abandons rotations, so none is abandoned in between.
    commits: CommitGate,
}

/// See [`Rotator::commit_section`]: shared by every rotator of one daemon (across reloads).
pub type CommitGate = Arc<tokio::sync::RwLock<()>>;

/// Whether a failed commit may have landed after all.
enum CommitUnknown {
    No,
    Yes,
}

/// What a run of the pipeline carries between steps.
struct Work<'a> {
    cred: &'a Credential,
    /// The state file was unreadable and set aside: what certrot tracked is unknown, so
    /// reconcile must not delete anything.
    state_lost: bool,
    backend: &'a Backend,
    state: State,
    /// Another run changed the state before this one created anything: decide again.
    redecide: bool,
    /// The commit's outcome is unknown: the intent must outlive this run.
    keep_pending: bool,
    reconciled: Vec<String>,
    retired: Vec<String>,
    retire_errors: Vec<String>,
    /// The binding (and certificate fingerprint) of an interrupted earlier attempt whose
    /// intent this run replaced.
    earlier_attempt: Option<(String, Option<String>)>,
    /// The binding name of an earlier attempt interrupted before it wrote down its binding
    /// id (so before its commit), whose intent this run replaced.
    earlier_attempt_name: Option<String>,
    /// What this run did to each replica.
    replicas: Vec<ReplicaReport>,
}

impl<'a> Work<'a> {
    /// Takes one of the state's pure steps ([`crate::state::transition`]).
    fn step(&mut self, f: impl FnOnce(State) -> State) {
        self.state = f(std::mem::take(&mut self.state));
    }

    /// Whether a rotation by `iss` writes down its binding and certificate before the
    /// commit (docs/architecture.md, "Durable writes", calls 3–4): a self-managed binding
    /// shows no certificate that could find it again after a crash, and a state kept in a
    /// Secret's annotations costs no sync here while its write is where a run learns that
    /// it lost its Lease. Without that record, an intent's binding name alone proves
    /// nothing about whether its commit began.
    fn records_before_commit(&self, iss: &SmIssuer) -> bool {
        iss.certificate.signer().is_some() || !self.backend.state_on_host()
    }

    /// A target that serves a generation the state does not know of (the state file was
    /// lost, moved away, or is another installation's fresh one): what certrot tracked is
    /// unknown, exactly as after a corrupt state file — nothing is an orphan until a
    /// generation rotated in from now on has been current for `retire_after`.
    fn note_untracked(&mut self, target_serves: bool, now: OffsetDateTime) {
        if target_serves && self.state.current.is_none() && self.state.unknown_since.is_none() {
            tracing::warn!(credential = %self.cred.name, "the target serves a generation the state does not know (state file lost?): no binding is deleted until a new generation has been current for retire_after");
            self.state.unknown_since = Some(now);
            self.state_lost = true;
        }
    }

    fn new(cred: &'a Credential, backend: &'a Backend, state: State) -> Work<'a> {
        Work {
            cred,
            state_lost: false,
            backend,
            state,
            redecide: false,
            keep_pending: false,
            reconciled: Vec::new(),
            retired: Vec::new(),
            retire_errors: Vec::new(),
            earlier_attempt: None,
            earlier_attempt_name: None,
            replicas: Vec::new(),
        }
    }
}

impl Rotator {
    pub fn new(config: Arc<Config>) -> Rotator {
        Rotator::with_clock(config, Arc::new(crate::clock::SystemClock))
    }

    /// A rotator that reads the time from `clock` (tests: a clock set ahead or behind).
    pub fn with_clock(config: Arc<Config>, clock: Arc<dyn crate::clock::Clock>) -> Rotator {
        Rotator {
            config,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            retry_base: std::time::Duration::from_millis(500),
            clock,
            commits: CommitGate::default(),
        }
    }

    /// This rotator with `gate` as its commit gate (a daemon shares one across reloads).
    pub fn with_commit_gate(mut self, gate: CommitGate) -> Rotator {
        self.commits = gate;
        self
    }

    /// Held from a commit until the state write that records it. The commit and that write
    /// run on the blocking pool, so a run could otherwise be dropped between the two (the
    /// daemon's stop grace): the daemon takes the gate first, which waits for every section
    /// under way and holds back the commits not yet begun.
    async fn commit_section(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.commits.clone().read_owned().await
    }

    /// The time, as the injected clock tells it.
    fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Rotates the credentials named (all when empty): Service Manager access credentials
    /// first, one by one, then the rest with at most `parallel` at once. Summaries come back
    /// in configuration order.
    pub async fn rotate_all(
        self: &Arc<Self>,
        creds: Vec<Arc<Credential>>,
        opts: Options,
        parallel: usize,
    ) -> Vec<Summary> {
        let mut out = Vec::with_capacity(creds.len());
        self.rotate_each(creds, opts, parallel, |s| out.push(s))
            .await;
        out
    }

    /// [`Rotator::rotate_all`], handing each summary to `each` (in configuration order) as
    /// soon as it and every earlier one are in: a run over a fleet holds the summaries of
    /// the pipelines in flight and of those that finished ahead of the slowest earlier one,
    /// not the fleet's. Returns how many pipelines ended abnormally (a panic: logged, and
    /// without a summary).
    pub async fn rotate_each(
        self: &Arc<Self>,
        creds: Vec<Arc<Credential>>,
        opts: Options,
        parallel: usize,
        each: impl FnMut(Summary),
    ) -> usize {
        let access: Vec<&str> = self
            .config
            .service_managers
            .values()
            .filter_map(|m| m.access_credential())
            .collect();
        let mut done = in_order::InOrder::new(each);
        let mut todo = Vec::with_capacity(creds.len());
        for (i, c) in creds.into_iter().enumerate() {
            if access.contains(&c.name.as_str()) {
                done.put(i, Some(self.rotate(&c, opts).await));
            } else {
                todo.push((i, c));
            }
        }
        // At most `parallel` pipelines exist at once (each one's future holds its whole
        // state): memory follows the parallelism, not the number of credentials.
        let mut todo = todo.into_iter();
        let mut tasks = tokio::task::JoinSet::new();
        let mut running: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut abnormal = 0;
        loop {
            while tasks.len() < parallel.max(1) {
                let Some((i, c)) = todo.next() else { break };
                let me = self.clone();
                let task = tasks.spawn(async move { me.rotate(&c, opts).await });
                running.insert(task.id(), i);
            }
            match tasks.join_next_with_id().await {
                Some(Ok((id, s))) => {
                    if let Some(i) = running.remove(&id) {
                        done.put(i, Some(s));
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("a rotation ended abnormally: {e}");
                    abnormal += 1;
                    if let Some(i) = running.remove(&e.id()) {
                        done.put(i, None);
                    }
                }
                None => break,
            }
        }
        abnormal
    }

    /// Steps 2 to 9 for one credential, under its lock: inspect, decide, then the issuer's
    /// path (issue → verify → check → commit → hooks → retire).
    async fn pipeline(&self, w: &mut Work<'_>, opts: Options) -> Outcome {
        let cred = w.cred;
        let now = self.now();
        // 2. inspect
        let seen = self.inspect(w, now).await;
        self.adopt_interrupted_commit(w, opts, now).await;
        // 3. decide
        let reason = match self.decide_step(w, opts, &seen, now).await {
            Ok(reason) => reason,
            Err(outcome) => return outcome,
        };
        // 4.–9. by the issuer's path
        match &cred.issuer {
            Some(Issuer::ServiceManager(iss)) => {
                self.pipeline_sm(w, opts, iss, reason, seen, now).await
            }
            Some(Issuer::Csr(iss)) => {
                self.pipeline_csr(w, opts, iss, reason, seen.current, seen.critical_at)
                    .await
            }
            None => Outcome::Failed(failure(
                Step::Decide,
                "no-issuer",
                format!(
                    "{} needs a new generation ({}) but has no [credential.issuer]; configure one, or run `certrot import {} --service-key FILE`",
                    cred.name,
                    reason.label(),
                    cred.name
                ),
            )),
        }
    }

    /// Runs the pipeline for one credential.
    pub async fn rotate(&self, cred: &Credential, opts: Options) -> Summary {
        let started = std::time::Instant::now();
        type Lists = (Vec<String>, Vec<String>, Vec<String>, Vec<ReplicaReport>);
        let summary = |outcome, lists: Option<Lists>| {
            let (reconciled, retired, retire_errors, replicas) = lists.unwrap_or_default();
            Summary {
                credential: cred.name.clone(),
                outcome,
                reconciled,
                retired,
                retire_errors,
                replicas,
                duration_ms: started.elapsed().as_millis() as u64,
            }
        };
        let failed = |step, label, e: String| Outcome::Failed(failure(step, label, e));
        // 1. lock
        let backend = match Backend::open(cred, &self.config.state_dir).await {
            Ok(b) => b,
            Err(e) => return summary(failed(Step::Lock, "target", e.to_string()), None),
        };
        let guard = match backend.lock(&cred.name, opts.wait).await {
            Ok(g) => g,
            Err(e @ LockError::Locked { .. }) => {
                let message = e.to_string();
                return summary(Outcome::Locked { message }, None);
            }
            Err(e) => return summary(failed(Step::Lock, "lock", e.to_string()), None),
        };
        // Without an exclusive lock (a Secret without a Lease) a write can meet another
        // run's: then the state is read again and the decision taken again.
        let mut attempt = 0;
        let run = async {
            loop {
                attempt += 1;
                // A dry run changes nothing, not even a corrupt state file.
                let loaded = match backend.load_state(&cred.name, !opts.dry_run).await {
                    Ok(l) => l,
                    Err(e) => break (failed(Step::Inspect, "state", e.to_string()), None),
                };
                let mut w = Work::new(cred, &backend, loaded.state);
                if let Some((p, why)) = loaded.set_aside {
                    tracing::warn!(credential = %cred.name, path = %p.display(), "state set aside: {why}");
                }
                w.state_lost = settle_tracking(&mut w.state, cred, self.now());
                let outcome = self.pipeline(&mut w, opts).await;
                if w.redecide && attempt < 3 {
                    tracing::info!(credential = %cred.name, "another run changed the state before this one created anything; deciding again");
                    continue;
                }
                break (
                    outcome,
                    Some((w.reconciled, w.retired, w.retire_errors, w.replicas)),
                );
            }
        };
        let run = crate::issuer::service_manager::with_wait_bound(run);
        let (outcome, lists) = backend.hold(&guard, run).await;
        backend.release(guard).await;
        match &outcome {
            Outcome::Rotated { new_binding, .. } => {
                tracing::info!(credential = %cred.name, binding = ?new_binding, "rotated")
            }
            Outcome::Failed(f) => {
                tracing::warn!(credential = %cred.name, step = f.step.label(), label = %f.label, "rotation failed: {}", f.message)
            }
            _ => {}
        }
        summary(outcome, lists)
    }
}
