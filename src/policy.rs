//! When to renew (pure): renewal time, deterministic jitter, maintenance windows, failure
//! backoff, and the health of a certificate at a given instant.
//!
//! Every function here is a pure function of its arguments: no clock, no I/O. Times are UTC.

use crate::config::{Policy, Window};
use crate::units::RenewBefore;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// First retry delay after a failure.
pub const BACKOFF_START: Duration = Duration::minutes(1);
/// Longest delay between retries.
pub const BACKOFF_CAP: Duration = Duration::hours(1);
/// Longest delay between retries once the certificate is inside `critical_before`.
pub const BACKOFF_CRITICAL_CAP: Duration = Duration::minutes(5);

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    pub fn lifetime(&self) -> Duration {
        (self.not_after - self.not_before).max(Duration::ZERO)
    }
}

/// The result of the renewal computation.
#[derive(Clone, Debug, PartialEq)]
pub struct Renewal {
    /// When to renew: nominal time, moved earlier by jitter, then to a window.
    pub at: OffsetDateTime,
    /// Inside this instant the certificate is CRITICAL.
    pub critical_at: OffsetDateTime,
    /// Set when the configured `renew_before` could not be honoured.
    pub warning: Option<String>,
}

/// How far before `not_after` to renew, given the actual lifetime.
pub fn renew_before(rb: RenewBefore, lifetime: Duration) -> (Duration, Option<String>) {
    let third = lifetime / 3;
    match rb {
        RenewBefore::Fraction(f) => (lifetime * f.get(), None),
        RenewBefore::Span(s) => {
            let d = s.to_time();
            if d >= lifetime {
                (
                    third,
                    Some(format!(
                        "renew_before {s} is not shorter than the certificate's lifetime of {}; \
                         renewing at two thirds of the lifetime instead",
                        crate::units::Span(std::time::Duration::from_secs(
                            lifetime.whole_seconds().max(0) as u64
                        ))
                    )),
                )
            } else {
                (d, None)
            }
        }
    }
}

/// A number in `[0, 1)` derived from the certificate serial: stable across restarts.
pub fn serial_fraction(serial: &str) -> f64 {
    let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, serial.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_ref()[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// How much earlier than nominal this certificate renews: up to `jitter` of the lifetime.
pub fn jitter_offset(serial: &str, jitter: f64, lifetime: Duration) -> Duration {
    lifetime * (serial_fraction(serial) * jitter)
}

fn to_chrono(t: OffsetDateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
}

fn from_chrono(t: chrono::DateTime<chrono::Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}

/// The latest window start at or before `t`, if that window is still open at `t`.
fn open_window_at(w: &Window, t: OffsetDateTime) -> bool {
    let Some(probe) = to_chrono(t + Duration::seconds(1)) else {
        return false;
    };
    w.cron
        .schedule()
        .after(&probe)
        .next_back()
        .and_then(from_chrono)
        .is_some_and(|start| start <= t && t < start + w.duration.to_time())
}

/// Moves `t` to a window: unchanged if a window is open at `t`; else the latest window start
/// in `[lower, t)`; else the earliest start in `(t, critical_at)`; else unchanged.
pub fn apply_windows(
    windows: &[Window],
    t: OffsetDateTime,
    lower: OffsetDateTime,
    critical_at: OffsetDateTime,
) -> OffsetDateTime {
    if windows.is_empty() || t >= critical_at || windows.iter().any(|w| open_window_at(w, t)) {
        return t;
    }
    let Some(tc) = to_chrono(t) else { return t };
    let before = windows
        .iter()
        .filter_map(|w| {
            w.cron
                .schedule()
                .after(&tc)
                .next_back()
                .and_then(from_chrono)
        })
        .filter(|s| *s >= lower && *s < t)
        .max();
    if let Some(s) = before {
        return s;
    }
    windows
        .iter()
        .filter_map(|w| w.cron.schedule().after(&tc).next().and_then(from_chrono))
        .filter(|s| *s > t && *s < critical_at)
        .min()
        .unwrap_or(t)
}

/// Computes when to renew a certificate with the given validity and serial.
pub fn renewal(policy: &Policy, v: Validity, serial: &str) -> Renewal {
    let lifetime = v.lifetime();
    let (rb, warning) = renew_before(policy.renew_before, lifetime);
    let critical_at = v.not_after - policy.critical_before.to_time().min(lifetime);
    let nominal = v.not_after - rb;
    let jittered = nominal - jitter_offset(serial, policy.jitter.0.get(), lifetime);
    let clamped = jittered.clamp(v.not_before, v.not_after);
    let at = apply_windows(&policy.windows, clamped, v.not_before, critical_at)
        .clamp(v.not_before, v.not_after);
    Renewal {
        at,
        critical_at,
        warning,
    }
}

/// When to try again after `failures` consecutive failures (≥ 1), the last at `failed_at`.
/// Exponential from 1 min, capped at 1 h, never past `critical_at`; once there (or with no
/// usable certificate, `critical_at = None`), at most every 5 min.
pub fn backoff(
    failures: u32,
    failed_at: OffsetDateTime,
    critical_at: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let exp = failures.saturating_sub(1).min(16);
    let delay = (BACKOFF_START * (1i32 << exp)).min(BACKOFF_CAP);
    match critical_at {
        Some(c) if failed_at < c => (failed_at + delay).min(c),
        _ => failed_at + delay.min(BACKOFF_CRITICAL_CAP),
    }
}

/// How long a queued binding whose deletion failed `attempts` times waits before the next
/// try: 1 minute, doubling each time, at most an hour.
pub fn retirement_backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(6);
    (Duration::minutes(1) * (1i32 << exp)).min(Duration::hours(1))
}

/// A recorded next attempt as far as it can be trusted at `now`. Backoff never waits more
/// than [`BACKOFF_CAP`] from a failure (and a failure is never in the future), so a value
/// further out than that — written while the clock ran ahead — is not trusted at all: the
/// attempt is due now (and its outcome records a fresh one). A value past the credential's
/// critical point is clamped to it; once that point has passed, anything beyond
/// [`BACKOFF_CRITICAL_CAP`] is not trusted either.
pub fn trusted_next_attempt(
    next: Option<OffsetDateTime>,
    now: OffsetDateTime,
    critical_at: Option<OffsetDateTime>,
) -> Option<OffsetDateTime> {
    let t = next?;
    let horizon = match critical_at {
        Some(c) if c <= now => BACKOFF_CRITICAL_CAP,
        _ => BACKOFF_CAP,
    };
    if t > now + horizon {
        return None;
    }
    match critical_at {
        Some(c) if c > now => Some(t.min(c)),
        _ => Some(t),
    }
}

/// Monitoring-plugin style health of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Health {
    pub fn exit_code(self) -> i32 {
        self as i32
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// Health of a valid, matching certificate at `now`, with a one-line reason.
pub fn assess(now: OffsetDateTime, v: Validity, r: &Renewal) -> (Health, String) {
    let left = v.not_after - now;
    if now >= v.not_after {
        (Health::Critical, format!("expired {} ago", human(-left)))
    } else if now < v.not_before {
        (
            Health::Critical,
            format!("not valid for another {}", human(v.not_before - now)),
        )
    } else if now >= r.critical_at {
        (Health::Critical, format!("expires in {}", human(left)))
    } else if now >= r.at {
        (
            Health::Warning,
            format!(
                "renewal overdue by {}; expires in {}",
                human(now - r.at),
                human(left)
            ),
        )
    } else {
        (
            Health::Ok,
            format!(
                "expires in {}, renews in {}",
                human(left),
                human(r.at - now)
            ),
        )
    }
}

/// A short human rendering of a duration: `2d 3h`, `5h 10m`, `42s`.
pub fn human(d: Duration) -> String {
    let s = d.whole_seconds().max(0);
    let (days, hours, mins, secs) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod trust_tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_next_attempt_from_a_clock_that_ran_ahead_is_not_trusted() {
        let now = datetime!(2026-12-02 00:00 UTC);
        let month = now + Duration::days(30);
        assert_eq!(trusted_next_attempt(Some(month), now, None), None);
        let critical = now + Duration::minutes(20);
        assert_eq!(trusted_next_attempt(Some(month), now, Some(critical)), None);
        let later = now + Duration::minutes(50);
        assert_eq!(
            trusted_next_attempt(Some(later), now, Some(critical)),
            Some(critical),
            "never past the critical point"
        );
        let past = Some(now - Duration::hours(1));
        assert_eq!(trusted_next_attempt(Some(later), now, past), None);
        let soon = now + Duration::minutes(2);
        assert_eq!(trusted_next_attempt(Some(soon), now, past), Some(soon));
        assert_eq!(
            trusted_next_attempt(Some(soon), now, Some(critical)),
            Some(soon)
        );
        assert_eq!(trusted_next_attempt(None, now, Some(critical)), None);
        // Whatever was stored, the result is never later than a correct backoff could be.
        for days in [0, 1, 30, 3650] {
            let t = now + Duration::days(days) + Duration::minutes(3);
            if let Some(r) = trusted_next_attempt(Some(t), now, Some(critical)) {
                assert!(r <= now + BACKOFF_CAP && r <= critical);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CronSpec;
    use crate::units::{Fraction, Jitter, Span};
    use proptest::prelude::*;
    use time::macros::datetime;

    fn policy(rb: RenewBefore, jitter: f64) -> Policy {
        Policy {
            renew_before: rb,
            jitter: Jitter(Fraction::new(jitter).unwrap()),
            ..Policy::default()
        }
    }

    fn week() -> Validity {
        Validity {
            not_before: datetime!(2026-11-01 00:00 UTC),
            not_after: datetime!(2026-11-08 00:00 UTC),
        }
    }

    #[test]
    fn default_renews_at_two_thirds() {
        let r = renewal(&policy(RenewBefore::DEFAULT, 0.0), week(), "01");
        assert_eq!(r.at, datetime!(2026-11-05 16:00 UTC));
        assert_eq!(r.critical_at, datetime!(2026-11-07 00:00 UTC));
        assert!(r.warning.is_none());
    }

    #[test]
    fn too_long_renew_before_falls_back_with_warning() {
        let r = renewal(
            &policy(RenewBefore::Span(Span::hours(24 * 8)), 0.0),
            week(),
            "01",
        );
        assert_eq!(r.at, datetime!(2026-11-05 16:00 UTC));
        assert!(r.warning.unwrap().contains("not shorter than"));
    }

    #[test]
    fn fixed_renew_before() {
        let r = renewal(
            &policy(RenewBefore::Span(Span::hours(48)), 0.0),
            week(),
            "01",
        );
        assert_eq!(r.at, datetime!(2026-11-06 00:00 UTC));
    }

    #[test]
    fn window_moves_renewal_to_latest_start_before() {
        let mut p = policy(RenewBefore::DEFAULT, 0.0);
        p.windows = vec![Window {
            cron: CronSpec::parse("0 0 2 * * *").unwrap(),
            duration: Span::hours(2),
        }];
        // nominal 2026-11-05 16:00 → latest 02:00 start before it
        assert_eq!(
            renewal(&p, week(), "01").at,
            datetime!(2026-11-05 02:00 UTC)
        );
        // nominal inside a window stays
        p.windows[0].duration = Span::hours(20);
        assert_eq!(
            renewal(&p, week(), "01").at,
            datetime!(2026-11-05 16:00 UTC)
        );
    }

    #[test]
    fn window_next_start_when_none_before_and_ignored_when_critical() {
        let mut p = policy(RenewBefore::DEFAULT, 0.0);
        // Windows only on 2026-11-06 (a Friday) at 10:00.
        p.windows = vec![Window {
            cron: CronSpec::parse("0 0 10 6 Nov * 2026").unwrap(),
            duration: Span::hours(1),
        }];
        assert_eq!(
            renewal(&p, week(), "01").at,
            datetime!(2026-11-06 10:00 UTC)
        );
        // A window only after critical_at is ignored.
        p.windows[0].cron = CronSpec::parse("0 0 10 7 Nov * 2026").unwrap();
        assert_eq!(
            renewal(&p, week(), "01").at,
            datetime!(2026-11-05 16:00 UTC)
        );
    }

    #[test]
    fn backoff_sequence() {
        let t = datetime!(2026-11-02 00:00 UTC);
        let crit = datetime!(2026-11-07 00:00 UTC);
        let c = Some(crit);
        let delays: Vec<i64> = (1..=9)
            .map(|n| (backoff(n, t, c) - t).whole_minutes())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // capped at critical_at
        let near = datetime!(2026-11-06 23:50 UTC);
        assert_eq!(backoff(7, near, c), crit);
        // inside critical: every 5 minutes at most
        let inside = datetime!(2026-11-07 01:00 UTC);
        assert_eq!(backoff(9, inside, c) - inside, Duration::minutes(5));
        assert_eq!(backoff(9, inside, None) - inside, Duration::minutes(5));
    }

    #[test]
    fn health_states() {
        let v = week();
        let r = renewal(&policy(RenewBefore::DEFAULT, 0.0), v, "01");
        assert_eq!(assess(datetime!(2026-11-02 00:00 UTC), v, &r).0, Health::Ok);
        assert_eq!(
            assess(datetime!(2026-11-06 00:00 UTC), v, &r).0,
            Health::Warning
        );
        assert_eq!(
            assess(datetime!(2026-11-07 06:00 UTC), v, &r).0,
            Health::Critical
        );
        let (h, why) = assess(datetime!(2026-11-09 00:00 UTC), v, &r);
        assert_eq!(h, Health::Critical);
        assert_eq!(why, "expired 1d 0h ago");
        assert_eq!(
            assess(datetime!(2026-10-01 00:00 UTC), v, &r).0,
            Health::Critical
        );
    }

    fn validity_strategy() -> impl Strategy<Value = Validity> {
        (0i64..2_000_000_000, 1i64..(400 * 86_400)).prop_map(|(start, life)| Validity {
            not_before: OffsetDateTime::from_unix_timestamp(start).unwrap(),
            not_after: OffsetDateTime::from_unix_timestamp(start + life).unwrap(),
        })
    }

    fn renew_strategy() -> impl Strategy<Value = RenewBefore> {
        prop_oneof![
            (1u64..(800 * 86_400)).prop_map(|s| RenewBefore::Span(Span::secs(s))),
            (0.001f64..0.999).prop_map(|f| RenewBefore::Fraction(Fraction::new(f).unwrap())),
        ]
    }

    proptest! {
        #[test]
        fn renewal_always_within_validity(v in validity_strategy(), rb in renew_strategy(),
                                          jitter in 0.0f64..0.5, serial in "[0-9a-f:]{2,40}",
                                          windowed in any::<bool>()) {
            let mut p = policy(rb, jitter);
            if windowed {
                p.windows = vec![Window { cron: CronSpec::parse("0 0 3 * * Sat").unwrap(), duration: Span::hours(2) }];
            }
            let r = renewal(&p, v, &serial);
            prop_assert!(r.at >= v.not_before && r.at <= v.not_after);
            prop_assert!(r.critical_at >= v.not_before && r.critical_at <= v.not_after);
        }

        #[test]
        fn jitter_bounded_and_stable(v in validity_strategy(), jitter in 0.0f64..0.5, serial in "[0-9a-f:]{2,40}") {
            let a = jitter_offset(&serial, jitter, v.lifetime());
            let b = jitter_offset(&serial, jitter, v.lifetime());
            prop_assert_eq!(a, b);
            prop_assert!(a >= Duration::ZERO);
            prop_assert!(a <= v.lifetime() * jitter);
            let nominal = renewal(&policy(RenewBefore::DEFAULT, 0.0), v, &serial).at;
            let jittered = renewal(&policy(RenewBefore::DEFAULT, jitter), v, &serial).at;
            prop_assert!(jittered <= nominal);
            prop_assert!(nominal - jittered <= v.lifetime() * jitter + Duration::nanoseconds(1));
        }

        #[test]
        fn backoff_monotone_and_capped(n in 1u32..200, start in 0i64..2_000_000_000,
                                       crit_offset in -10_000i64..1_000_000, has_crit in any::<bool>()) {
            let t = OffsetDateTime::from_unix_timestamp(start).unwrap();
            let crit = has_crit.then(|| t + Duration::seconds(crit_offset));
            let a = backoff(n, t, crit);
            let b = backoff(n + 1, t, crit);
            prop_assert!(b >= a);
            prop_assert!(a > t);
            prop_assert!(a - t <= BACKOFF_CAP);
            if let Some(c) = crit {
                if t < c { prop_assert!(a <= c); } else { prop_assert!(a - t <= BACKOFF_CRITICAL_CAP); }
            } else {
                prop_assert!(a - t <= BACKOFF_CRITICAL_CAP);
            }
        }
    }
}
