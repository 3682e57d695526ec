//! Per-credential state: what certrot remembers about a credential between runs, as typed
//! records whose serde names are those of the state files.
//!
//! [`transition`] holds the pure `State → State` steps a run takes (commit, failure,
//! retirement); [`file`] keeps the state as one JSON file per credential under `state_dir`.

mod file;
pub mod transition;

pub use file::{Loaded, StateError, StateStore};
pub use transition::RetirePlan;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The version of the state-file format.
pub(crate) const STATE_VERSION: u32 = 1;

/// What certrot remembers about one credential between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub version: u32,
    pub credential: String,
    /// The generation certrot last made current.
    pub current: Option<CurrentRecord>,
    /// The last rotation attempt, successful or not.
    pub last_rotation: Option<RotationRecord>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    pub consecutive_failures: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt: Option<OffsetDateTime>,
    /// A rotation in flight: written before a binding is created, so that a crash at any
    /// point leaves a record the next run reconciles.
    pub pending: Option<PendingRecord>,
    /// Bindings of replaced (or failed) generations, deleted at their deadline.
    pub retiring: Vec<RetiringRecord>,
    /// When certrot lost track of this credential (its state was unusable and set aside):
    /// until a generation committed since then has been current for `retire_after`, which
    /// bindings are live is unknown, and reconcile deletes nothing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub unknown_since: Option<OffsetDateTime>,
    /// A random id naming this installation's bindings (label `certrot_installation`), set
    /// before its first binding: another installation, or one whose state was lost, has
    /// another id and never takes these bindings for its own orphans.
    pub installation: Option<String>,
    /// Replicas that do not serve the current generation: the last failure to bring each up
    /// to date, retried with backoff (a replaced binding is not retired while one of them
    /// still serves its certificate). Absent from the file when empty (the 0.1.0 format).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lagging: Vec<LagRecord>,
}

/// A replica that could not be brought up to date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LagRecord {
    /// The replica, as `status` names it.
    pub target: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Failed attempts so far (each pushes `next_attempt` further out).
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt: OffsetDateTime,
    /// The last error (one line, no secrets: target errors name places, never contents).
    pub error: String,
}

/// The intent of a rotation in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Name of the binding being created.
    pub binding_name: String,
    /// Its id, once Service Manager answered.
    pub binding_id: Option<String>,
    pub service_manager: String,
    pub instance_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Fingerprint of the new certificate, recorded just before the commit: if the target
    /// shows it afterwards, the commit happened (even if the state write after it did not).
    #[serde(default)]
    pub fingerprint_sha256: Option<String>,
}

/// A binding queued for deletion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetiringRecord {
    pub binding_id: String,
    pub service_manager: String,
    /// Fingerprint of its certificate, when known.
    pub fingerprint_sha256: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub retire_at: OffsetDateTime,
    /// Why it is queued.
    pub reason: RetireReason,
    /// Failed deletion attempts so far (each pushes `retire_at` further out).
    #[serde(default)]
    pub attempts: u32,
}

/// The generation made current by certrot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurrentRecord {
    pub serial: String,
    pub fingerprint_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Generation directory (directory target).
    pub generation: Option<String>,
    pub binding_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub committed_at: OffsetDateTime,
    /// How it got there.
    pub source: CommitSource,
}

/// One rotation attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub result: RotationResult,
    /// Failed step, when `result` is `failure`.
    pub step: Option<Step>,
    /// Stable failure label (e.g. `unauthorized`, `sm-rate-limited`).
    #[serde(default)]
    pub label: Option<String>,
    pub message: Option<String>,
}

/// Why a binding is queued for retirement (the names are those of the state files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetireReason {
    /// Its generation was replaced by a rotation.
    Replaced,
    /// A failed attempt's binding whose deletion failed.
    FailedRotation,
    /// Found by reconcile, neither current nor queued.
    Orphan,
    /// The generation rolled away from.
    RolledBack,
    /// The binding behind an imported service key (`import --binding-id`), replaced by the
    /// first rotation: it carries no certrot labels, so it is deleted only when it is on the
    /// credential's instance and shows the imported certificate.
    Adopted,
}

impl RetireReason {
    pub fn label(self) -> &'static str {
        match self {
            RetireReason::Replaced => "replaced",
            RetireReason::FailedRotation => "failed-rotation",
            RetireReason::Orphan => "orphan",
            RetireReason::RolledBack => "rolled-back",
            RetireReason::Adopted => "adopted",
        }
    }
}

impl std::fmt::Display for RetireReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How the current generation became current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitSource {
    #[serde(rename = "import")]
    Import,
    #[serde(rename = "rotate")]
    Rotate,
    /// A rotation whose state write was interrupted, adopted by the next run.
    #[serde(rename = "rotate (recovered after an interrupted commit)")]
    Recovered,
    #[serde(rename = "rollback")]
    Rollback,
}

impl CommitSource {
    /// Made current by a rotation (not by hand).
    pub fn is_rotation(self) -> bool {
        matches!(self, CommitSource::Rotate | CommitSource::Recovered)
    }
}

/// How a rotation attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationResult {
    Success,
    Failure,
}

impl std::fmt::Display for RotationResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RotationResult::Success => "success",
            RotationResult::Failure => "failure",
        })
    }
}

/// The pipeline's steps, as failures name them (logs, metrics, state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
