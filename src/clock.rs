//! Wall-clock time behind a trait, so that the daemon's loop and the rotation pipeline read
//! time from one injected source: the system clock in production, a clock that follows
//! tokio's pausable time (and can be set) in tests.

use time::OffsetDateTime;

/// Wall-clock time as certrot sees it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Wall time that advances with tokio's clock (pausable in tests), and can be set like a
/// real clock is set by hand, by NTP or by a resume from suspend.
pub struct TokioClock {
    /// The wall time at `start`.
    wall: std::sync::Mutex<OffsetDateTime>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(wall: OffsetDateTime) -> TokioClock {
        TokioClock {
            wall: std::sync::Mutex::new(wall),
            start: tokio::time::Instant::now(),
        }
    }

    /// Steps the wall clock by `by` (forward or back); tokio's clock is not touched.
    pub fn step(&self, by: time::Duration) {
        let mut wall = self.wall.lock().unwrap_or_else(|e| e.into_inner());
        *wall += by;
    }
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        let wall = *self.wall.lock().unwrap_or_else(|e| e.into_inner());
        wall + self.start.elapsed()
    }
}
