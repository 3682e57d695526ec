//! Wall-clock time behind a trait, so that the daemon's loop and the rotation pipeline read
//! time from one injected source: the system clock in production, a clock that follows
//! tokio's pausable time (and can be set) in tests. A clock may also say when it is set, so
//! the daemon need not wake periodically to look ([`WatchedClock`]: Linux's timerfd).

use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// Wall-clock time as certrot sees it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;

    /// Notified whenever the wall clock is set (by hand, by NTP, on resume from suspend),
    /// when this clock can tell; `None`: it cannot, and a reader must look for steps itself.
    fn set_signal(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The system clock, and a signal when it is set: a `CLOCK_REALTIME` timerfd armed with
/// `TFD_TIMER_CANCEL_ON_SET` far in the future, whose read fails with `ECANCELED` whenever
/// the clock is set (`clock_settime`, NTP stepping it, a resume from suspend). Needs a tokio
/// runtime; the watch stops when the clock is dropped. Where the kernel offers no such timer
/// the clock cannot tell (`set_signal` is `None`), and says so once in the log.
pub struct WatchedClock {
    watch: Option<(Arc<Notify>, tokio::task::JoinHandle<()>)>,
    /// False once the watch ended (an error re-arming or reading the timer): the clock can
    /// no longer tell, and says so through `set_signal`.
    watching: Arc<std::sync::atomic::AtomicBool>,
}

impl WatchedClock {
    /// Starts watching.
    pub fn start() -> WatchedClock {
        let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
        match Self::watch(watching.clone()) {
            Ok(w) => WatchedClock {
                watch: Some(w),
                watching,
            },
            Err(e) => {
                tracing::warn!(
                    "the wall clock cannot be watched (timerfd: {e}): the loop looks for clock steps every 30 s instead"
                );
                watching.store(false, std::sync::atomic::Ordering::Relaxed);
                WatchedClock {
                    watch: None,
                    watching,
                }
            }
        }
    }

    fn watch(
        watching: Arc<std::sync::atomic::AtomicBool>,
    ) -> std::io::Result<(Arc<Notify>, tokio::task::JoinHandle<()>)> {
        use rustix::time::{TimerfdClockId, TimerfdFlags};
        let fd = rustix::time::timerfd_create(
            TimerfdClockId::Realtime,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        arm(&fd)?;
        // SAFETY: `fd` is an `OwnedFd` just created and moved into the `AsyncFd`, which owns
        // it (open, the same descriptor) until it is dropped.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        let set = Arc::new(Notify::new());
        let signal = set.clone();
        let task = tokio::spawn(async move {
            // However the watch ends, the loop is woken to learn it can no longer be told.
            let ended = |e: &dyn std::fmt::Display| {
                tracing::warn!(
                    "watching the wall clock: {e}; the loop looks for clock steps every 30 s instead"
                );
                watching.store(false, std::sync::atomic::Ordering::Relaxed);
                signal.notify_one();
            };
            loop {
                let mut ready = match fd.readable().await {
                    Ok(r) => r,
                    Err(e) => return ended(&e),
                };
                let mut buf = [0u8; 8];
                match rustix::io::read(fd.get_ref(), &mut buf) {
                    Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                    // Set (ECANCELED), or the far-away expiry itself: either way, re-arm.
                    Err(rustix::io::Errno::CANCELED) | Ok(_) => {
                        signal.notify_one();
                        if let Err(e) = arm(fd.get_ref()) {
                            return ended(&e);
                        }
                    }
                    Err(e) => return ended(&e),
                }
            }
        });
        Ok((set, task))
    }
}

/// Arms `fd` to expire a century from now, cancelled when the clock is set.
fn arm(fd: &rustix::fd::OwnedFd) -> std::io::Result<()> {
    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec};
    let far = OffsetDateTime::now_utc().unix_timestamp() + 100 * 365 * 86_400;
    let spec = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: far,
            tv_nsec: 0,
        },
    };
    rustix::time::timerfd_settime(
        fd,
        TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
        &spec,
    )?;
    Ok(())
}

impl Drop for WatchedClock {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.watch {
            task.abort();
        }
    }
}

impl Clock for WatchedClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn set_signal(&self) -> Option<Arc<Notify>> {
        if !self.watching.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.watch.as_ref().map(|(set, _)| set.clone())
    }
}

/// Wall time that advances with tokio's clock (pausable in tests), and can be set like a
/// real clock is set by hand, by NTP or by a resume from suspend (and says so).
pub struct TokioClock {
    /// The wall time at `start`.
    wall: std::sync::Mutex<OffsetDateTime>,
    start: tokio::time::Instant,
    set: Arc<Notify>,
}

impl TokioClock {
    pub fn starting_at(wall: OffsetDateTime) -> TokioClock {
        TokioClock {
            wall: std::sync::Mutex::new(wall),
            start: tokio::time::Instant::now(),
            set: Arc::new(Notify::new()),
        }
    }

    /// Steps the wall clock by `by` (forward or back); tokio's clock is not touched.
    pub fn step(&self, by: time::Duration) {
        let mut wall = self.wall.lock().unwrap_or_else(|e| e.into_inner());
        *wall += by;
        self.set.notify_one();
    }
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        let wall = *self.wall.lock().unwrap_or_else(|e| e.into_inner());
        wall + self.start.elapsed()
    }

    fn set_signal(&self) -> Option<Arc<Notify>> {
        Some(self.set.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel offers the timer, armed a century ahead with cancel-on-set, and a clock
    /// that is not set does not signal.
    #[tokio::test]
    async fn the_system_clock_is_watched_and_quiet_while_not_set() {
        let c = WatchedClock::start();
        let signal = c.set_signal().expect("a timerfd on this kernel");
        let quiet =
            tokio::time::timeout(std::time::Duration::from_millis(200), signal.notified()).await;
        assert!(quiet.is_err(), "signalled although the clock was not set");
        let d = c.now() - OffsetDateTime::now_utc();
        assert!(d.abs() < time::Duration::seconds(1));
    }
}
