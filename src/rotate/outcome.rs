//! What a run reports: the step a failure happened at (`Step`), the failure itself, the
//! outcome per credential and the one-line `Summary` that `certrot rotate` prints.

use super::*;

pub use crate::state::Step;

/// A failed step: where, the stable label, and a plain message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub step: Step,
    pub label: String,
    pub message: String,
}

pub(super) fn failure(step: Step, label: &str, message: impl Into<String>) -> Failure {
    Failure {
        step,
        label: label.to_string(),
        message: message.into(),
    }
}

pub(super) fn sm_failure(step: Step, e: &SmError) -> Failure {
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
    /// What the run did to each replica (none without replicas).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaReport>,
    pub duration_ms: u64,
}

/// One replica after a run: `in-sync`, `written` (with the generation's name there),
/// `failed` (with why; retried with backoff), or `waiting` (backing off after a failure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicaReport {
    pub target: String,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ReplicaReport {
    pub fn failed(&self) -> bool {
        self.result == "failed" || self.result == "waiting"
    }
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
        let behind: Vec<String> = self
            .replicas
            .iter()
            .filter(|r| r.failed())
            .map(|r| format!("{}: {}", r.target, r.detail.as_deref().unwrap_or(&r.result)))
            .collect();
        if !behind.is_empty() {
            s.push_str(&format!(
                "; {} replica(s) not up to date (the replaced binding stays until they are): {}",
                behind.len(),
                behind.join("; ")
            ));
        }
        s
    }

    /// A replica does not serve the current generation after this run.
    pub fn replicas_failed(&self) -> bool {
        self.replicas.iter().any(ReplicaReport::failed)
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

#[cfg(test)]
mod tests {
    use super::*;

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
            replicas: Vec::new(),
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
}
