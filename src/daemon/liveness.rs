//! What `/healthz` reads from the scheduler loop: the instant by which the loop must have
//! run again — its planned wake while it sleeps, the end of a grace for the work it is doing
//! while awake — and how often it has woken. The loop sleeps until its next event, so
//! liveness follows the plan, not a periodic heartbeat.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use time::OffsetDateTime;

/// How long the loop may be late for its own plan (or busy in one iteration) before
/// `/healthz` calls it stuck.
pub const GRACE: time::Duration = time::Duration::seconds(90);

/// Shared between the loop (writer) and the HTTP server (reader).
#[derive(Debug)]
pub struct Liveness {
    /// Unix seconds by which the loop must have started its next iteration.
    deadline: AtomicI64,
    /// Iterations of the loop so far.
    wakeups: AtomicU64,
}

impl Liveness {
    /// A loop starting at `now` (its first iteration is due within [`GRACE`]).
    pub fn starting(now: OffsetDateTime) -> Liveness {
        Liveness {
            deadline: AtomicI64::new((now + GRACE).unix_timestamp()),
            wakeups: AtomicU64::new(0),
        }
    }

    /// The loop woke at `now` and works: it must be back within [`GRACE`].
    pub fn woke(&self, now: OffsetDateTime) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        self.deadline
            .store((now + GRACE).unix_timestamp(), Ordering::Relaxed);
    }

    /// The loop, woken by an event, works on it before its next iteration: it must be done
    /// within [`GRACE`] (not counted as a wake-up: the next iteration counts it).
    pub fn working(&self, now: OffsetDateTime) {
        self.deadline
            .store((now + GRACE).unix_timestamp(), Ordering::Relaxed);
    }

    /// The loop sleeps until `wake` (`None`: until an event — a finished rotation, a signal,
    /// the clock being set — with nothing planned).
    pub fn sleeps_until(&self, wake: Option<OffsetDateTime>) {
        let d = wake.map_or(i64::MAX, |w| (w + GRACE).unix_timestamp());
        self.deadline.store(d, Ordering::Relaxed);
    }

    /// By how many seconds the loop is overdue at `now`, if it is.
    pub fn overdue(&self, now: OffsetDateTime) -> Option<i64> {
        let late = now.unix_timestamp() - self.deadline.load(Ordering::Relaxed);
        (late > 0).then_some(late)
    }

    /// Iterations of the loop so far.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overdue_only_past_the_planned_wake_or_the_work_grace() {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let l = Liveness::starting(t);
        assert_eq!(l.overdue(t + GRACE), None);
        assert_eq!(l.overdue(t + GRACE + time::Duration::seconds(5)), Some(5));
        // Asleep for three days by plan: alive all along, overdue only past the plan.
        l.sleeps_until(Some(t + time::Duration::days(3)));
        assert_eq!(l.overdue(t + time::Duration::days(3)), None);
        assert_eq!(
            l.overdue(t + time::Duration::days(3) + GRACE + time::Duration::seconds(1)),
            Some(1)
        );
        // Awake: the work grace again, whatever was planned.
        l.woke(t + time::Duration::days(1));
        assert_eq!(l.wakeups(), 1);
        assert!(l.overdue(t + time::Duration::days(2)).is_some());
        // Waiting for an event with nothing planned is never overdue.
        l.sleeps_until(None);
        assert_eq!(l.overdue(t + time::Duration::days(10_000)), None);
    }
}
