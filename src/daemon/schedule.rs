//! The scheduler's pure part: from each credential's inspection and state, when does it next
//! need the pipeline (renewal due, retry after backoff, retirement deadline)? And when must
//! the loop wake next? No clock, no I/O.

use crate::state::State;
use crate::status::Report;
use time::OffsetDateTime;

/// The next instants that matter for one credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredTimes {
    pub name: String,
    /// When the pipeline should run to renew (`None`: never — no issuer configured).
    pub rotate_at: Option<OffsetDateTime>,
    /// The earliest retirement deadline, if any binding is queued.
    pub retire_at: Option<OffsetDateTime>,
    /// The next attempt to bring a lagging replica up to date, if one lags.
    pub sync_at: Option<OffsetDateTime>,
}

impl CredTimes {
    /// When the pipeline must next run for this credential.
    pub fn due_at(&self) -> Option<OffsetDateTime> {
        [self.rotate_at, self.retire_at, self.sync_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The credential's next run in words, for the log: when it renews (or why it never does
/// here), and when a queued binding retires if that comes first.
pub fn next_run_words(t: &CredTimes, now: OffsetDateTime) -> String {
    let when = |at: OffsetDateTime| {
        if at <= now {
            "now".to_string()
        } else {
            format!(
                "in {} (at {})",
                crate::policy::human(at - now),
                crate::status::short_time(at)
            )
        }
    };
    let renews = match t.rotate_at {
        Some(at) => format!("renews {}", when(at)),
        None => "is not renewed by certrot (no [credential.issuer]; `certrot import` it)".into(),
    };
    let mut out = match t.retire_at {
        Some(r) if t.rotate_at.is_none_or(|a| r < a) => {
            format!("{renews}; a replaced binding retires {}", when(r))
        }
        _ => renews,
    };
    if let Some(s) = t.sync_at {
        out.push_str(&format!("; a lagging replica is tried again {}", when(s)));
    }
    out
}

/// How many credentials the daemon names one by one at start (the rest are counted).
pub const NAMED_AT_START: usize = 20;

/// From an inspection report and the state: renewal at the policy instant (now when missing,
/// unusable or expired), never before the backoff's next attempt.
pub fn times_for(
    report: &Report,
    state: Option<&State>,
    has_issuer: bool,
    now: OffsetDateTime,
) -> CredTimes {
    let rotate_at = has_issuer.then(|| {
        let base = report.renews_at.unwrap_or(now);
        let next = state.and_then(|s| {
            crate::policy::trusted_next_attempt(s.next_attempt, now, report.critical_at)
        });
        match next {
            Some(t) if t > base => t,
            _ => base,
        }
    });
    let retire_at = state.and_then(|s| s.retiring.iter().map(|r| r.retire_at).min());
    let sync_at = state.and_then(|s| s.lagging.iter().map(|l| l.next_attempt).min());
    CredTimes {
        name: report.credential.clone(),
        rotate_at,
        retire_at,
        sync_at,
    }
}

/// The credentials whose pipeline is due at `now`, skipping those in flight or resting
/// (`rest_until`: a credential just handled is not retried before then, so a lock held by
/// another process cannot make the loop spin).
pub fn due(
    creds: &[CredTimes],
    now: OffsetDateTime,
    busy: impl Fn(&str) -> bool,
    rest_until: impl Fn(&str) -> Option<OffsetDateTime>,
) -> Vec<&str> {
    creds
        .iter()
        .filter(|c| !busy(&c.name))
        .filter(|c| c.due_at().is_some_and(|t| t <= now))
        .filter(|c| rest_until(&c.name).is_none_or(|r| r <= now))
        .map(|c| c.name.as_str())
        .collect()
}

/// When the loop must wake next: the earliest credential instant (not before its rest), the
/// cron ticks, and the heartbeat if there is one; `None` when nothing is planned at all.
pub fn next_wake(
    creds: &[CredTimes],
    busy: impl Fn(&str) -> bool,
    rest_until: impl Fn(&str) -> Option<OffsetDateTime>,
    ticks: &[OffsetDateTime],
    heartbeat: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    creds
        .iter()
        .filter(|c| !busy(&c.name))
        .filter_map(|c| {
            let t = c.due_at()?;
            Some(match rest_until(&c.name) {
                Some(r) if r > t => r,
                _ => t,
            })
        })
        .chain(ticks.iter().copied())
        .chain(heartbeat)
        .min()
}

/// A step of the wall clock smaller than this is ordinary drift (NTP slews, scheduling
/// delays) and is not treated as a step.
pub const CLOCK_STEP: time::Duration = time::Duration::seconds(5);

/// Whether the wall clock was set between two iterations: it read `before`, then the
/// monotonic clock advanced by `elapsed` and the wall clock now reads `now`. Returns the
/// step (positive: the wall clock went forward) when it is at least [`CLOCK_STEP`].
pub fn clock_step(
    before: OffsetDateTime,
    elapsed: std::time::Duration,
    now: OffsetDateTime,
) -> Option<time::Duration> {
    let expected = before + elapsed;
    let step = now - expected;
    (step.abs() >= CLOCK_STEP).then_some(step)
}

/// The next instant strictly after `after` of a cron schedule (UTC).
pub fn cron_after(schedule: &cron::Schedule, after: OffsetDateTime) -> Option<OffsetDateTime> {
    let secs = after.unix_timestamp();
    let nanos = after.nanosecond();
    let c = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, nanos)?;
    let next = schedule.after(&c).next()?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(next.timestamp_nanos_opt()?)).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_run_is_told_in_words() {
        let now = time::macros::datetime!(2026-12-02 10:00 UTC);
        let t = |rotate_at, retire_at| CredTimes {
            name: "orders".into(),
            rotate_at,
            retire_at,
            sync_at: None,
        };
        let day = time::Duration::days(1);
        assert_eq!(
            next_run_words(&t(Some(now + day * 4), None), now),
            "renews in 4d 0h (at 2026-12-06T10:00:00Z)"
        );
        assert_eq!(next_run_words(&t(Some(now), None), now), "renews now");
        assert_eq!(
            next_run_words(&t(Some(now + day * 4), Some(now + day)), now),
            "renews in 4d 0h (at 2026-12-06T10:00:00Z); a replaced binding retires in 1d 0h (at 2026-12-03T10:00:00Z)"
        );
        // A retirement after the renewal is not the next thing to say.
        assert_eq!(
            next_run_words(&t(Some(now + day), Some(now + day * 2)), now),
            "renews in 1d 0h (at 2026-12-03T10:00:00Z)"
        );
        assert!(next_run_words(&t(None, None), now).contains("no [credential.issuer]"));
    }

    use super::*;
    use crate::policy::Health;
    use crate::state::RetiringRecord;
    use time::macros::datetime;

    fn report(renews_at: Option<OffsetDateTime>) -> Report {
        let mut r = Report::bare("orders", Health::Ok, String::new());
        r.renews_at = renews_at;
        r
    }

    #[test]
    fn clock_steps_are_told_from_drift() {
        let t = datetime!(2026-11-23 12:00 UTC);
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            clock_step(t, secs(30), t + time::Duration::seconds(30)),
            None
        );
        assert_eq!(
            clock_step(t, secs(30), t + time::Duration::seconds(34)),
            None,
            "4 s of drift is not a step"
        );
        assert_eq!(
            clock_step(t, secs(30), t + time::Duration::days(30)),
            Some(time::Duration::days(30) - time::Duration::seconds(30))
        );
        assert_eq!(
            clock_step(t, secs(30), t - time::Duration::days(30)),
            Some(-time::Duration::days(30) - time::Duration::seconds(30)),
            "a step back"
        );
        // A suspended machine: the monotonic clock stood still while the wall clock ran.
        assert_eq!(
            clock_step(t, secs(0), t + time::Duration::hours(8)),
            Some(time::Duration::hours(8))
        );
    }

    #[test]
    fn renewal_backoff_and_retirement_times() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let renew = now + time::Duration::hours(5);
        let t = times_for(&report(Some(renew)), None, true, now);
        assert_eq!(t.rotate_at, Some(renew));
        assert_eq!(
            times_for(&report(None), None, true, now).rotate_at,
            Some(now)
        );
        assert_eq!(times_for(&report(None), None, false, now).rotate_at, None);
        let mut st = State {
            next_attempt: Some(now + time::Duration::minutes(50)),
            ..State::default()
        };
        st.retiring.push(RetiringRecord {
            binding_id: "b".into(),
            service_manager: "m".into(),
            fingerprint_sha256: None,
            retire_at: now + time::Duration::minutes(20),
            reason: crate::state::RetireReason::Replaced,
            attempts: 0,
        });
        let renew_soon = now + time::Duration::minutes(10);
        let t = times_for(&report(Some(renew_soon)), Some(&st), true, now);
        assert_eq!(
            t.rotate_at, st.next_attempt,
            "backoff wins over an earlier renewal"
        );
        assert_eq!(
            t.due_at(),
            Some(now + time::Duration::minutes(20)),
            "retirement first"
        );
        // A next attempt a month out (written while the clock ran ahead) is not trusted.
        let ahead = State {
            next_attempt: Some(now + time::Duration::days(30)),
            ..State::default()
        };
        let t = times_for(&report(Some(renew_soon)), Some(&ahead), true, now);
        assert_eq!(t.rotate_at, Some(renew_soon), "the renewal, not the month");
    }

    #[test]
    fn due_and_wake_respect_busy_and_rest() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let c = |n: &str, at: OffsetDateTime| CredTimes {
            name: n.into(),
            rotate_at: Some(at),
            retire_at: None,
            sync_at: None,
        };
        let creds = vec![
            c("a", now - time::Duration::seconds(1)),
            c("b", now),
            c("c", now + time::Duration::minutes(3)),
        ];
        assert_eq!(due(&creds, now, |_| false, |_| None), vec!["a", "b"]);
        assert_eq!(due(&creds, now, |n| n == "a", |_| None), vec!["b"]);
        let rest = now + time::Duration::seconds(5);
        assert_eq!(
            due(&creds, now, |_| false, |n| (n == "b").then_some(rest)),
            vec!["a"]
        );
        let beat = Some(now + time::Duration::seconds(30));
        assert_eq!(next_wake(&creds[2..], |_| false, |_| None, &[], beat), beat);
        assert_eq!(
            next_wake(
                &creds,
                |n| n != "c",
                |_| None,
                &[],
                Some(now + time::Duration::hours(1))
            ),
            Some(now + time::Duration::minutes(3))
        );
        assert_eq!(
            next_wake(&creds[1..2], |_| false, |_| Some(rest), &[], beat),
            Some(rest)
        );
        // Without a heartbeat: the earliest event, or nothing planned at all.
        assert_eq!(
            next_wake(&creds[2..], |_| false, |_| None, &[], None),
            Some(now + time::Duration::minutes(3))
        );
        assert_eq!(next_wake(&creds[2..], |_| true, |_| None, &[], None), None);
    }

    #[test]
    fn cron_ticks_in_utc() {
        let s: cron::Schedule = "0 */5 * * * *".parse().unwrap();
        let t = datetime!(2026-11-23 12:03:10 UTC);
        assert_eq!(cron_after(&s, t), Some(datetime!(2026-11-23 12:05 UTC)));
        assert_eq!(
            cron_after(&s, datetime!(2026-11-23 12:05 UTC)),
            Some(datetime!(2026-11-23 12:10 UTC))
        );
    }
}
