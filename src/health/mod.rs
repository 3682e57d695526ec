//! Health: the metrics of one process (OpenMetrics text, prefix `certrot_`, label
//! `credential`), fed from inspections, token checks and rotation summaries, and the
//! readiness verdict. The values live in [`series`], one compact record per credential;
//! [`export`] writes them for one-shot runs. The HTTP endpoints live in `daemon::http`.
//!
//! Counters start at 0 for every credential so that `rate()` and alerts work from the first
//! scrape. No secret is ever a label or a value.

mod export;
mod series;

pub use export::{push, to_prometheus_text, write_textfile};

use crate::rotate::{Outcome, Summary};
use crate::status::Report;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use series::{Fleet, Series, TargetSeries, step_index};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use time::OffsetDateTime;

/// The largest exposition kept between scrapes (about 2,000 credentials): a larger fleet's
/// is encoded at every scrape, so that an idle daemon does not hold megabytes of text.
const CACHE_LIMIT: usize = 4 << 20;

/// The last exposition and the version it was encoded at.
enum Kept {
    Nothing,
    /// Up to [`CACHE_LIMIT`]: kept until a metric changes.
    Held(u64, bytes::Bytes),
    /// Larger: shared by the scrapes that come while one is being sent, gone when the last
    /// response is.
    Sending(u64, Weak<Vec<u8>>),
}

/// The owner of a large exposition's bytes while responses send it.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The metrics of one process.
pub struct Metrics {
    /// Encodes `fleet` (its only collector).
    registry: Registry,
    fleet: Fleet,
    /// Bumped after every change (at the end of each `observe_*`, `add_`/`remove_credential`).
    version: AtomicU64,
    /// The last exposition and the version it was encoded at: a scrape between changes is
    /// served from it instead of encoding every series again.
    exposition: Mutex<Kept>,
    /// The length of the last exposition.
    last_len: AtomicUsize,
}

fn ts(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

impl Metrics {
    /// The metrics with the counters of `credentials` at 0.
    pub fn new(credentials: &[&str]) -> Metrics {
        // Built in one go: a map filled in order from the sorted list has full nodes, where
        // one insertion after another leaves them half empty.
        let fleet = Fleet::new(
            credentials
                .iter()
                .map(|c| (c.to_string(), Series::default()))
                .collect(),
        );
        let mut registry = Registry::with_prefix("certrot");
        registry.register_collector(Box::new(fleet.clone()));
        Metrics {
            registry,
            fleet,
            version: AtomicU64::new(0),
            exposition: Mutex::new(Kept::Nothing),
            last_len: AtomicUsize::new(0),
        }
    }

    /// Changes credential `name`'s record, then marks the exposition out of date. A name
    /// without a record (a credential removed by a reload while a task of the old
    /// configuration still ran) changes nothing: its series stay gone.
    fn update(&self, name: &str, change: impl FnOnce(&mut Series)) {
        if let Some(s) = self.fleet.lock().get_mut(name) {
            change(s);
        }
        self.changed();
    }

    /// Initialises the counters of credential `name` to 0.
    pub fn add_credential(&self, name: &str) {
        self.fleet.lock().entry(name.to_string()).or_default();
        self.changed();
    }

    /// Forgets a credential removed from the configuration.
    pub fn remove_credential(&self, name: &str) {
        self.fleet.lock().remove(name);
        self.changed();
    }

    /// Records an inspection (and the state it read).
    pub fn observe_report(
        &self,
        r: &Report,
        now: OffsetDateTime,
        state: Option<&crate::state::State>,
    ) {
        self.update(&r.credential, |s| {
            (s.not_before, s.not_after) = match (r.not_before, r.not_after) {
                (Some(nb), Some(na)) => (Some(ts(nb)), Some(ts(na))),
                _ => (None, None),
            };
            s.renewal = r.renews_at.map(ts);
            if let Some(st) = state {
                s.consecutive = i64::from(st.consecutive_failures);
                s.retiring = st.retiring.len() as i64;
                if let Some(t) = st.last_success {
                    s.last_success = Some(ts(t));
                }
            }
            if let Some(primary) = &r.target {
                s.targets.clear();
                let primary = (
                    primary,
                    // A target that cannot be read is not known to serve it: 0.
                    Some(r.fingerprint_sha256.is_some()),
                    r.not_after,
                );
                let replicas = r
                    .replicas
                    .iter()
                    .map(|v| (&v.target, v.serves_current, v.not_after));
                for (target, current, not_after) in std::iter::once(primary).chain(replicas) {
                    let t = TargetSeries {
                        target: target.clone(),
                        serves_current: current.unwrap_or(false),
                        not_after: not_after.map(ts),
                    };
                    // One series per target: a name listed twice keeps the last.
                    match s.targets.iter_mut().find(|x| x.target == t.target) {
                        Some(x) => *x = t,
                        None => s.targets.push(t),
                    }
                }
                s.targets.shrink_to_fit();
            }
            let e = s.readiness.get_or_insert_default();
            e.valid =
                r.not_after.is_some_and(|na| na > now) && r.not_before.is_some_and(|nb| nb <= now);
            e.outside_critical = r.critical_at.is_some_and(|c| c > now);
            e.reason.clone_from(&r.reason);
        });
    }

    /// Records a token check of the current generation.
    pub fn observe_check(
        &self,
        name: &str,
        result: &Result<std::time::Duration, crate::check::CheckFailure>,
        now: OffsetDateTime,
    ) {
        self.update(name, |s| {
            let e = s.readiness.get_or_insert_default();
            match result {
                Ok(d) => {
                    s.token.get_or_insert_default().observe(d.as_secs_f64());
                    s.last_check = Some(ts(now));
                    e.last_check_ok = Some(true);
                }
                Err(f) => {
                    e.last_check_ok = Some(false);
                    e.reason = format!("token check failed: {f}");
                }
            }
        });
    }

    /// Records a rotation's summary.
    pub fn observe_rotation(&self, summary: &Summary, now: OffsetDateTime) {
        self.update(&summary.credential, |s| match &summary.outcome {
            Outcome::Rotated { hook_failures, .. } => {
                s.rotations[0] += 1;
                s.last_success = Some(ts(now));
                s.consecutive = 0;
                s.hook_failures += hook_failures.len() as u64;
                // The new generation passed its token check in the pipeline.
                s.readiness.get_or_insert_default().last_check_ok = Some(true);
                s.last_check = Some(ts(now));
            }
            Outcome::Failed(f) => {
                s.rotations[1] += 1;
                s.failures[step_index(f.step)] += 1;
                s.consecutive += 1;
            }
            _ => {}
        });
    }

    /// `None` when every credential is ready; else one line per credential that is not.
    pub fn not_ready(&self) -> Option<String> {
        let all = self.fleet.lock();
        let lines: Vec<String> = all
            .iter()
            .filter_map(|(n, s)| Some((n, s.readiness.as_ref()?)))
            .filter(|(_, e)| !e.ready())
            .map(|(n, e)| format!("{n}: {}", e.reason))
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// How many credentials are ready, of those inspected, checked or rotated so far (for
    /// the systemd status line).
    pub fn counts(&self) -> (usize, usize) {
        let all = self.fleet.lock();
        let known = all.values().filter_map(|s| s.readiness.as_ref());
        known.fold((0, 0), |(ready, total), e| {
            (ready + usize::from(e.ready()), total + 1)
        })
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The OpenMetrics text exposition.
    pub fn openmetrics(&self) -> String {
        // Sized like the last one: no copies while it grows.
        let mut out = String::with_capacity(self.last_len.load(Ordering::Relaxed));
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }

    /// The OpenMetrics text exposition, encoded again only when a metric changed since the
    /// last call (the version is read before encoding: a change during it is seen by the
    /// next call). One larger than [`CACHE_LIMIT`] is not kept: scrapes that come while it
    /// is still being sent share it, and the next one after that encodes it again.
    pub fn openmetrics_cached(&self) -> bytes::Bytes {
        self.cached(CACHE_LIMIT)
    }

    fn cached(&self, limit: usize) -> bytes::Bytes {
        let version = self.version.load(Ordering::Acquire);
        let mut kept = self
            .exposition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*kept {
            Kept::Held(v, text) if *v == version => return text.clone(),
            Kept::Sending(v, text) if *v == version => {
                if let Some(text) = text.upgrade() {
                    return bytes::Bytes::from_owner(Shared(text));
                }
            }
            _ => {}
        }
        let mut text = self.openmetrics();
        // Kept until the next change: no more memory than its length.
        text.shrink_to_fit();
        if text.len() <= limit {
            let text = bytes::Bytes::from(text);
            *kept = Kept::Held(version, text.clone());
            text
        } else {
            let text = Arc::new(text.into_bytes());
            *kept = Kept::Sending(version, Arc::downgrade(&text));
            bytes::Bytes::from_owner(Shared(text))
        }
    }

    /// The Prometheus text format 0.0.4 (node_exporter textfile collector, Pushgateway):
    /// counters named with their `_total` suffix in `# TYPE`/`# HELP`, no `# EOF`/`# UNIT`.
    pub fn prometheus_text(&self) -> String {
        to_prometheus_text(&self.openmetrics())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotate::{Failure, Outcome, Summary};

    #[test]
    fn counters_start_at_zero_and_text_formats_agree() {
        let m = Metrics::new(&["orders"]);
        let om = m.openmetrics();
        assert!(
            om.contains("certrot_rotations_total{credential=\"orders\",result=\"failure\"} 0"),
            "{om}"
        );
        assert!(
            om.contains("certrot_rotation_failures_total{credential=\"orders\",step=\"check\"} 0"),
            "{om}"
        );
        assert!(om.contains("certrot_build_info{version="), "{om}");
        assert!(om.ends_with("# EOF\n"));
        let p = m.prometheus_text();
        assert!(p.contains("# TYPE certrot_rotations_total counter"), "{p}");
        assert!(
            p.contains("# HELP certrot_rotations_total rotations by result"),
            "{p}"
        );
        assert!(!p.contains("# EOF") && !p.contains("# UNIT"));
        m.remove_credential("orders");
        assert!(!m.openmetrics().contains("orders"));
    }

    #[test]
    fn token_check_passing_follows_the_last_check_and_is_absent_before_the_first() {
        let m = Metrics::new(&["orders"]);
        let series = |m: &Metrics| {
            m.openmetrics()
                .lines()
                .find(|l| l.starts_with("certrot_token_check_passing{"))
                .map(str::to_string)
        };
        assert_eq!(series(&m), None);
        let now = OffsetDateTime::now_utc();
        let failed = crate::net::fail(crate::net::FailureKind::Unauthorized, "https://t/x", "401");
        m.observe_check("orders", &Err(failed), now);
        assert_eq!(
            series(&m).as_deref(),
            Some("certrot_token_check_passing{credential=\"orders\"} 0")
        );
        m.observe_check("orders", &Ok(std::time::Duration::from_millis(5)), now);
        assert_eq!(
            series(&m).as_deref(),
            Some("certrot_token_check_passing{credential=\"orders\"} 1")
        );
        m.remove_credential("orders");
        assert_eq!(series(&m), None);
    }

    /// A scrape between changes is the same encoding; every kind of change is seen by the
    /// next scrape.
    #[test]
    fn the_cached_exposition_follows_every_change() {
        let m = Metrics::new(&["orders"]);
        let now = OffsetDateTime::now_utc();
        let a = m.openmetrics_cached();
        assert_eq!(a.as_ptr(), m.openmetrics_cached().as_ptr(), "encoded again");
        assert_eq!(a, m.openmetrics().as_bytes());
        m.observe_check("orders", &Ok(std::time::Duration::from_millis(5)), now);
        let b = m.openmetrics_cached();
        assert_eq!(b, m.openmetrics().as_bytes());
        assert!(
            std::str::from_utf8(&b)
                .unwrap()
                .contains("certrot_token_request_duration_seconds_count{credential=\"orders\"} 1")
        );
        m.add_credential("billing");
        let c = m.openmetrics_cached();
        assert!(
            std::str::from_utf8(&c)
                .unwrap()
                .contains("credential=\"billing\"")
        );
        m.remove_credential("billing");
        let d = m.openmetrics_cached();
        assert!(
            !std::str::from_utf8(&d)
                .unwrap()
                .contains("credential=\"billing\"")
        );
        assert_eq!(d, m.openmetrics().as_bytes());
    }

    /// What a task of an old configuration records for a credential a reload removed
    /// brings none of its series back.
    #[test]
    fn a_removed_credential_stays_gone() {
        let m = scenario();
        m.remove_credential("orders");
        let now = OffsetDateTime::now_utc();
        m.observe_check("orders", &Ok(std::time::Duration::from_millis(5)), now);
        let r = Report::bare("orders", crate::policy::Health::Ok, String::new());
        m.observe_report(&r, now, None);
        let om = m.openmetrics();
        assert!(!om.contains("\"orders\""), "{om}");
        assert_eq!(m.counts(), (0, 1));
    }

    /// An exposition above the limit is shared while a response holds it and gone after:
    /// the next scrape encodes it again.
    #[test]
    fn a_large_exposition_is_not_kept() {
        let m = Metrics::new(&["orders"]);
        let len = m.openmetrics().len();
        let gone = |m: &Metrics| match &*m.exposition.lock().unwrap() {
            Kept::Sending(_, w) => w.upgrade().is_none(),
            _ => false,
        };
        let a = m.cached(len - 1);
        let b = m.cached(len - 1);
        assert_eq!(a.as_ptr(), b.as_ptr(), "not shared while sent");
        assert_eq!(a, m.openmetrics().as_bytes());
        drop(a);
        assert!(!gone(&m), "freed while a response still holds it");
        drop(b);
        assert!(gone(&m), "kept after the last response");
        let c = m.cached(len - 1);
        assert_eq!(c, m.openmetrics().as_bytes());
        m.observe_check(
            "orders",
            &Ok(std::time::Duration::from_millis(5)),
            OffsetDateTime::now_utc(),
        );
        let d = m.cached(len + 1000);
        assert_ne!(c, d, "a change is encoded again");
        assert_eq!(
            d.as_ptr(),
            m.cached(len + 1000).as_ptr(),
            "not kept at the limit"
        );
    }

    /// Three credentials: one inspected with replicas, checked twice and rotated; one
    /// inspected without a certificate and failing its check; one never inspected that
    /// failed two rotations.
    fn scenario() -> Metrics {
        let m = Metrics::new(&["orders", "billing", "zeta"]);
        let now = time::macros::datetime!(2026-12-03 12:00 UTC);
        let mut r = Report::bare("orders", crate::policy::Health::Ok, "fine".into());
        r.not_before = Some(now - time::Duration::days(1));
        r.not_after = Some(now + time::Duration::days(6));
        r.renews_at = Some(now + time::Duration::days(4));
        r.critical_at = Some(now + time::Duration::days(5));
        r.fingerprint_sha256 = Some("ab".into());
        r.target = Some("/srv/orders".into());
        r.replicas = vec![
            crate::status::ReplicaView {
                target: "secret ns/orders".into(),
                serves_current: Some(true),
                not_after: r.not_after,
                problem: None,
            },
            crate::status::ReplicaView {
                target: "/srv/replica".into(),
                serves_current: None,
                not_after: None,
                problem: Some("unreadable".into()),
            },
        ];
        let state = crate::state::State {
            consecutive_failures: 2,
            last_success: Some(now - time::Duration::hours(3)),
            ..Default::default()
        };
        m.observe_report(&r, now, Some(&state));
        let b = Report::bare("billing", crate::policy::Health::Critical, "no cert".into());
        m.observe_report(&b, now, None);
        m.observe_check("orders", &Ok(std::time::Duration::from_millis(30)), now);
        m.observe_check("orders", &Ok(std::time::Duration::from_millis(300)), now);
        let failed = crate::net::fail(crate::net::FailureKind::Unauthorized, "https://t/x", "401");
        m.observe_check("billing", &Err(failed), now);
        let summary = |name: &str, outcome| Summary {
            credential: name.into(),
            outcome,
            reconciled: vec![],
            retired: vec![],
            retire_errors: vec![],
            replicas: vec![],
            duration_ms: 1,
        };
        m.observe_rotation(
            &summary(
                "zeta",
                Outcome::Failed(Failure {
                    step: crate::rotate::Step::Inspect,
                    label: "x".into(),
                    message: "y".into(),
                }),
            ),
            now,
        );
        m.observe_rotation(
            &summary(
                "zeta",
                Outcome::Failed(Failure {
                    step: crate::rotate::Step::Issue,
                    label: "x".into(),
                    message: "y".into(),
                }),
            ),
            now,
        );
        m.observe_rotation(
            &summary(
                "orders",
                Outcome::Rotated {
                    reason: crate::rotate::Reason::Due,
                    old_not_after: None,
                    new_not_after: now,
                    old_binding: None,
                    new_binding: None,
                    generation: "g".into(),
                    hook_failures: vec!["h".into()],
                    state_not_saved: None,
                },
            ),
            now + time::Duration::minutes(1),
        );
        m
    }

    /// The whole exposition of [`scenario`]: every family and series, in encoding order
    /// (the series set is the one prometheus-client's own families gave for it).
    #[test]
    fn the_exposition_of_a_scenario_is_exactly_the_documented_one() {
        let m = scenario();
        let expected = include_str!("scenario.openmetrics").replace(
            "{version=\"0.1.0\"}",
            &format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
        );
        assert_eq!(m.openmetrics(), expected);
        assert_eq!(
            m.not_ready().as_deref(),
            Some("billing: token check failed: unauthorized (https://t/x): 401")
        );
        assert_eq!(m.counts(), (1, 2), "zeta was never inspected or checked");
        m.remove_credential("orders");
        let om = m.openmetrics();
        assert!(!om.contains("orders"), "{om}");
        assert!(
            !om.contains("certrot_target_"),
            "an empty family is left out: {om}"
        );
        assert_eq!(m.counts(), (0, 1));
    }

    /// A target listed twice (a replica named like the primary) is one series.
    #[test]
    fn a_target_listed_twice_is_one_series() {
        let m = Metrics::new(&["orders"]);
        let mut r = Report::bare("orders", crate::policy::Health::Ok, String::new());
        r.target = Some("/srv/orders".into());
        r.replicas = vec![crate::status::ReplicaView {
            target: "/srv/orders".into(),
            serves_current: Some(false),
            not_after: None,
            problem: None,
        }];
        m.observe_report(&r, OffsetDateTime::now_utc(), None);
        let om = m.openmetrics();
        let series: Vec<&str> = om
            .lines()
            .filter(|l| l.starts_with("certrot_target_serves_current{"))
            .collect();
        assert_eq!(
            series,
            ["certrot_target_serves_current{credential=\"orders\",target=\"/srv/orders\"} 0"]
        );
    }
}
