//! Health: the metrics registry (prometheus-client, OpenMetrics text, prefix `certrot_`,
//! label `credential`), fed from inspections, token checks and rotation summaries; the
//! readiness verdict; the node_exporter textfile (written atomically) and the Pushgateway
//! push for one-shot runs. The HTTP endpoints live in `daemon::http`.
//!
//! Counters start at 0 for every credential so that `rate()` and alerts work from the first
//! scrape. No secret is ever a label or a value.

use crate::rotate::{Outcome, Step, Summary};
use crate::status::Report;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use time::OffsetDateTime;

type Labels = Vec<(String, String)>;
type FGauge = Family<Labels, Gauge<f64, AtomicU64>>;
type IGauge = Family<Labels, Gauge<i64>>;

/// Steps whose failures are counted (initialised to 0).
pub const FAILING_STEPS: [Step; 8] = [
    Step::Lock,
    Step::Decide,
    Step::Reconcile,
    Step::Issue,
    Step::Verify,
    Step::Check,
    Step::Commit,
    Step::Retire,
];

/// Everything known about one credential's health, for `/readyz`.
#[derive(Clone, Debug, Default)]
struct Readiness {
    valid: bool,
    outside_critical: bool,
    /// `None` until the first token check.
    last_check_ok: Option<bool>,
    reason: String,
}

/// The metrics of one process.
pub struct Metrics {
    registry: Registry,
    not_after: FGauge,
    not_before: FGauge,
    renewal: FGauge,
    ready: IGauge,
    check_passing: IGauge,
    rotations: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    consecutive: IGauge,
    last_success: FGauge,
    last_check: FGauge,
    token_duration: Family<Labels, Histogram>,
    retiring: IGauge,
    hook_failures: Family<Labels, Counter>,
    target_current: IGauge,
    target_not_after: FGauge,
    /// The targets each credential's `target_*` series were published for (to drop the
    /// series of a target no longer configured).
    targets: Mutex<BTreeMap<String, Vec<String>>>,
    readiness: Mutex<BTreeMap<String, Readiness>>,
    /// Bumped after every change (at the end of each `observe_*`, `add_`/`remove_credential`).
    version: AtomicU64,
    /// The last exposition and the version it was encoded at: a scrape between changes is
    /// served from it instead of encoding every series again.
    exposition: Mutex<Option<(u64, bytes::Bytes)>>,
}

fn cred(name: &str) -> Labels {
    vec![("credential".into(), name.into())]
}

fn with(name: &str, k: &str, v: &str) -> Labels {
    vec![("credential".into(), name.into()), (k.into(), v.into())]
}

fn ts(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

fn token_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// A registry with every metric registered and the counters of `credentials` at 0.
    pub fn new(credentials: &[&str]) -> Metrics {
        let mut registry = Registry::with_prefix("certrot");
        let m = Metrics {
            not_after: FGauge::default(),
            not_before: FGauge::default(),
            renewal: FGauge::default(),
            ready: IGauge::default(),
            check_passing: IGauge::default(),
            rotations: Family::default(),
            failures: Family::default(),
            consecutive: IGauge::default(),
            last_success: FGauge::default(),
            last_check: FGauge::default(),
            token_duration: Family::new_with_constructor(token_histogram),
            retiring: IGauge::default(),
            hook_failures: Family::default(),
            target_current: Family::default(),
            target_not_after: Family::default(),
            targets: Mutex::new(BTreeMap::new()),
            readiness: Mutex::new(BTreeMap::new()),
            version: AtomicU64::new(0),
            exposition: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "certificate_not_after_timestamp_seconds",
            "notAfter of the current certificate (Unix seconds)",
            m.not_after.clone(),
        );
        registry.register(
            "certificate_not_before_timestamp_seconds",
            "notBefore of the current certificate (Unix seconds)",
            m.not_before.clone(),
        );
        registry.register(
            "certificate_renewal_timestamp_seconds",
            "when the policy renews the current certificate (Unix seconds)",
            m.renewal.clone(),
        );
        registry.register(
            "credential_ready",
            "1 when the credential is valid, outside critical_before, and its last token check passed",
            m.ready.clone(),
        );
        registry.register(
            "token_check_passing",
            "1 when the last token check of the current generation passed, 0 when it failed (absent before the first)",
            m.check_passing.clone(),
        );
        registry.register("rotations", "rotations by result", m.rotations.clone());
        registry.register(
            "rotation_failures",
            "failed rotations by step",
            m.failures.clone(),
        );
        registry.register(
            "rotation_consecutive_failures",
            "failed rotations since the last success",
            m.consecutive.clone(),
        );
        registry.register(
            "last_rotation_success_timestamp_seconds",
            "time of the last successful rotation (Unix seconds)",
            m.last_success.clone(),
        );
        registry.register(
            "last_check_success_timestamp_seconds",
            "time of the last successful token check (Unix seconds)",
            m.last_check.clone(),
        );
        registry.register(
            "token_request_duration_seconds",
            "duration of token checks",
            m.token_duration.clone(),
        );
        registry.register(
            "bindings_pending_retirement",
            "replaced bindings waiting for their retirement deadline",
            m.retiring.clone(),
        );
        registry.register(
            "hook_failures",
            "hooks that failed",
            m.hook_failures.clone(),
        );
        registry.register(
            "target_serves_current",
            "1 when the target (the primary, or a replica) serves the credential's current generation",
            m.target_current.clone(),
        );
        registry.register(
            "target_certificate_not_after_timestamp_seconds",
            "notAfter of the certificate each target serves (Unix seconds)",
            m.target_not_after.clone(),
        );
        let info: Family<Labels, Gauge> = Family::default();
        info.get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())])
            .set(1);
        registry.register("build_info", "certrot version", info);
        let mut m = m;
        m.registry = registry;
        for c in credentials {
            m.add_credential(c);
        }
        m
    }

    /// Initialises the counters of credential `name` to 0.
    pub fn add_credential(&self, name: &str) {
        for r in ["success", "failure"] {
            let _ = self.rotations.get_or_create(&with(name, "result", r));
        }
        for s in FAILING_STEPS {
            let _ = self.failures.get_or_create(&with(name, "step", s.label()));
        }
        let _ = self.hook_failures.get_or_create(&cred(name));
        let _ = self.consecutive.get_or_create(&cred(name));
        let _ = self.retiring.get_or_create(&cred(name));
        let _ = self.ready.get_or_create(&cred(name));
        self.changed();
    }

    /// Forgets a credential removed from the configuration.
    pub fn remove_credential(&self, name: &str) {
        let l = cred(name);
        for f in [
            &self.not_after,
            &self.not_before,
            &self.renewal,
            &self.last_success,
            &self.last_check,
        ] {
            f.remove(&l);
        }
        for f in [
            &self.ready,
            &self.check_passing,
            &self.consecutive,
            &self.retiring,
        ] {
            f.remove(&l);
        }
        self.hook_failures.remove(&l);
        self.token_duration.remove(&l);
        for r in ["success", "failure"] {
            self.rotations.remove(&with(name, "result", r));
        }
        for s in FAILING_STEPS {
            self.failures.remove(&with(name, "step", s.label()));
        }
        self.lock_readiness().remove(name);
        self.publish_targets(name, &[]);
        self.changed();
    }

    /// Publishes `certrot_target_*` for `name`'s targets: (target, serves current — `None`:
    /// unreadable, published as 0 —, notAfter);
    /// series of targets no longer listed are removed.
    fn publish_targets(&self, name: &str, targets: &[(String, Option<bool>, Option<f64>)]) {
        let mut known = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let listed: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
        for old in known.get(name).into_iter().flatten() {
            if !listed.contains(old) {
                let l = with(name, "target", old);
                self.target_current.remove(&l);
                self.target_not_after.remove(&l);
            }
        }
        for (t, current, not_after) in targets {
            let l = with(name, "target", t);
            // A target that cannot be read is not known to serve it: 0.
            self.target_current
                .get_or_create(&l)
                .set(i64::from(current.unwrap_or(false)));
            match not_after {
                Some(na) => {
                    self.target_not_after.get_or_create(&l).set(*na);
                }
                None => {
                    self.target_not_after.remove(&l);
                }
            }
        }
        if listed.is_empty() {
            known.remove(name);
        } else {
            known.insert(name.to_string(), listed);
        }
    }

    fn lock_readiness(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Readiness>> {
        self.readiness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an inspection (and the state it read).
    pub fn observe_report(
        &self,
        r: &Report,
        now: OffsetDateTime,
        state: Option<&crate::state::State>,
    ) {
        let l = cred(&r.credential);
        match (r.not_before, r.not_after) {
            (Some(nb), Some(na)) => {
                self.not_before.get_or_create(&l).set(ts(nb));
                self.not_after.get_or_create(&l).set(ts(na));
            }
            _ => {
                self.not_before.remove(&l);
                self.not_after.remove(&l);
            }
        }
        match r.renews_at {
            Some(t) => {
                self.renewal.get_or_create(&l).set(ts(t));
            }
            None => {
                self.renewal.remove(&l);
            }
        }
        if let Some(s) = state {
            self.consecutive
                .get_or_create(&l)
                .set(i64::from(s.consecutive_failures));
            self.retiring.get_or_create(&l).set(s.retiring.len() as i64);
            if let Some(t) = s.last_success {
                self.last_success.get_or_create(&l).set(ts(t));
            }
        }
        if let Some(primary) = &r.target {
            let mut targets = vec![(
                primary.clone(),
                Some(r.fingerprint_sha256.is_some()),
                r.not_after.map(ts),
            )];
            targets.extend(
                r.replicas
                    .iter()
                    .map(|v| (v.target.clone(), v.serves_current, v.not_after.map(ts))),
            );
            self.publish_targets(&r.credential, &targets);
        }
        let mut all = self.lock_readiness();
        let e = all.entry(r.credential.clone()).or_default();
        e.valid =
            r.not_after.is_some_and(|na| na > now) && r.not_before.is_some_and(|nb| nb <= now);
        e.outside_critical = r.critical_at.is_some_and(|c| c > now);
        e.reason = r.reason.clone();
        self.publish_ready(&r.credential, e);
        self.changed();
    }

    fn publish_ready(&self, name: &str, e: &Readiness) {
        let ok = e.valid && e.outside_critical && e.last_check_ok != Some(false);
        self.ready.get_or_create(&cred(name)).set(i64::from(ok));
        if let Some(passed) = e.last_check_ok {
            self.check_passing
                .get_or_create(&cred(name))
                .set(i64::from(passed));
        }
    }

    /// Records a token check of the current generation.
    pub fn observe_check(
        &self,
        name: &str,
        result: &Result<std::time::Duration, crate::check::CheckFailure>,
        now: OffsetDateTime,
    ) {
        let l = cred(name);
        let mut all = self.lock_readiness();
        let e = all.entry(name.to_string()).or_default();
        match result {
            Ok(d) => {
                self.token_duration
                    .get_or_create(&l)
                    .observe(d.as_secs_f64());
                self.last_check.get_or_create(&l).set(ts(now));
                e.last_check_ok = Some(true);
            }
            Err(f) => {
                e.last_check_ok = Some(false);
                e.reason = format!("token check failed: {f}");
            }
        }
        self.publish_ready(name, e);
        self.changed();
    }

    /// Records a rotation's summary.
    pub fn observe_rotation(&self, s: &Summary, now: OffsetDateTime) {
        let name = &s.credential;
        match &s.outcome {
            Outcome::Rotated { hook_failures, .. } => {
                self.rotations
                    .get_or_create(&with(name, "result", "success"))
                    .inc();
                self.last_success.get_or_create(&cred(name)).set(ts(now));
                self.consecutive.get_or_create(&cred(name)).set(0);
                if !hook_failures.is_empty() {
                    self.hook_failures
                        .get_or_create(&cred(name))
                        .inc_by(hook_failures.len() as u64);
                }
                // The new generation passed its token check in the pipeline.
                let mut all = self.lock_readiness();
                let e = all.entry(name.clone()).or_default();
                e.last_check_ok = Some(true);
                self.last_check.get_or_create(&cred(name)).set(ts(now));
                self.publish_ready(name, e);
            }
            Outcome::Failed(f) => {
                self.rotations
                    .get_or_create(&with(name, "result", "failure"))
                    .inc();
                self.failures
                    .get_or_create(&with(name, "step", f.step.label()))
                    .inc();
                self.consecutive.get_or_create(&cred(name)).inc();
            }
            _ => {}
        }
        self.changed();
    }

    /// `None` when every credential is ready; else one line per credential that is not.
    pub fn not_ready(&self) -> Option<String> {
        let all = self.lock_readiness();
        let lines: Vec<String> = all
            .iter()
            .filter(|(_, e)| !(e.valid && e.outside_critical && e.last_check_ok != Some(false)))
            .map(|(n, e)| format!("{n}: {}", e.reason))
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Names and readiness, for the systemd status line.
    pub fn counts(&self) -> (usize, usize) {
        let all = self.lock_readiness();
        let ready = all
            .values()
            .filter(|e| e.valid && e.outside_critical && e.last_check_ok != Some(false))
            .count();
        (ready, all.len())
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The OpenMetrics text exposition.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The OpenMetrics text exposition, encoded again only when a metric changed since the
    /// last call (the version is read before encoding: a change during it is seen by the
    /// next call).
    pub fn openmetrics_cached(&self) -> bytes::Bytes {
        let version = self.version.load(Ordering::Acquire);
        let mut cache = self
            .exposition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, text)) = cache.as_ref()
            && *v == version
        {
            return text.clone();
        }
        // Kept until the next change: no more memory than its length.
        let mut text = self.openmetrics();
        text.shrink_to_fit();
        let text = bytes::Bytes::from(text);
        *cache = Some((version, text.clone()));
        text
    }

    /// The Prometheus text format 0.0.4 (node_exporter textfile collector, Pushgateway):
    /// counters named with their `_total` suffix in `# TYPE`/`# HELP`, no `# EOF`/`# UNIT`.
    pub fn prometheus_text(&self) -> String {
        to_prometheus_text(&self.openmetrics())
    }
}

/// Converts OpenMetrics text to the Prometheus 0.0.4 text format.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: Vec<String> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .map(str::to_string)
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let fixed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(fixed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Writes the textfile atomically (temp file, rename; not synced: the next run writes it
/// again), mode 0644.
pub fn write_textfile(path: &std::path::Path, m: &Metrics) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(&"not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    crate::fsutil::write_atomic(
        dir,
        name,
        m.prometheus_text().as_bytes(),
        0o644,
        crate::fsutil::Durability::Volatile,
    )
    .map_err(|e| err(&e))
}

/// Pushes the metrics to a Pushgateway: `PUT <url>/metrics/job/certrot/instance/<host>`.
pub async fn push(url: &str, instance: Option<&str>, m: &Metrics) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("--push-gateway {url:?}: not an http(s) URL"));
    }
    let host = match instance {
        Some(i) => i.to_string(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    // Plain when safe in a path; else the Pushgateway's base64 form (URL-safe alphabet).
    let instance = if !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        format!("instance/{host}")
    } else {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(host.as_bytes());
        format!(
            "instance@base64/{}",
            if b64.is_empty() { "=".into() } else { b64 }
        )
    };
    let target = format!(
        "{}/metrics/job/certrot/{instance}",
        url.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("{target}: {e}"))?;
    let resp = client
        .put(&target)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(m.prometheus_text())
        .send()
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{target}: HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
