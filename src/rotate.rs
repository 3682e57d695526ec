//! The rotation pipeline, top to bottom as in DESIGN.md: lock → inspect → decide →
//! (reconcile) → issue → verify → check → commit → hooks → retire.
//!
//! On a failure in issue, verify, check or commit nothing visible changes: the old
//! generation stays, a binding created for the attempt is deleted (or, if that fails, queued
//! for retirement so it is never forgotten), and the failure is recorded with the next
//! attempt time from the policy's backoff. The intent is written to the state file before a
//! binding is created, so a crash at any point leaves a record; the next run's reconcile
//! deletes every labelled binding that is neither current nor queued for retirement.
//!
//! [`decide`] and [`binding_parameters`] are pure; the rest is the imperative shell.

use crate::config::{CertificateMode, Config, Credential, HookOn, Issuer, Kind, SmIssuer, SmMode};
use crate::generation::{Generation, merge_fields};
use crate::issuer::service_manager::{
    Binding, BindingRequest, Mode, RetryPolicy, SmAccess, SmClient, SmError, SmErrorKind, quote,
};
use crate::lock::LockError;
use crate::policy::{self, Validity};
use crate::state::{CurrentRecord, PendingRecord, RetiringRecord, RotationRecord, State};
use crate::status::short_time;
use crate::store::Backend;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// Whether certrot still lacks track of the credential's bindings after its state was
/// lost (`unknown_since`): until a generation committed since then has been current for
/// `retire_after`, an unknown binding may be the one a consumer still uses. Clears the mark
/// once that has passed.
pub fn settle_tracking(state: &mut State, cred: &Credential, now: OffsetDateTime) -> bool {
    let Some(since) = state.unknown_since else {
        return false;
    };
    // Only a generation certrot rotated in since: its binding is the one it knows for sure.
    let settled = state.current.as_ref().is_some_and(|c| {
        c.source.starts_with("rotate")
            && c.binding_id.is_some() == matches!(cred.issuer, Some(Issuer::ServiceManager(_)))
            && c.committed_at >= since
            && c.committed_at
                .checked_add(cred.policy.retire_after.to_time())
                .is_some_and(|t| now >= t)
    });
    if settled {
        state.unknown_since = None;
    }
    !settled
}

/// The state after a rollback to `g`: its binding leaves the retirement queue and is current
/// again; the binding rolled away from is queued for retirement after `retire_after`.
pub fn rolled_back(
    state: &mut State,
    cred: &Credential,
    g: &Generation,
    generation: &str,
    now: OffsetDateTime,
) {
    let fp = &g.leaf().fingerprint_sha256;
    // The state may name the generation switched to as current already (a commit it never
    // recorded): its binding stays current.
    let mut same = state
        .current
        .as_ref()
        .filter(|c| &c.fingerprint_sha256 == fp)
        .and_then(|c| c.binding_id.clone());
    let restored = state
        .retiring
        .iter()
        .position(|r| r.fingerprint_sha256.as_ref() == Some(fp))
        .map(|i| state.retiring.remove(i));
    // An intent with a binding (a commit the state never recorded, or an attempt): if it is
    // the generation switched to, that is its binding; otherwise its binding is retired
    // after the grace period like the one rolled away from, not reconciled away at once.
    if let Some(p) = state.pending.take_if(|p| p.binding_id.is_some())
        && let Some(id) = p.binding_id
    {
        if p.fingerprint_sha256.as_ref() == Some(fp) {
            same = same.or(Some(id));
        } else {
            state.retiring.push(RetiringRecord {
                binding_id: id,
                service_manager: p.service_manager,
                fingerprint_sha256: p.fingerprint_sha256,
                retire_at: now + cred.policy.retire_after.to_time(),
                reason: "rolled-back".into(),
                attempts: 0,
            });
        }
    }
    let service_managed = matches!(cred.issuer, Some(Issuer::ServiceManager(_)));
    if restored.is_none() && same.is_none() && service_managed {
        // Which binding this generation has is unknown: it may still exist and be used,
        // so nothing is deleted as an orphan until a rotation settles it.
        tracing::warn!(credential = %cred.name, "the binding of the generation rolled back to is not known; reconcile deletes nothing until the next rotation has been current for retire_after");
        state.unknown_since = Some(now);
    }
    let manager = match &cred.issuer {
        Some(Issuer::ServiceManager(i)) => Some(i.service_manager.clone()),
        _ => restored.as_ref().map(|r| r.service_manager.clone()),
    };
    if let Some(old) = state.current.take()
        && &old.fingerprint_sha256 != fp
        && let Some(id) = old.binding_id
        && restored.as_ref().map(|r| &r.binding_id) != Some(&id)
    {
        match &manager {
            Some(sm) => state.retiring.push(RetiringRecord {
                binding_id: id,
                service_manager: sm.clone(),
                fingerprint_sha256: Some(old.fingerprint_sha256),
                retire_at: now + cred.policy.retire_after.to_time(),
                reason: "rolled-back".into(),
                attempts: 0,
            }),
            None => {
                tracing::warn!(credential = %cred.name, binding = %id, "the binding rolled away from is not queued for retirement (no Service Manager is known for it); delete it by hand")
            }
        }
    }
    state.current = Some(CurrentRecord {
        serial: g.leaf().serial.clone(),
        fingerprint_sha256: fp.clone(),
        not_after: g.leaf().not_after,
        generation: Some(generation.to_string()),
        binding_id: restored.map(|r| r.binding_id).or(same),
        committed_at: now,
        source: "rollback".into(),
    });
}

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

/// Why a rotation happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Forced,
    Missing,
    Unusable,
    Expired,
    Due,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Forced => "forced",
            Reason::Missing => "missing",
            Reason::Unusable => "unusable",
            Reason::Expired => "expired",
            Reason::Due => "due",
        }
    }
}

/// The current generation as the decision sees it.
#[derive(Clone, Debug)]
pub enum CurrentView {
    Missing,
    Unusable(String),
    Valid {
        not_after: OffsetDateTime,
        renews_at: OffsetDateTime,
    },
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Rotate(Reason),
    NotDue { renews_at: OffsetDateTime },
    BackingOff { until: OffsetDateTime },
}

/// Decides from the current generation, the recorded next attempt and the clock. Pure.
pub fn decide(
    force: bool,
    current: &CurrentView,
    next_attempt: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Decision {
    if force {
        return Decision::Rotate(Reason::Forced);
    }
    let reason = match current {
        CurrentView::Missing => Reason::Missing,
        CurrentView::Unusable(_) => Reason::Unusable,
        CurrentView::Valid { not_after, .. } if *not_after <= now => Reason::Expired,
        CurrentView::Valid { renews_at, .. } if *renews_at <= now => Reason::Due,
        CurrentView::Valid { renews_at, .. } => {
            return Decision::NotDue {
                renews_at: *renews_at,
            };
        }
    };
    match next_attempt {
        Some(t) if t > now => Decision::BackingOff { until: t },
        _ => Decision::Rotate(reason),
    }
}

/// The binding parameters for a service-managed certificate of `kind`, with the configured
/// extra parameters merged over them (objects merge key by key). Pure.
pub fn binding_parameters(kind: Kind, iss: &SmIssuer, certificate: Option<&str>) -> Value {
    let base = match (kind, certificate) {
        (Kind::Xsuaa, None) => json!({
            "credential-type": "x509",
            "x509": {"key-length": iss.key_length, "validity": iss.validity_days, "validity-type": "DAYS"},
        }),
        (Kind::Xsuaa, Some(c)) => json!({
            "credential-type": "x509",
            "x509": {"certificate": c, "certificate-pinning": iss.certificate_pinning},
        }),
        (Kind::Identity, None) => {
            let mut v = json!({
                "credential-type": "X509_GENERATED", "key-length": iss.key_length,
                "validity": iss.validity_days, "validity-type": "DAYS",
            });
            if let Some(a) = &iss.app_identifier {
                v["app-identifier"] = json!(a);
            }
            v
        }
        (Kind::Identity, Some(c)) => json!({"credential-type": "X509_PROVIDED", "certificate": c}),
    };
    let mut out = base;
    merge(&mut out, &Value::Object(iss.parameters.clone()));
    out
}

fn merge(into: &mut Value, extra: &Value) {
    match (into, extra) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// `<prefix>-<UTC yyyymmddThhmmssZ>`.
pub fn binding_name(prefix: &str, now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{prefix}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The pipeline's steps, named in logs, metrics and the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Lock,
    Inspect,
    Decide,
    Reconcile,
    Issue,
    Verify,
    Check,
    Commit,
    Hooks,
    Retire,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Lock => "lock",
            Step::Inspect => "inspect",
            Step::Decide => "decide",
            Step::Reconcile => "reconcile",
            Step::Issue => "issue",
            Step::Verify => "verify",
            Step::Check => "check",
            Step::Commit => "commit",
            Step::Hooks => "hooks",
            Step::Retire => "retire",
        }
    }
}

/// A failed step: where, the stable label, and a plain message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub step: Step,
    pub label: String,
    pub message: String,
}

fn failure(step: Step, label: &str, message: impl Into<String>) -> Failure {
    Failure {
        step,
        label: label.to_string(),
        message: message.into(),
    }
}

fn sm_failure(step: Step, e: &SmError) -> Failure {
    failure(step, e.kind.label(), e.to_string())
}

/// What happened to one credential.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Rotated {
        reason: Reason,
        #[serde(with = "time::serde::rfc3339::option")]
        old_not_after: Option<OffsetDateTime>,
        #[serde(with = "time::serde::rfc3339")]
        new_not_after: OffsetDateTime,
        old_binding: Option<String>,
        new_binding: Option<String>,
        generation: String,
        hook_failures: Vec<String>,
        /// The new generation is live, but the state write after the commit failed (the
        /// run exits non-zero; the next run adopts the commit from the intent).
        #[serde(skip_serializing_if = "Option::is_none")]
        state_not_saved: Option<String>,
    },
    NotDue {
        #[serde(with = "time::serde::rfc3339")]
        renews_at: OffsetDateTime,
    },
    BackingOff {
        #[serde(with = "time::serde::rfc3339")]
        until: OffsetDateTime,
    },
    DryRun {
        decision: String,
        binding_name: Option<String>,
        parameters: Option<Value>,
    },
    Failed(Failure),
    Locked {
        message: String,
    },
}

/// One credential's result, with what reconcile and retirement did on the way.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub credential: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Orphan bindings deleted by reconcile.
    pub reconciled: Vec<String>,
    /// Bindings deleted by retirement.
    pub retired: Vec<String>,
    /// Retirements that failed (kept queued).
    pub retire_errors: Vec<String>,
    pub duration_ms: u64,
}

impl Summary {
    /// The one line `certrot rotate` prints (values from outside escaped: one line, always).
    pub fn line(&self) -> String {
        crate::text::printable(&self.raw_line(), usize::MAX)
    }

    fn raw_line(&self) -> String {
        let mut s = match &self.outcome {
            Outcome::Rotated {
                reason,
                old_not_after,
                new_not_after,
                old_binding,
                new_binding,
                hook_failures,
                state_not_saved,
                ..
            } => {
                let mut s = format!(
                    "{}: rotated ({}): not_after {} -> {}",
                    self.credential,
                    reason.label(),
                    old_not_after.map_or("-".to_string(), short_time),
                    short_time(*new_not_after),
                );
                if old_binding.is_some() || new_binding.is_some() {
                    s.push_str(&format!(
                        ", binding {} -> {}",
                        old_binding.as_deref().unwrap_or("-"),
                        new_binding.as_deref().unwrap_or("-")
                    ));
                }
                if !hook_failures.is_empty() {
                    s.push_str(&format!(
                        "; {} hook(s) failed: {}",
                        hook_failures.len(),
                        hook_failures.join("; ")
                    ));
                }
                if let Some(e) = state_not_saved {
                    s.push_str(&format!(
                        "; the new generation is live in the target, but its state was not saved: {e}"
                    ));
                }
                s
            }
            Outcome::NotDue { renews_at } => {
                format!(
                    "{}: not due (renews at {})",
                    self.credential,
                    short_time(*renews_at)
                )
            }
            Outcome::BackingOff { until } => format!(
                "{}: backing off after a failure (next attempt at {}; --now overrides)",
                self.credential,
                short_time(*until)
            ),
            Outcome::DryRun {
                decision,
                binding_name,
                parameters,
            } => {
                let mut s = format!("{}: dry run: {decision}", self.credential);
                if let (Some(n), Some(p)) = (binding_name, parameters) {
                    s.push_str(&format!("; would create binding {n} with parameters {p}"));
                }
                s
            }
            Outcome::Failed(f) => format!(
                "{}: failed at {}: {}: {}",
                self.credential,
                f.step.label(),
                f.label,
                f.message
            ),
            Outcome::Locked { message } => format!("{}: {message}", self.credential),
        };
        if !self.reconciled.is_empty() {
            s.push_str(&format!(
                "; deleted orphan binding(s) {}",
                self.reconciled.join(", ")
            ));
        }
        if !self.retired.is_empty() {
            s.push_str(&format!("; retired binding(s) {}", self.retired.join(", ")));
        }
        if !self.retire_errors.is_empty() {
            s.push_str(&format!(
                "; retirement postponed: {}",
                self.retire_errors.join("; ")
            ));
        }
        s
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    pub fn hooks_failed(&self) -> bool {
        matches!(&self.outcome, Outcome::Rotated { hook_failures, .. } if !hook_failures.is_empty())
    }

    /// Rotated, but the state write after the commit failed.
    pub fn state_not_saved(&self) -> bool {
        matches!(
            &self.outcome,
            Outcome::Rotated {
                state_not_saved: Some(_),
                ..
            }
        )
    }

    pub fn locked(&self) -> bool {
        matches!(self.outcome, Outcome::Locked { .. })
    }
}

/// Runs rotations for one configuration; caches one Service Manager client per access.
pub struct Rotator {
    config: Arc<Config>,
    clients: tokio::sync::Mutex<HashMap<String, Arc<SmClient>>>,
    /// Retry policy of Service Manager calls (attempts from the configuration).
    pub retry_base: std::time::Duration,
}

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
}

impl<'a> Work<'a> {
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
        }
    }
}

impl Rotator {
    pub fn new(config: Arc<Config>) -> Rotator {
        Rotator {
            config,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            retry_base: std::time::Duration::from_millis(500),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Rotates the credentials named (all when empty): Service Manager access credentials
    /// first, one by one, then the rest with at most `parallel` at once. Summaries come back
    /// in configuration order.
    pub async fn rotate_all(
        self: &Arc<Self>,
        creds: Vec<Credential>,
        opts: Options,
        parallel: usize,
    ) -> Vec<Summary> {
        let access: Vec<&str> = self
            .config
            .service_managers
            .values()
            .filter_map(|m| m.credential.as_deref())
            .collect();
        let mut out: Vec<Option<Summary>> = vec![None; creds.len()];
        for (i, c) in creds.iter().enumerate() {
            if access.contains(&c.name.as_str()) {
                out[i] = Some(self.rotate(c, opts).await);
            }
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, c) in creds.into_iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let (me, sem) = (self.clone(), sem.clone());
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (i, me.rotate(&c, opts).await)
            });
        }
        while let Some(r) = tasks.join_next().await {
            if let Ok((i, s)) = r {
                out[i] = Some(s);
            }
        }
        out.into_iter().flatten().collect()
    }

    /// Runs the pipeline for one credential.
    pub async fn rotate(&self, cred: &Credential, opts: Options) -> Summary {
        let started = std::time::Instant::now();
        type Lists = (Vec<String>, Vec<String>, Vec<String>);
        let summary = |outcome, lists: Option<Lists>| {
            let (reconciled, retired, retire_errors) = lists.unwrap_or_default();
            Summary {
                credential: cred.name.clone(),
                outcome,
                reconciled,
                retired,
                retire_errors,
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
                w.state_lost = settle_tracking(&mut w.state, cred, OffsetDateTime::now_utc());
                let outcome = self.pipeline(&mut w, opts).await;
                if w.redecide && attempt < 3 {
                    tracing::info!(credential = %cred.name, "another run changed the state before this one created anything; deciding again");
                    continue;
                }
                break (outcome, Some((w.reconciled, w.retired, w.retire_errors)));
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

    async fn pipeline(&self, w: &mut Work<'_>, opts: Options) -> Outcome {
        let cred = w.cred;
        let now = OffsetDateTime::now_utc();
        // 2. inspect
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
        // A commit whose state write was interrupted (or whose answer was lost) is adopted
        // first, whatever the decision: the state then names the live binding.
        if !opts.dry_run
            && !w
                .state
                .pending
                .as_ref()
                .is_some_and(|p| w.backend.pending_in_flight(p, now))
        {
            self.adopt_committed(w).await;
        }
        // 3. decide
        let next_attempt = policy::trusted_next_attempt(w.state.next_attempt, now, critical_at);
        let decision = decide(opts.force, &view, next_attempt, now);
        let reason = match decision {
            Decision::Rotate(r) => r,
            Decision::NotDue { renews_at } => {
                if !opts.dry_run {
                    self.settle_interrupted(w, now).await;
                    self.retire(w, false).await;
                }
                return Outcome::NotDue { renews_at };
            }
            Decision::BackingOff { until } => {
                if !opts.dry_run {
                    self.settle_interrupted(w, now).await;
                    self.retire(w, false).await;
                }
                return Outcome::BackingOff { until };
            }
        };
        tracing::info!(credential = %cred.name, reason = reason.label(), event = "decided", "renewal decided");
        if let CurrentView::Unusable(why) = &view {
            tracing::warn!(credential = %cred.name, "current generation unusable: {why}");
        }
        if let Some(Issuer::Csr(iss)) = &cred.issuer {
            return self
                .pipeline_csr(w, opts, iss, reason, current, critical_at)
                .await;
        }
        let Some(Issuer::ServiceManager(iss)) = &cred.issuer else {
            return Outcome::Failed(failure(
                Step::Decide,
                "no-issuer",
                format!(
                    "{} needs a new generation ({}) but has no [credential.issuer]; configure one, or run `certrot import {} --service-key FILE`",
                    cred.name,
                    reason.label(),
                    cred.name
                ),
            ));
        };
        let name = binding_name(&iss.binding_prefix, now);
        let self_managed = iss.certificate == CertificateMode::SelfManaged;
        if opts.dry_run {
            let placeholder = self_managed.then_some("<certificate signed for a new key>");
            return Outcome::DryRun {
                decision: format!("would rotate ({})", reason.label()),
                binding_name: Some(name),
                parameters: Some(binding_parameters(cred.kind, iss, placeholder)),
            };
        }
        // Self-managed: the key is born here; only the CSR goes to the signer.
        let own = if self_managed {
            match self_made(cred.kind, iss, &name).await {
                Ok(o) => Some(o),
                Err(f) => return self.record_failure(w, f, None, critical_at).await,
            }
        } else {
            None
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
        // 4. issue: the intent first (it also claims the credential where no lock excludes
        // other runs: a second run's write of its intent conflicts), then reconcile, then
        // the binding.
        if w.state.installation.is_none() {
            w.state.installation = new_installation_id();
        }
        let Some(installation) = w.state.installation.clone() else {
            return Outcome::Failed(failure(Step::Issue, "keygen", "no random bytes"));
        };
        // An earlier run's intent with a binding (interrupted): reconcile below may delete
        // that binding as this credential's own attempt, even if it shows no certificate.
        if let Some(p) = &w.state.pending
            && p.binding_id.is_some()
        {
            w.earlier_attempt = p
                .binding_id
                .clone()
                .map(|id| (id, p.fingerprint_sha256.clone()));
        }
        w.state.pending = Some(PendingRecord {
            binding_name: name.clone(),
            binding_id: None,
            service_manager: iss.service_manager.clone(),
            instance_id: iss.instance_id.clone(),
            started_at: now,
            fingerprint_sha256: None,
        });
        if let Err(e) = w.backend.save_state(&w.state).await {
            w.state.pending = None;
            w.redecide = crate::store::is_conflict(&e);
            return Outcome::Failed(failure(Step::Issue, "state", e.to_string()));
        }
        // reconcile: labelled bindings of earlier runs that are neither current nor queued.
        if let Err(f) = self.reconcile(w, iss, &client, false).await {
            // Nothing was created for this intent.
            w.state.pending = None;
            return self.record_failure(w, f, None, critical_at).await;
        }
        let request = BindingRequest {
            name: name.clone(),
            instance_id: iss.instance_id.clone(),
            parameters,
            labels: vec![
                (LABEL_MANAGED_BY.0.into(), LABEL_MANAGED_BY.1.into()),
                (LABEL_CREDENTIAL.into(), cred.name.clone()),
                (LABEL_INSTALLATION.into(), installation),
            ],
        };
        let mode = match self
            .config
            .service_managers
            .get(&iss.service_manager)
            .map(|m| m.mode)
        {
            Some(SmMode::Sync) => Mode::Sync,
            Some(SmMode::Async) => Mode::Async,
            _ => Mode::Auto,
        };
        let issue_started = std::time::Instant::now();
        let mut request = request;
        let mut suffix = 1;
        let binding = loop {
            match client.create_binding(&request, mode).await {
                Ok(b) => break b,
                // The name is taken (two rotations within one second): the next free suffix.
                Err(e) if e.kind == SmErrorKind::Conflict && suffix < 100 => {
                    // Our own earlier attempt may hold the name (a retried POST whose first
                    // answer was lost): queue it for deletion so it is never forgotten.
                    // (Not when the state was lost: then every binding looks untracked.)
                    let lost = if w.state_lost {
                        None
                    } else {
                        self.find_by_name(&client, iss, &request.name, &w.state)
                            .await
                            .ok()
                            .flatten()
                    };
                    if let Some(lost) = lost {
                        tracing::warn!(credential = %cred.name, binding = %lost, "a binding from a lost answer holds the name; queued for deletion");
                        w.state.retiring.push(RetiringRecord {
                            binding_id: lost,
                            service_manager: iss.service_manager.clone(),
                            fingerprint_sha256: None,
                            retire_at: OffsetDateTime::now_utc(),
                            reason: "orphan".into(),
                            attempts: 0,
                        });
                    }
                    suffix += 1;
                    request.name = format!("{name}-{suffix}");
                    if let Some(p) = w.state.pending.as_mut() {
                        p.binding_name = request.name.clone();
                    }
                    if let Err(e) = w.backend.save_state(&w.state).await {
                        return self
                            .record_failure(
                                w,
                                failure(Step::Issue, "state", e.to_string()),
                                None,
                                critical_at,
                            )
                            .await;
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
                        self.find_by_name(&client, iss, &request.name, &w.state)
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
                    return self
                        .record_failure(w, f, id.map(|i| (i, None)), critical_at)
                        .await;
                }
            }
        };
        tracing::info!(credential = %cred.name, binding = %binding.id, name = %binding.name, ms = issue_started.elapsed().as_millis() as u64, event = "issued", "binding created");
        if let Some(p) = w.state.pending.as_mut() {
            p.binding_id = Some(binding.id.clone());
        }
        if let Err(e) = w.backend.save_state(&w.state).await {
            // Another run has the Lease now: stop here, delete what this one created.
            if crate::store::is_lease_lost(&e) {
                let f = failure(Step::Issue, "lease", e.to_string());
                return self
                    .record_failure(w, f, Some((binding.id.clone(), None)), critical_at)
                    .await;
            }
            tracing::warn!(credential = %cred.name, "state not saved after binding creation: {e}");
        }
        // 5. verify
        let own_pem = own.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
        let g = match verify(
            cred,
            &binding,
            own_pem,
            current.as_ref(),
            OffsetDateTime::now_utc(),
        ) {
            Ok(g) => g,
            Err(f) => {
                return self
                    .record_failure(w, f, Some((binding.id.clone(), None)), critical_at)
                    .await;
            }
        };
        let new_fp = g.leaf().fingerprint_sha256.clone();
        // 6. check
        if let Err(f) = check_with_retries(cred, &g).await {
            return self
                .record_failure(w, f, Some((binding.id.clone(), Some(new_fp))), critical_at)
                .await;
        }
        // 7. commit: first record which certificate is about to go live, so that a crash
        // between the commit and the state write is recognised (and adopted, not deleted).
        if let Some(p) = w.state.pending.as_mut() {
            p.fingerprint_sha256 = Some(new_fp.clone());
        }
        if let Err(e) = w.backend.save_state(&w.state).await {
            let f = failure(Step::Commit, "state", e.to_string());
            return self
                .record_failure(w, f, Some((binding.id.clone(), Some(new_fp))), critical_at)
                .await;
        }
        // Then the target, then the state.
        let now = OffsetDateTime::now_utc();
        let dir = match self.commit_outcome(w, &g, &new_fp, now).await {
            Ok(d) => d,
            Err((f, CommitUnknown::No)) => {
                return self
                    .record_failure(w, f, Some((binding.id.clone(), Some(new_fp))), critical_at)
                    .await;
            }
            Err((f, CommitUnknown::Yes)) => {
                // Maybe live: the binding stays, and the intent (binding id + fingerprint)
                // stays for the next run to adopt or reconcile.
                w.keep_pending = true;
                return self.record_failure(w, f, None, critical_at).await;
            }
        };
        tracing::info!(credential = %cred.name, generation = %dir, not_after = %short_time(g.leaf().not_after), event = "committed", "committed");
        let new_binding = Some((binding.id.clone(), iss.service_manager.clone()));
        self.after_commit(w, reason, &g, dir, new_binding, opts, now)
            .await
    }

    /// The pipeline for a `csr` issuer: no Service Manager — a new key (or the current one
    /// with `rotate_key = "never"`) and a CSR for the configured subject, signed; verified
    /// (subject as requested; issuer unchanged unless forced), checked, committed.
    async fn pipeline_csr(
        &self,
        w: &mut Work<'_>,
        opts: Options,
        iss: &crate::config::CsrIssuer,
        reason: Reason,
        current: Option<Generation>,
        critical_at: Option<OffsetDateTime>,
    ) -> Outcome {
        let cred = w.cred;
        if opts.dry_run {
            return Outcome::DryRun {
                decision: format!("would rotate ({})", reason.label()),
                binding_name: None,
                parameters: Some(json!({
                    "subject": iss.subject, "sans": iss.sans, "key_type": iss.key_type,
                    "rotate_key": iss.rotate_key, "signer": iss.signer.type_,
                })),
            };
        }
        // 4. issue
        let issue = async {
            let subject = crate::dn::parse_dn(&iss.subject)
                .map_err(|m| failure(Step::Issue, "subject", m))?;
            let existing = match iss.rotate_key {
                crate::config::RotateKey::Never => current.as_ref().map(|g| g.key_pem()),
                crate::config::RotateKey::Always => None,
            };
            let (key_type, sans) = (iss.key_type, iss.sans.clone());
            let made = tokio::task::spawn_blocking(move || {
                crate::issuer::csr::key_and_csr_with(
                    key_type,
                    existing.as_ref().map(|k| k.as_str()),
                    subject,
                    &sans,
                )
            })
            .await
            .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?
            .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?;
            let signer = crate::issuer::signer::Signer::load(&iss.signer)
                .map_err(|e| failure(Step::Issue, "signer", e.to_string()))?;
            let started = std::time::Instant::now();
            let chain = signer
                .sign(&crate::issuer::signer::SignRequest {
                    csr_pem: &made.csr_pem,
                    credential: &cred.name,
                    subject: &iss.subject,
                })
                .await
                .map_err(|e| failure(Step::Issue, "sign-failed", e.to_string()))?;
            tracing::info!(credential = %cred.name, ms = started.elapsed().as_millis() as u64, event = "issued", "certificate signed");
            Ok::<_, Failure>((made, chain))
        };
        let (made, chain) = match issue.await {
            Ok(x) => x,
            Err(f) => return self.record_failure(w, f, None, critical_at).await,
        };
        // 5. verify
        let g = match verify_signed(
            cred,
            &made.csr_pem,
            &chain,
            &made.key_pem,
            current.as_ref(),
            opts.force,
            OffsetDateTime::now_utc(),
        ) {
            Ok(g) => g,
            Err(f) => return self.record_failure(w, f, None, critical_at).await,
        };
        // 6. check
        if let Err(f) = check_with_retries(cred, &g).await {
            return self.record_failure(w, f, None, critical_at).await;
        }
        // 7. commit
        let now = OffsetDateTime::now_utc();
        let fp = g.leaf().fingerprint_sha256.clone();
        let dir = match self.commit_outcome(w, &g, &fp, now).await {
            Ok(d) => d,
            Err((f, _)) => return self.record_failure(w, f, None, critical_at).await,
        };
        tracing::info!(credential = %cred.name, generation = %dir, not_after = %short_time(g.leaf().not_after), event = "committed", "committed");
        self.after_commit(w, reason, &g, dir, None, opts, now).await
    }

    /// Commits `g`; when the target answers an error, looks again: a write that landed
    /// anyway (a lost answer) is a commit, and when even that cannot be read the outcome is
    /// unknown (the caller must not delete the binding of a generation that may be live).
    async fn commit_outcome(
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
    async fn after_commit(
        &self,
        w: &mut Work<'_>,
        reason: Reason,
        g: &Generation,
        dir: String,
        new_binding: Option<(String, String)>,
        opts: Options,
        now: OffsetDateTime,
    ) -> Outcome {
        let cred = w.cred;
        let old = w.state.current.take();
        let old_binding = old.as_ref().and_then(|c| c.binding_id.clone());
        if let Some(id) = &old_binding {
            // The replaced binding belongs to the Service Manager of the new one, or, when
            // the issuer changed to one without bindings, to the one that made it.
            let sm = new_binding
                .as_ref()
                .map(|(_, sm)| sm.clone())
                .or_else(|| self.config.service_managers.keys().next().cloned())
                .unwrap_or_default();
            w.state.retiring.push(RetiringRecord {
                binding_id: id.clone(),
                service_manager: sm,
                fingerprint_sha256: old.as_ref().map(|c| c.fingerprint_sha256.clone()),
                retire_at: if opts.revoke_previous {
                    now
                } else {
                    now + cred.policy.retire_after.to_time()
                },
                reason: "replaced".into(),
                attempts: 0,
            });
        }
        w.state.current = Some(CurrentRecord {
            serial: g.leaf().serial.clone(),
            fingerprint_sha256: g.leaf().fingerprint_sha256.clone(),
            not_after: g.leaf().not_after,
            generation: Some(dir.clone()),
            binding_id: new_binding.as_ref().map(|(id, _)| id.clone()),
            committed_at: now,
            source: "rotate".into(),
        });
        w.state.pending = None;
        w.state.last_rotation = Some(RotationRecord {
            at: now,
            result: "success".into(),
            step: None,
            label: None,
            message: None,
        });
        w.state.last_success = Some(now);
        w.state.consecutive_failures = 0;
        w.state.next_attempt = None;
        let state_not_saved = match w.backend.save_state(&w.state).await {
            Ok(()) => None,
            Err(e) => {
                // The new generation is live and works; the binding ids are in the log, and
                // the intent still names the commit for the next run to adopt.
                tracing::error!(credential = %cred.name, binding = ?new_binding, old_binding = ?old_binding, "state not saved after commit: {e}");
                Some(crate::text::printable(&e.to_string(), 300))
            }
        };
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
            w.state_lost = settle_tracking(&mut w.state, cred, OffsetDateTime::now_utc());
            let serves = !matches!(backend.read_current().await, Ok(None));
            w.note_untracked(serves, OffsetDateTime::now_utc());
            // Without an exclusive lock, a one-shot run may be creating a binding right now.
            if !backend.exclusive() {
                return Ok(Vec::new());
            }
            // Another run's intent is not an orphan's.
            if let Some(p) = &w.state.pending
                && backend.pending_in_flight(p, OffsetDateTime::now_utc())
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

    /// Records a failure: deletes the attempt's binding (or queues it), clears the intent,
    /// counts the failure and schedules the next attempt; runs failure hooks.
    async fn record_failure(
        &self,
        w: &mut Work<'_>,
        f: Failure,
        new_binding: Option<(String, Option<String>)>,
        critical_at: Option<OffsetDateTime>,
    ) -> Outcome {
        let now = OffsetDateTime::now_utc();
        let sm_name = w.state.pending.as_ref().map(|p| p.service_manager.clone());
        if let Some((id, fp)) = new_binding {
            let sm_name = sm_name.clone().unwrap_or_default();
            // Never the binding of the certificate the target serves (a commit that landed
            // although it answered an error): that one is kept, and the intent with it.
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
                    w.state.retiring.push(RetiringRecord {
                        binding_id: id,
                        service_manager: sm_name,
                        fingerprint_sha256: fp,
                        retire_at: now,
                        reason: "failed-rotation".into(),
                        attempts: 0,
                    });
                }
            }
        }
        // An intent whose binding is unknown stays for reconcile; otherwise it is done.
        if !w.keep_pending
            && w.state
                .pending
                .as_ref()
                .is_some_and(|p| p.binding_id.is_some())
        {
            w.state.pending = None;
        }
        w.state.consecutive_failures = w.state.consecutive_failures.saturating_add(1);
        w.state.next_attempt = Some(policy::backoff(
            w.state.consecutive_failures,
            now,
            critical_at,
        ));
        w.state.last_rotation = Some(RotationRecord {
            at: now,
            result: "failure".into(),
            step: Some(f.step.label().into()),
            label: Some(f.label.clone()),
            message: Some(f.message.clone()),
        });
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

    /// The binding named `name` on the instance, unless it is one certrot already tracks.
    async fn find_by_name(
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

    /// Deletes labelled bindings of this credential that are neither current nor queued.
    /// With `clear_pending`, a leftover intent is settled too (its binding, if any, was
    /// among the orphans).
    async fn reconcile(
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
        let served = match w.backend.served_fingerprint().await {
            Ok(fp) => fp,
            Err(e) => {
                tracing::warn!(credential = %w.cred.name, "reconcile skipped: the target cannot be read, so what it serves is unknown: {e}");
                return Ok(());
            }
        };
        for b in found {
            let known = Some(&b.id) == current.as_ref()
                || w.state.retiring.iter().any(|r| r.binding_id == b.id);
            if known {
                continue;
            }
            // The list may not show credentials: read the binding itself.
            let full = match &b.credentials {
                Some(_) => Some(b.clone()),
                None => client
                    .get_binding(&b.id)
                    .await
                    .map_err(|e| sm_failure(Step::Reconcile, &e))?,
            };
            let Some(full) = full else { continue };
            let fps = binding_fingerprints(&full);
            if served.as_ref().is_some_and(|s| fps.contains(s)) {
                tracing::warn!(credential = %w.cred.name, binding = %b.id, "not deleted: this binding's certificate is the one the target serves");
                continue;
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
                .any(|(id, fp)| id == b.id && (fp.is_none() || fp != served));
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
        if (cleared || !w.reconciled.is_empty())
            && let Err(e) = w.backend.save_state(&w.state).await
        {
            tracing::warn!(credential = %w.cred.name, "state not saved after reconcile: {e}");
        }
        Ok(())
    }

    /// After a crash between the target commit and the state write, the target already
    /// shows the pending certificate: its binding is the current one. Adopt it (the
    /// previous binding goes to retirement) instead of letting reconcile delete it.
    async fn adopt_committed(&self, w: &mut Work<'_>) {
        let Some(p) = w.state.pending.clone() else {
            return;
        };
        let (Some(id), Some(fp)) = (p.binding_id.clone(), p.fingerprint_sha256.clone()) else {
            return;
        };
        let Ok(Some(cur)) = w.backend.read_current().await else {
            return;
        };
        let g = &cur.generation;
        if g.leaf().fingerprint_sha256 != fp {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let old = w.state.current.take();
        if let Some(old_id) = old.as_ref().and_then(|c| c.binding_id.clone())
            && old_id != id
        {
            w.state.retiring.push(RetiringRecord {
                binding_id: old_id,
                service_manager: p.service_manager.clone(),
                fingerprint_sha256: old.as_ref().map(|c| c.fingerprint_sha256.clone()),
                retire_at: now + w.cred.policy.retire_after.to_time(),
                reason: "replaced".into(),
                attempts: 0,
            });
        }
        w.state.current = Some(CurrentRecord {
            serial: g.leaf().serial.clone(),
            fingerprint_sha256: fp,
            not_after: g.leaf().not_after,
            generation: Some(cur.dir_name.clone()),
            binding_id: Some(id.clone()),
            committed_at: now,
            source: "rotate (recovered after an interrupted commit)".into(),
        });
        w.state.pending = None;
        tracing::warn!(credential = %w.cred.name, binding = %id, "adopted the binding of a commit whose state write was interrupted");
        if let Err(e) = w.backend.save_state(&w.state).await {
            tracing::warn!(credential = %w.cred.name, "state not saved after adoption: {e}");
        }
    }

    /// A run that is not rotating still settles an interrupted rotation's intent (a binding
    /// created, its run killed before the commit): reconcile deletes that orphan unless the
    /// target serves it, so it does not live on until the next renewal.
    async fn settle_interrupted(&self, w: &mut Work<'_>, now: OffsetDateTime) {
        let Some(p) = w.state.pending.clone() else {
            return;
        };
        // Without an exclusive lock another run may be creating a binding right now.
        if p.binding_id.is_none() || !w.backend.exclusive() || w.backend.pending_in_flight(&p, now)
        {
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

    /// Deletes queued bindings whose deadline passed (all of them with `now_all`).
    async fn retire(&self, w: &mut Work<'_>, now_all: bool) {
        let now = OffsetDateTime::now_utc();
        let due: Vec<RetiringRecord> = w
            .state
            .retiring
            .iter()
            .filter(|r| now_all || r.retire_at <= now)
            .cloned()
            .collect();
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
                w.state.retiring.retain(|x| x.binding_id != r.binding_id);
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
                    w.state.retiring.retain(|x| x.binding_id != r.binding_id);
                    tracing::warn!(credential = %w.cred.name, binding = %r.binding_id, "not retired: {why}; dropped from the queue, left in Service Manager");
                }
                Ok(RetireOutcome::Deleted) => {
                    w.state.retiring.retain(|x| x.binding_id != r.binding_id);
                    tracing::info!(credential = %w.cred.name, binding = %r.binding_id, reason = %r.reason, event = "retired", "retired binding");
                    retired_fps.extend(r.fingerprint_sha256.clone());
                    w.retired.push(r.binding_id);
                }
                Err(e) => {
                    // Try again later, further out each time (1 min, 2, 4, … at most 1 h).
                    if let Some(q) = w
                        .state
                        .retiring
                        .iter_mut()
                        .find(|x| x.binding_id == r.binding_id)
                    {
                        q.attempts = q.attempts.saturating_add(1);
                        let wait = time::Duration::minutes(1 << (q.attempts - 1).min(6))
                            .min(time::Duration::hours(1));
                        q.retire_at = now + wait;
                    }
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
    async fn retire_one(
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
        if !is_credentials_binding(&b, cred, instance) {
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

    /// The client for Service Manager `name`, built on first use.
    async fn client(&self, name: &str) -> Result<Arc<SmClient>, Failure> {
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
        let access = match (&cfg.service_key, &cfg.credential) {
            (Some(path), _) => {
                let bytes = zeroize::Zeroizing::new(crate::fsutil::read_input(path).map_err(f)?);
                SmAccess::from_service_key(&bytes, &path.display().to_string())
                    .map_err(|e| f(e.to_string()))?
            }
            (None, Some(cred_name)) => {
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
            (None, None) => {
                return Err(f(format!(
                    "[service_manager.{name}] has no access configured"
                )));
            }
        };
        let ca = match &cfg.ca_file {
            Some(p) => Some(crate::fsutil::read_input(p).map_err(f)?),
            None => None,
        };
        let trust = crate::check::ServerTrust {
            system_roots: cfg.system_roots,
            extra_ca_pem: ca.as_deref(),
        };
        let limits = crate::check::Limits {
            connect_timeout: cfg.connect_timeout.0,
            timeout: cfg.timeout.0,
            ..crate::check::Limits::default()
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
        let client = Arc::new(client);
        clients.insert(name.to_string(), client.clone());
        Ok(client)
    }

    async fn forget_clients_of(&self, credential: &str) {
        let names: Vec<String> = self
            .config
            .service_managers
            .iter()
            .filter(|(_, m)| m.credential.as_deref() == Some(credential))
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

/// Self-managed: a new key and CSR (on a blocking thread: RSA takes a while), signed.
/// Key, CSR and signed chain for a self-managed binding. The subject is the app identifier
/// (or binding prefix), stable across generations — except for XSUAA with
/// `certificate-pinning: false`, which requires subject + issuer DN to be unique among the
/// instance's bindings: there each generation's subject is its binding's name plus a random
/// number, so the new binding can live beside the old one through the grace period.
async fn self_made(
    kind: Kind,
    iss: &SmIssuer,
    binding_name: &str,
) -> Result<(String, zeroize::Zeroizing<String>), Failure> {
    let signer_cfg = iss
        .signer
        .as_ref()
        .ok_or_else(|| failure(Step::Issue, "signer", "no signer configured"))?;
    let signer = crate::issuer::signer::Signer::load(signer_cfg)
        .map_err(|e| failure(Step::Issue, "signer", e.to_string()))?;
    let key_type = iss.key_type;
    let cn = if kind == Kind::Xsuaa && !iss.certificate_pinning {
        // The name has one-second resolution (a retried name gets `-2`): a random tail
        // keeps two generations of one second apart.
        let mut tail = [0u8; 4];
        aws_lc_rs::rand::fill(&mut tail)
            .map_err(|_| failure(Step::Issue, "keygen", "no random bytes"))?;
        // A CN has at most 64 characters: the name's end (its time) is kept.
        let name: String = {
            let chars: Vec<char> = binding_name.chars().collect();
            chars[chars.len().saturating_sub(55)..].iter().collect()
        };
        format!("{name}-{:08x}", u32::from_be_bytes(tail))
    } else {
        iss.app_identifier
            .clone()
            .unwrap_or_else(|| iss.binding_prefix.clone())
    };
    let cn_for_log = cn.clone();
    let made = tokio::task::spawn_blocking(move || {
        crate::issuer::csr::key_and_csr(key_type, crate::dn::subject(&cn, None))
    })
    .await
    .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?
    .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?;
    let chain = signer
        .sign(&crate::issuer::signer::SignRequest {
            csr_pem: &made.csr_pem,
            credential: &iss.binding_prefix,
            subject: &format!("CN={}", cn_for_log),
        })
        .await
        .map_err(|e| failure(Step::Issue, "sign-failed", e.to_string()))?;
    Ok((chain, made.key_pem))
}

/// How one queued retirement ended.
enum RetireOutcome {
    Deleted,
    /// Not deleted, for this reason (not this credential's, or served).
    Refused(String),
}

/// What a binding's credentials show of its certificate: the fingerprints of every
/// certificate in `certificate` (empty when it shows none, as for a self-managed one).
fn binding_fingerprints(b: &Binding) -> Vec<String> {
    b.credentials
        .as_ref()
        .and_then(|c| c.get("certificate"))
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
fn is_credentials_binding(b: &Binding, cred: &str, instance_id: Option<&str>) -> bool {
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

/// Step 5: builds the new generation from the binding (and, self-managed, the own chain and
/// key) and checks it offline.
fn verify(
    cred: &Credential,
    b: &Binding,
    own: Option<(&str, &str)>,
    previous: Option<&Generation>,
    now: OffsetDateTime,
) -> Result<Generation, Failure> {
    let bad = |m: String| failure(Step::Verify, "bad-credentials", m);
    let previous_client = previous.and_then(Generation::client_id);
    let issued: &Map<String, Value> = b
        .credentials
        .as_ref()
        .ok_or_else(|| bad(format!("binding {} has no credentials", b.id)))?;
    // Certificate and key come from the binding (or our own); every other field the
    // application reads carries over (the binding's answer wins).
    let mut creds = issued.clone();
    if let Some((chain, key)) = own {
        creds.insert("certificate".into(), Value::String(chain.to_string()));
        creds.insert("key".into(), Value::String(key.to_string()));
    }
    let creds = &creds;
    let field = |k: &str| creds.get(k).and_then(Value::as_str);
    let cert = field("certificate").ok_or_else(|| {
        bad(format!(
            "binding {}: no certificate in the credentials",
            b.id
        ))
    })?;
    let key =
        field("key").ok_or_else(|| bad(format!("binding {}: no key in the credentials", b.id)))?;
    let g = Generation::from_pem(
        cert.as_bytes(),
        &format!("binding {}: certificate", b.id),
        key.as_bytes(),
        &format!("binding {}: key", b.id),
    )
    .map_err(|e| bad(e.to_string()))?
    .with_credentials(merge_fields(
        previous.map(Generation::credentials),
        &cred.fields,
        creds,
    ));
    check_lifetime(&g, &format!("binding {}: the new certificate", b.id), now)?;
    // The binding itself must name its client: an id carried over from the previous
    // generation would hide a binding of another client.
    let answered = creds.get("clientid").and_then(Value::as_str);
    match (answered, previous_client) {
        (None, _) => {
            return Err(bad(format!(
                "binding {}: no clientid in the credentials",
                b.id
            )));
        }
        (Some(new), Some(old)) if new != old => {
            return Err(failure(
                Step::Verify,
                "client-id-changed",
                format!(
                    "binding {}: client id {new:?} differs from the current {old:?}",
                    b.id
                ),
            ));
        }
        _ => {}
    }
    Ok(g)
}

/// Step 5 for a `csr` issuer: the signed chain with the new key; the leaf's subject is the
/// one requested; its issuer is the previous generation's unless the rotation was forced (a
/// scheduled rotation never switches CA silently).
fn verify_signed(
    cred: &Credential,
    csr_pem: &str,
    chain: &str,
    key_pem: &str,
    previous: Option<&Generation>,
    force: bool,
    now: OffsetDateTime,
) -> Result<Generation, Failure> {
    let bad = |label: &str, m: String| failure(Step::Verify, label, m);
    // The signer's answer is the chain (and, through check.client_id, the client id); every
    // other field the application reads carries over from the previous generation and
    // [credential.fields].
    let mut issued = Map::new();
    if let Some(id) = &cred.check.client_id {
        issued.insert("clientid".into(), json!(id));
    }
    issued.insert("certificate".into(), json!(chain));
    issued.insert("key".into(), json!(key_pem));
    let mut creds = merge_fields(previous.map(Generation::credentials), &cred.fields, &issued);
    // A certificate credential: an X.509 credential type carries over (`x509`,
    // `X509_PROVIDED`, …); anything else (say `binding-secret`) becomes `x509`.
    let x509_type = creds
        .get("credential-type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("x509"));
    if !x509_type {
        creds.insert("credential-type".into(), json!("x509"));
    }
    let g = Generation::from_pem(
        chain.as_bytes(),
        "the signer's certificate chain",
        key_pem.as_bytes(),
        "the new key",
    )
    .map_err(|e| bad("bad-certificate", e.to_string()))?
    .with_credentials(creds);
    check_lifetime(&g, "the signed certificate", now)?;
    let requested = pem::parse(csr_pem)
        .ok()
        .and_then(|p| {
            use x509_parser::prelude::FromDer;
            x509_parser::certification_request::X509CertificationRequest::from_der(p.contents())
                .ok()
                .map(|(_, c)| c.certification_request_info.subject.to_string())
        })
        .unwrap_or_default();
    let leaf = g.leaf();
    if leaf.subject != requested {
        return Err(bad(
            "subject-changed",
            format!(
                "the signer issued {:?} for the requested {requested:?} (a Vault role without sign-verbatim drops parts of the subject)",
                leaf.subject
            ),
        ));
    }
    if let Some(p) = previous
        && p.leaf().subject == requested
        && p.leaf().issuer != leaf.issuer
        && !force
    {
        return Err(bad(
            "issuer-changed",
            format!(
                "the issuer changed from {:?} to {:?}; if the CA change is intended, run `certrot rotate --now {}`",
                p.leaf().issuer,
                leaf.issuer,
                cred.name
            ),
        ));
    }
    Ok(g)
}

/// `not_before` within the clock-skew allowance, at least half the lifetime left.
fn check_lifetime(g: &Generation, what: &str, now: OffsetDateTime) -> Result<(), Failure> {
    let leaf = g.leaf();
    if leaf.not_before > now + NOT_BEFORE_SKEW {
        return Err(failure(
            Step::Verify,
            "not-yet-valid",
            format!("{what} is valid only from {}", short_time(leaf.not_before)),
        ));
    }
    let lifetime = leaf.not_after - leaf.not_before;
    if leaf.not_after - now < lifetime / 2 {
        return Err(failure(
            Step::Verify,
            "short-lifetime",
            format!(
                "{what} has less than half its lifetime left (not_after {})",
                short_time(leaf.not_after)
            ),
        ));
    }
    Ok(())
}

/// Step 6: the token check with the new generation, retried for propagation delay
/// (`check.attempts` spread over `check.retry_for`).
async fn check_with_retries(cred: &Credential, g: &Generation) -> Result<(), Failure> {
    let attempts = cred.check.attempts.max(1);
    let gap = if attempts > 1 {
        cred.check.retry_for.0 / (attempts - 1)
    } else {
        std::time::Duration::ZERO
    };
    let mut last = None;
    for i in 0..attempts {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        match crate::check::validate(cred, g).await {
            Ok(d) => {
                tracing::info!(credential = %cred.name, attempt = i + 1, ms = d.as_millis() as u64, event = "checked", "token check with the new generation passed");
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(credential = %cred.name, attempt = i + 1, label = e.kind.label(), "token check with the new generation failed");
                last = Some(e);
            }
        }
    }
    let (label, e) = last.map_or(("check", "no attempt".to_string()), |e| {
        (e.kind.label(), e.to_string())
    });
    Err(failure(
        Step::Check,
        label,
        format!("the new generation failed the token check {attempts} time(s): {e}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sm_credential() -> Credential {
        let text = "[service_manager.main]\nservice_key = \"/k.json\"\n[[credential]]\nname = \"orders\"\n\
                    retire_after = \"1h\"\ntarget.path = \"/srv/orders\"\nissuer.instance_id = \"i\"\n";
        Config::parse(text, std::path::Path::new("t.toml"))
            .unwrap()
            .credentials
            .remove(0)
    }

    fn generation(cn: &str) -> Generation {
        let ca = certrot_sandbox::ca::LocalCa::new("rollback CA").unwrap();
        let now = OffsetDateTime::now_utc();
        let i = ca
            .issue(
                cn,
                certrot_sandbox::ca::KeyAlg::EcdsaP256,
                now - time::Duration::hours(1),
                now + time::Duration::days(7),
            )
            .unwrap();
        Generation::from_pem(i.chain_pem.as_bytes(), "c", i.key_pem.as_bytes(), "k").unwrap()
    }

    fn current(
        g: &Generation,
        binding: Option<&str>,
        at: OffsetDateTime,
        source: &str,
    ) -> CurrentRecord {
        CurrentRecord {
            serial: g.leaf().serial.clone(),
            fingerprint_sha256: g.leaf().fingerprint_sha256.clone(),
            not_after: g.leaf().not_after,
            generation: None,
            binding_id: binding.map(str::to_string),
            committed_at: at,
            source: source.into(),
        }
    }

    fn queued(g: &Generation, binding: &str) -> RetiringRecord {
        RetiringRecord {
            binding_id: binding.into(),
            service_manager: "main".into(),
            fingerprint_sha256: Some(g.leaf().fingerprint_sha256.clone()),
            retire_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
            reason: "replaced".into(),
            attempts: 0,
        }
    }

    #[test]
    fn rollback_bookkeeping() {
        let cred = sm_credential();
        let now = datetime!(2026-11-23 12:00 UTC);
        let (a, b) = (generation("a"), generation("b"));
        // B current, A's binding waiting for retirement: back to A.
        let mut st = State {
            current: Some(current(&b, Some("bind-b"), now, "rotate")),
            retiring: vec![queued(&a, "bind-a")],
            ..State::default()
        };
        rolled_back(&mut st, &cred, &a, "gen-a", now);
        let cur = st.current.clone().unwrap();
        assert_eq!(cur.binding_id.as_deref(), Some("bind-a"));
        assert_eq!(cur.source, "rollback");
        assert_eq!(st.retiring.len(), 1);
        assert_eq!(st.retiring[0].binding_id, "bind-b");
        assert_eq!(st.retiring[0].reason, "rolled-back");
        assert_eq!(st.retiring[0].retire_at, now + time::Duration::hours(1));
        assert!(st.unknown_since.is_none());
        // Back to the generation the state already names (an unrecorded commit): its
        // binding stays current and nothing is queued.
        let mut st = State {
            current: Some(current(&a, Some("bind-a"), now, "rotate")),
            ..State::default()
        };
        rolled_back(&mut st, &cred, &a, "gen-a", now);
        assert_eq!(st.current.unwrap().binding_id.as_deref(), Some("bind-a"));
        assert!(st.retiring.is_empty());
        assert!(st.unknown_since.is_none());
        // A commit of B the state never recorded (its intent still names B's binding), then
        // back to A: B's binding gets the grace period instead of being reconciled away.
        let intent = |g: &Generation, id: &str| PendingRecord {
            binding_name: "n".into(),
            binding_id: Some(id.into()),
            service_manager: "main".into(),
            instance_id: "i".into(),
            started_at: now,
            fingerprint_sha256: Some(g.leaf().fingerprint_sha256.clone()),
        };
        let mut st = State {
            current: Some(current(&a, Some("bind-a"), now, "rotate")),
            pending: Some(intent(&b, "bind-b")),
            ..State::default()
        };
        rolled_back(&mut st, &cred, &a, "gen-a", now);
        assert_eq!(
            st.current.clone().unwrap().binding_id.as_deref(),
            Some("bind-a")
        );
        assert!(st.pending.is_none());
        assert_eq!(st.retiring.len(), 1);
        assert_eq!(st.retiring[0].binding_id, "bind-b");
        assert!(st.unknown_since.is_none());
        // The intent's generation is the one switched to: its binding is current.
        let mut st = State {
            current: Some(current(&b, Some("bind-b"), now, "rotate")),
            pending: Some(intent(&a, "bind-a")),
            ..State::default()
        };
        rolled_back(&mut st, &cred, &a, "gen-a", now);
        assert_eq!(st.current.unwrap().binding_id.as_deref(), Some("bind-a"));
        assert_eq!(st.retiring.len(), 1);
        assert_eq!(st.retiring[0].binding_id, "bind-b");
        assert!(st.unknown_since.is_none());
        // A generation whose binding is unknown: reconcile must not take it for an orphan.
        let mut st = State {
            current: Some(current(&b, Some("bind-b"), now, "rotate")),
            ..State::default()
        };
        rolled_back(&mut st, &cred, &a, "gen-a", now);
        assert_eq!(st.current.unwrap().binding_id, None);
        assert_eq!(st.unknown_since, Some(now));
        assert_eq!(st.retiring[0].binding_id, "bind-b");
    }

    #[test]
    fn tracking_settles_only_after_a_rotation_has_been_current_for_retire_after() {
        let cred = sm_credential();
        let lost = datetime!(2026-11-23 12:00 UTC);
        let g = generation("a");
        let hour = time::Duration::hours(1);
        let mut st = State {
            unknown_since: Some(lost),
            ..State::default()
        };
        assert!(
            settle_tracking(&mut st, &cred, lost + hour * 5),
            "no current at all"
        );
        st.current = Some(current(&g, Some("b1"), lost - hour, "rotate"));
        assert!(
            settle_tracking(&mut st, &cred, lost + hour * 5),
            "committed before the loss"
        );
        st.current = Some(current(&g, Some("b1"), lost + hour, "rollback"));
        assert!(
            settle_tracking(&mut st, &cred, lost + hour * 5),
            "a rollback settles nothing"
        );
        st.current = Some(current(&g, Some("b1"), lost + hour, "rotate"));
        assert!(
            settle_tracking(&mut st, &cred, lost + hour + hour / 2),
            "not yet retire_after"
        );
        assert!(st.unknown_since.is_some());
        assert!(!settle_tracking(&mut st, &cred, lost + hour * 2));
        assert!(st.unknown_since.is_none(), "the mark is cleared");
        // A date at the end of time cannot overflow.
        st.unknown_since = Some(lost);
        st.current = Some(current(
            &g,
            Some("b1"),
            datetime!(9999-12-31 23:59 UTC),
            "rotate",
        ));
        assert!(settle_tracking(&mut st, &cred, lost));
    }

    #[test]
    fn decisions() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let valid = |renew: OffsetDateTime, after: OffsetDateTime| CurrentView::Valid {
            not_after: after,
            renews_at: renew,
        };
        let later = now + time::Duration::days(2);
        let far = now + time::Duration::days(5);
        assert_eq!(
            decide(true, &valid(later, far), Some(far), now),
            Decision::Rotate(Reason::Forced)
        );
        assert_eq!(
            decide(false, &valid(later, far), None, now),
            Decision::NotDue { renews_at: later }
        );
        let past = now - time::Duration::hours(1);
        assert_eq!(
            decide(false, &valid(past, far), None, now),
            Decision::Rotate(Reason::Due)
        );
        assert_eq!(
            decide(false, &valid(past, past), None, now),
            Decision::Rotate(Reason::Expired)
        );
        assert_eq!(
            decide(false, &CurrentView::Missing, None, now),
            Decision::Rotate(Reason::Missing)
        );
        assert_eq!(
            decide(false, &CurrentView::Unusable("x".into()), Some(past), now),
            Decision::Rotate(Reason::Unusable)
        );
        assert_eq!(
            decide(false, &valid(past, far), Some(later), now),
            Decision::BackingOff { until: later }
        );
    }

    fn iss(params: Value) -> SmIssuer {
        SmIssuer {
            service_manager: "main".into(),
            instance_id: "i".into(),
            binding_prefix: "orders".into(),
            key_length: 4096,
            validity_days: 3,
            app_identifier: Some("orders".into()),
            certificate: CertificateMode::ServiceManaged,
            key_type: crate::config::KeyType::EcdsaP256,
            certificate_pinning: false,
            signer: None,
            parameters: params.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn parameters_per_kind_with_pass_through() {
        let p = binding_parameters(
            Kind::Xsuaa,
            &iss(json!({"x509": {"ensure-uniqueness": true}, "extra": 1})),
            None,
        );
        assert_eq!(
            p,
            json!({"credential-type": "x509", "extra": 1,
                   "x509": {"key-length": 4096, "validity": 3, "validity-type": "DAYS", "ensure-uniqueness": true}})
        );
        let p = binding_parameters(Kind::Identity, &iss(json!({})), None);
        assert_eq!(
            p,
            json!({"credential-type": "X509_GENERATED", "key-length": 4096, "validity": 3,
                   "validity-type": "DAYS", "app-identifier": "orders"})
        );
        let p = binding_parameters(Kind::Xsuaa, &iss(json!({})), Some("PEM"));
        assert_eq!(
            p["x509"],
            json!({"certificate": "PEM", "certificate-pinning": false})
        );
        let p = binding_parameters(Kind::Identity, &iss(json!({})), Some("PEM"));
        assert_eq!(
            p,
            json!({"credential-type": "X509_PROVIDED", "certificate": "PEM"})
        );
    }

    #[test]
    fn a_rotation_whose_state_was_not_saved_says_so_and_counts_as_failed() {
        let now = OffsetDateTime::now_utc();
        let summary = |state_not_saved: Option<String>| Summary {
            credential: "orders".into(),
            outcome: Outcome::Rotated {
                reason: Reason::Due,
                old_not_after: None,
                new_not_after: now,
                old_binding: None,
                new_binding: Some("b2".into()),
                generation: "..g".into(),
                hook_failures: Vec::new(),
                state_not_saved,
            },
            reconciled: Vec::new(),
            retired: Vec::new(),
            retire_errors: Vec::new(),
            duration_ms: 1,
        };
        let ok = summary(None);
        assert!(!ok.state_not_saved() && !ok.line().contains("not saved"));
        let bad = summary(Some("disk full".into()));
        assert!(bad.state_not_saved());
        assert!(
            bad.line().contains(
                "the new generation is live in the target, but its state was not saved: disk full"
            ),
            "{}",
            bad.line()
        );
    }

    #[test]
    fn binding_names_are_utc_stamped() {
        assert_eq!(
            binding_name("orders", datetime!(2026-11-23 09:05:07.9 +01:00)),
            "orders-20261123T080507Z"
        );
    }
}
