//! The steps a run takes on a credential's state, as pure `State → State` functions of an
//! outcome and an instant: no I/O and no clock (the caller passes the instant it read from
//! its injected clock), so every step is verified offline on a fake clock.
//!
//! Two rules hold after every step, whatever the state before it: the binding of the current
//! generation is never in the retirement queue (retiring it would revoke what the target
//! serves), and a binding is queued at most once.

use super::{
    CommitSource, CurrentRecord, RetireReason, RetiringRecord, RotationRecord, RotationResult,
    State, Step,
};
use crate::x509::CertInfo;
use time::OffsetDateTime;

/// Where and when the binding of a replaced generation is retired.
#[derive(Clone, Debug, PartialEq)]
pub struct RetirePlan {
    /// The Service Manager that holds it.
    pub service_manager: String,
    /// Its deadline: the commit plus `retire_after`, or the commit itself with
    /// `--revoke-previous`.
    pub at: OffsetDateTime,
    pub reason: RetireReason,
}

/// What a failed rotation attempt records.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureNote {
    pub step: Step,
    /// Stable label (e.g. `unauthorized`).
    pub label: String,
    pub message: String,
}

impl CurrentRecord {
    /// The record of the generation whose leaf is `leaf`, made current at `at`.
    pub fn of(
        leaf: &CertInfo,
        generation: Option<String>,
        binding_id: Option<String>,
        source: CommitSource,
        at: OffsetDateTime,
    ) -> CurrentRecord {
        CurrentRecord {
            serial: leaf.serial.clone(),
            fingerprint_sha256: leaf.fingerprint_sha256.clone(),
            not_after: leaf.not_after,
            generation,
            binding_id,
            committed_at: at,
            source,
        }
    }
}

impl State {
    /// `current` became current. The binding of the generation it replaces — when that one
    /// has a binding other than the new one's, and `retire` says where — is queued; the new
    /// generation's binding leaves the queue if it was in it. The intent is left as it is
    /// (an import does not settle an interrupted rotation).
    pub fn committed(mut self, current: CurrentRecord, retire: Option<RetirePlan>) -> State {
        let old = self.current.take();
        if let Some(id) = &current.binding_id {
            self.retiring.retain(|r| &r.binding_id != id);
        }
        if let (Some(old), Some(plan)) = (old, retire)
            && let Some(id) = old.binding_id
            && current.binding_id.as_ref() != Some(&id)
        {
            // An imported generation's binding was made by hand: it is the adopted one.
            let reason = match (old.source, plan.reason) {
                (CommitSource::Import, RetireReason::Replaced) => RetireReason::Adopted,
                (_, r) => r,
            };
            self = self.queue(RetiringRecord {
                binding_id: id,
                service_manager: plan.service_manager,
                fingerprint_sha256: Some(old.fingerprint_sha256),
                retire_at: plan.at,
                reason,
                attempts: 0,
            });
        }
        self.current = Some(current);
        self
    }

    /// The rotation in flight is over (committed, adopted or abandoned): no intent remains.
    pub fn intent_done(mut self) -> State {
        self.pending = None;
        self
    }

    /// A rotation succeeded at `at`: its intent is done, failures and backoff are reset.
    pub fn rotation_succeeded(mut self, at: OffsetDateTime) -> State {
        self.pending = None;
        self.last_rotation = Some(RotationRecord {
            at,
            result: RotationResult::Success,
            step: None,
            label: None,
            message: None,
        });
        self.last_success = Some(at);
        self.consecutive_failures = 0;
        self.next_attempt = None;
        self
    }

    /// A rotation failed at `at`. Its intent is done unless `keep_intent` (the target serves
    /// the attempt's certificate: the next run adopts it) or its binding is not known yet
    /// (reconcile settles it); the failure is counted and the next attempt backs off, never
    /// past `critical_at` while that is ahead.
    pub fn rotation_failed(
        mut self,
        note: &FailureNote,
        keep_intent: bool,
        critical_at: Option<OffsetDateTime>,
        at: OffsetDateTime,
    ) -> State {
        if !keep_intent
            && self
                .pending
                .as_ref()
                .is_some_and(|p| p.binding_id.is_some())
        {
            self.pending = None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.next_attempt = Some(crate::policy::backoff(
            self.consecutive_failures,
            at,
            critical_at,
        ));
        self.last_rotation = Some(RotationRecord {
            at,
            result: RotationResult::Failure,
            step: Some(note.step),
            label: Some(note.label.clone()),
            message: Some(note.message.clone()),
        });
        self
    }

    /// Queues `r` for retirement. The current generation's binding is never queued; a
    /// binding already queued stays once, at the earlier of the two deadlines.
    pub fn queue(mut self, r: RetiringRecord) -> State {
        let current = self.current.as_ref().and_then(|c| c.binding_id.as_ref());
        if current == Some(&r.binding_id) {
            return self;
        }
        match self
            .retiring
            .iter_mut()
            .find(|q| q.binding_id == r.binding_id)
        {
            Some(q) => {
                q.retire_at = q.retire_at.min(r.retire_at);
                if q.fingerprint_sha256.is_none() {
                    q.fingerprint_sha256 = r.fingerprint_sha256;
                }
            }
            None => self.retiring.push(r),
        }
        self
    }

    /// The queued bindings whose deadline has passed at `now` (all of them with `all`).
    pub fn due_retirements(&self, now: OffsetDateTime, all: bool) -> Vec<RetiringRecord> {
        self.retiring
            .iter()
            .filter(|r| all || r.retire_at <= now)
            .cloned()
            .collect()
    }

    /// `binding_id` leaves the retirement queue (deleted, gone, or not to be deleted).
    pub fn unqueued(mut self, binding_id: &str) -> State {
        self.retiring.retain(|r| r.binding_id != binding_id);
        self
    }

    /// Deleting `binding_id` failed at `at`: it stays queued, tried again further out each
    /// time ([`crate::policy::retirement_backoff`]).
    /// A replica serves the current generation: it is no longer lagging.
    pub fn replica_synced(mut self, target: &str) -> State {
        self.lagging.retain(|l| l.target != target);
        self
    }

    /// A replica could not be brought up to date at `at`: retried after a backoff that
    /// grows with each failure (1 min, 2, 4, … at most 1 h), one record per replica.
    pub fn replica_failed(mut self, target: &str, error: &str, at: OffsetDateTime) -> State {
        let error = crate::text::printable(error, 300);
        match self.lagging.iter_mut().find(|l| l.target == target) {
            Some(l) => {
                l.attempts = l.attempts.saturating_add(1);
                l.next_attempt = at + crate::policy::retirement_backoff(l.attempts);
                l.error = error;
            }
            None => self.lagging.push(crate::state::LagRecord {
                target: target.to_string(),
                since: at,
                attempts: 1,
                next_attempt: at + crate::policy::retirement_backoff(1),
                error,
            }),
        }
        self
    }

    /// Forgets lag records of replicas no longer configured.
    pub fn replicas_configured(mut self, targets: &[&str]) -> State {
        self.lagging
            .retain(|l| targets.contains(&l.target.as_str()));
        self
    }

    pub fn retirement_failed(mut self, binding_id: &str, at: OffsetDateTime) -> State {
        if let Some(q) = self
            .retiring
            .iter_mut()
            .find(|q| q.binding_id == binding_id)
        {
            q.attempts = q.attempts.saturating_add(1);
            q.retire_at = at + crate::policy::retirement_backoff(q.attempts);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    //! Property tests: random runs of steps on a fake clock (an instant advanced by random
    //! amounts), checked against a model of what each step must leave behind.

    use super::*;
    use crate::state::PendingRecord;
    use proptest::prelude::*;
    use time::Duration;

    const RETIRE_AFTER: Duration = Duration::hours(24);

    fn leaf(n: u32) -> CertInfo {
        let t = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        CertInfo {
            subject: format!("CN=gen-{n}"),
            issuer: "CN=ca".into(),
            serial: format!("{n:02x}"),
            fingerprint_sha256: format!("FP:{n:04}"),
            not_before: t,
            not_after: t + Duration::days(7),
            key_type: "ECDSA P-256".into(),
            is_ca: false,
        }
    }

    #[derive(Clone, Debug)]
    enum Event {
        /// A rotation to a new binding (or none, for the csr issuer) commits.
        Rotate { binding: bool, revoke: bool },
        /// A rotation fails; its binding (if it got one) could not be deleted and is queued.
        Fail { queued: bool, keep_intent: bool },
        /// An intent is written (a rotation starts), with or without a binding id yet.
        Intent { with_binding: bool },
        /// The intent's binding is queued as an orphan (found by name after a lost answer).
        QueueIntentAsOrphan,
        /// The current binding is offered to the queue (a forged or confused caller).
        QueueCurrent,
        /// The intent's commit is adopted after an interrupted state write.
        Adopt,
        /// An import replaces the current generation (its binding is not tracked).
        Import,
        /// A queued binding (picked by index) is deleted, or its deletion fails.
        Retire { pick: usize, ok: bool },
        /// The fake clock advances.
        Advance { seconds: u32 },
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (any::<bool>(), any::<bool>())
                .prop_map(|(binding, revoke)| Event::Rotate { binding, revoke }),
            (any::<bool>(), any::<bool>()).prop_map(|(queued, keep_intent)| Event::Fail {
                queued,
                keep_intent
            }),
            any::<bool>().prop_map(|with_binding| Event::Intent { with_binding }),
            Just(Event::QueueIntentAsOrphan),
            Just(Event::QueueCurrent),
            Just(Event::Adopt),
            Just(Event::Import),
            (0usize..8, any::<bool>()).prop_map(|(pick, ok)| Event::Retire { pick, ok }),
            (0u32..200_000).prop_map(|seconds| Event::Advance { seconds }),
        ]
    }

    /// Applies `e` at `now`, checking what that step alone must do; `next` numbers
    /// bindings and generations. Returns the new state.
    fn step(st: State, e: &Event, now: OffsetDateTime, next: &mut u32) -> State {
        let before = st.clone();
        let plan = |revoke: bool| RetirePlan {
            service_manager: "sm".into(),
            at: if revoke { now } else { now + RETIRE_AFTER },
            reason: RetireReason::Replaced,
        };
        match e {
            Event::Rotate { binding, revoke } => {
                *next += 1;
                let id = binding.then(|| format!("b{next}"));
                let cur = CurrentRecord::of(
                    &leaf(*next),
                    Some(format!("gen-{next}")),
                    id.clone(),
                    CommitSource::Rotate,
                    now,
                );
                let after = st
                    .committed(cur.clone(), Some(plan(*revoke)))
                    .rotation_succeeded(now);
                assert_eq!(after.current.as_ref(), Some(&cur));
                assert_eq!(after.pending, None);
                assert_eq!(after.consecutive_failures, 0);
                assert_eq!(after.next_attempt, None);
                assert_eq!(after.last_success, Some(now));
                // The replaced binding is queued, not lost, never before its deadline.
                if let Some(old) = before.current.as_ref().and_then(|c| c.binding_id.clone()) {
                    let q = after.retiring.iter().find(|r| r.binding_id == old);
                    let q = q.expect("the replaced binding is queued");
                    let earliest = before
                        .retiring
                        .iter()
                        .find(|r| r.binding_id == old)
                        .map_or(plan(*revoke).at, |r| r.retire_at.min(plan(*revoke).at));
                    assert_eq!(q.retire_at, earliest);
                }
                after
            }
            Event::Fail {
                queued,
                keep_intent,
            } => {
                let note = FailureNote {
                    step: Step::Check,
                    label: "unauthorized".into(),
                    message: "401".into(),
                };
                let critical = now + Duration::hours(3);
                let mut after = st.rotation_failed(&note, *keep_intent, Some(critical), now);
                if *queued {
                    *next += 1;
                    after = after.queue(RetiringRecord {
                        binding_id: format!("b{next}"),
                        service_manager: "sm".into(),
                        fingerprint_sha256: None,
                        retire_at: now,
                        reason: RetireReason::FailedRotation,
                        attempts: 0,
                    });
                }
                assert_eq!(
                    after.consecutive_failures,
                    before.consecutive_failures.saturating_add(1)
                );
                let t = after
                    .next_attempt
                    .expect("a failure schedules a next attempt");
                assert!(t > now && t <= critical, "{t} not in ({now}, {critical}]");
                assert_eq!(after.current, before.current, "a failure keeps the current");
                assert_eq!(after.last_success, before.last_success);
                let r = after.last_rotation.as_ref().unwrap();
                assert_eq!((r.result, r.at), (RotationResult::Failure, now));
                // The intent goes only when its binding is known and not kept.
                let kept = before
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.binding_id.is_none());
                if *keep_intent || kept {
                    assert_eq!(after.pending, before.pending);
                } else {
                    assert_eq!(after.pending, None);
                }
                after
            }
            Event::Intent { with_binding } => {
                *next += 1;
                let mut st = st;
                st.pending = Some(PendingRecord {
                    binding_name: format!("name-{next}"),
                    binding_id: with_binding.then(|| format!("b{next}")),
                    service_manager: "sm".into(),
                    instance_id: "i".into(),
                    started_at: now,
                    fingerprint_sha256: with_binding.then(|| leaf(*next).fingerprint_sha256),
                });
                st
            }
            Event::QueueIntentAsOrphan | Event::QueueCurrent => {
                let id = match e {
                    Event::QueueCurrent => st.current.as_ref().and_then(|c| c.binding_id.clone()),
                    _ => st.pending.as_ref().and_then(|p| p.binding_id.clone()),
                };
                let Some(id) = id else {
                    return st;
                };
                st.queue(RetiringRecord {
                    binding_id: id,
                    service_manager: "sm".into(),
                    fingerprint_sha256: None,
                    retire_at: now,
                    reason: RetireReason::Orphan,
                    attempts: 0,
                })
            }
            Event::Adopt => {
                let Some(p) = st.pending.clone() else {
                    return st;
                };
                let (Some(id), Some(_)) = (p.binding_id.clone(), p.fingerprint_sha256.clone())
                else {
                    return st;
                };
                let n: u32 = id[1..].parse().unwrap();
                let cur = CurrentRecord::of(
                    &leaf(n),
                    Some(format!("gen-{n}")),
                    Some(id.clone()),
                    CommitSource::Recovered,
                    now,
                );
                let after = st.committed(cur, Some(plan(false))).intent_done();
                assert_eq!(after.pending, None);
                assert_eq!(after.current.as_ref().unwrap().binding_id, Some(id));
                // Adoption is not a rotation's outcome: its counters stay.
                assert_eq!(after.consecutive_failures, before.consecutive_failures);
                after
            }
            Event::Import => {
                *next += 1;
                let cur = CurrentRecord::of(&leaf(*next), None, None, CommitSource::Import, now);
                let after = st.committed(cur, None);
                assert_eq!(after.pending, before.pending, "an import keeps the intent");
                assert_eq!(after.retiring, before.retiring, "an import queues nothing");
                after
            }
            Event::Retire { pick, ok } => {
                let due = st.due_retirements(now, false);
                assert!(due.iter().all(|r| r.retire_at <= now));
                let Some(r) = st.retiring.get(pick % st.retiring.len().max(1)).cloned() else {
                    return st;
                };
                if *ok {
                    let after = st.unqueued(&r.binding_id);
                    assert_eq!(after.retiring.len(), before.retiring.len() - 1);
                    after
                } else {
                    let after = st.retirement_failed(&r.binding_id, now);
                    let q = after
                        .retiring
                        .iter()
                        .find(|q| q.binding_id == r.binding_id)
                        .unwrap();
                    assert_eq!(q.attempts, r.attempts + 1);
                    assert!(q.retire_at > now && q.retire_at <= now + Duration::hours(1));
                    after
                }
            }
            Event::Advance { .. } => st,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn every_run_of_steps_keeps_the_served_binding_out_of_the_queue(
            events in proptest::collection::vec(event(), 1..60),
        ) {
            let mut now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
            let mut st = State { version: 1, credential: "orders".into(), ..State::default() };
            let mut next = 0;
            let mut failures_since_success = 0u32;
            for e in &events {
                if let Event::Advance { seconds } = e {
                    now += Duration::seconds(i64::from(*seconds));
                }
                match e {
                    Event::Rotate { .. } => failures_since_success = 0,
                    Event::Fail { .. } => failures_since_success += 1,
                    _ => {}
                }
                st = step(st, e, now, &mut next);
                // The binding the target serves is never queued for deletion.
                let served = st.current.as_ref().and_then(|c| c.binding_id.clone());
                prop_assert!(served.is_none_or(|b| st.retiring.iter().all(|r| r.binding_id != b)));
                // A binding is queued at most once.
                let mut ids: Vec<_> = st.retiring.iter().map(|r| &r.binding_id).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), st.retiring.len());
                prop_assert_eq!(st.consecutive_failures, failures_since_success);
                // Every reachable state is written and read back unchanged.
                let json = serde_json::to_string(&st).unwrap();
                prop_assert_eq!(serde_json::from_str::<State>(&json).unwrap(), st.clone());
            }
        }

        #[test]
        fn the_same_step_at_the_same_instant_gives_the_same_state(
            events in proptest::collection::vec(event(), 1..30),
        ) {
            // No step reads a clock or randomness of its own.
            let run = || {
                let mut now = OffsetDateTime::UNIX_EPOCH;
                let mut st = State::default();
                let mut next = 0;
                for e in &events {
                    if let Event::Advance { seconds } = e {
                        now += Duration::seconds(i64::from(*seconds));
                    }
                    st = step(st, e, now, &mut next);
                }
                st
            };
            prop_assert_eq!(run(), run());
        }
    }

    #[test]
    fn a_commit_takes_its_own_binding_out_of_the_queue() {
        // A binding queued as an orphan (found by name after a lost answer) that turns out
        // to be the one committed must not be deleted as the replaced generation's.
        let now = OffsetDateTime::UNIX_EPOCH;
        let st = State::default().queue(RetiringRecord {
            binding_id: "b1".into(),
            service_manager: "sm".into(),
            fingerprint_sha256: None,
            retire_at: now,
            reason: RetireReason::Orphan,
            attempts: 0,
        });
        let cur = CurrentRecord::of(
            &leaf(1),
            None,
            Some("b1".into()),
            CommitSource::Recovered,
            now,
        );
        let st = st.committed(cur, None);
        assert!(st.retiring.is_empty());
        // And queueing the current binding is refused.
        let st = st.queue(RetiringRecord {
            binding_id: "b1".into(),
            service_manager: "sm".into(),
            fingerprint_sha256: None,
            retire_at: now,
            reason: RetireReason::Orphan,
            attempts: 0,
        });
        assert!(st.retiring.is_empty());
    }

    #[test]
    fn the_binding_behind_an_imported_key_is_retired_as_adopted() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let imported =
            CurrentRecord::of(&leaf(1), None, Some("b1".into()), CommitSource::Import, now);
        let rotated =
            CurrentRecord::of(&leaf(2), None, Some("b2".into()), CommitSource::Rotate, now);
        let plan = RetirePlan {
            service_manager: "sm".into(),
            at: now + RETIRE_AFTER,
            reason: RetireReason::Replaced,
        };
        let st = State::default()
            .committed(imported, None)
            .committed(rotated.clone(), Some(plan.clone()));
        assert_eq!(st.retiring[0].binding_id, "b1");
        assert_eq!(st.retiring[0].reason, RetireReason::Adopted);
        assert_eq!(
            st.retiring[0].fingerprint_sha256,
            Some(leaf(1).fingerprint_sha256)
        );
        // A rotated generation's binding is simply replaced.
        let next = CurrentRecord::of(&leaf(3), None, Some("b3".into()), CommitSource::Rotate, now);
        let st = st.committed(next, Some(plan));
        assert_eq!(st.retiring[1].reason, RetireReason::Replaced);
    }

    #[test]
    fn retirement_retries_back_off_to_an_hour() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut st = State::default().queue(RetiringRecord {
            binding_id: "b1".into(),
            service_manager: "sm".into(),
            fingerprint_sha256: None,
            retire_at: now,
            reason: RetireReason::Replaced,
            attempts: 0,
        });
        let mut waits = Vec::new();
        for _ in 0..9 {
            st = st.retirement_failed("b1", now);
            waits.push((st.retiring[0].retire_at - now).whole_minutes());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
