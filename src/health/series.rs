//! The metric values of every credential, one compact record each, and their encoding as
//! OpenMetrics families (a prometheus-client [`Collector`]).
//!
//! One record per credential instead of one prometheus-client series object per metric and
//! label set: a credential's 30-odd series cost a few hundred bytes instead of kilobytes,
//! which is what keeps a daemon of 10,000 credentials small. Families are encoded in a fixed
//! order, series by credential name; a family with no series is left out, as the registry
//! does for its own metrics.

use crate::rotate::Step;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::collections::BTreeMap;
use std::fmt::Error;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Steps whose failures are counted from 0 (others appear once they failed).
const FAILING_STEPS: [Step; 8] = [
    Step::Lock,
    Step::Decide,
    Step::Reconcile,
    Step::Issue,
    Step::Verify,
    Step::Check,
    Step::Commit,
    Step::Retire,
];

/// Every step, in the order their failure series are encoded.
const STEPS: [Step; 10] = [
    Step::Lock,
    Step::Inspect,
    Step::Decide,
    Step::Reconcile,
    Step::Issue,
    Step::Verify,
    Step::Check,
    Step::Commit,
    Step::Hooks,
    Step::Retire,
];

/// The position of `step` in [`STEPS`] (a match, so a new step cannot be forgotten).
pub fn step_index(step: Step) -> usize {
    match step {
        Step::Lock => 0,
        Step::Inspect => 1,
        Step::Decide => 2,
        Step::Reconcile => 3,
        Step::Issue => 4,
        Step::Verify => 5,
        Step::Check => 6,
        Step::Commit => 7,
        Step::Hooks => 8,
        Step::Retire => 9,
    }
}

/// Upper bounds of the token-check duration buckets (seconds); `+Inf` follows.
const TOKEN_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The token-check durations of one credential.
#[derive(Clone, Debug, Default)]
pub struct TokenHistogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [u64; TOKEN_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl TokenHistogram {
    pub fn observe(&mut self, seconds: f64) {
        self.sum += seconds;
        self.count += 1;
        // NaN and anything beyond the last bound count in `+Inf`.
        let i = TOKEN_BUCKETS
            .iter()
            .position(|b| *b >= seconds)
            .unwrap_or(TOKEN_BUCKETS.len());
        self.buckets[i] += 1;
    }

    fn encode(&self, mut e: MetricEncoder) -> Result<(), Error> {
        let buckets: [(f64, u64); TOKEN_BUCKETS.len() + 1] = std::array::from_fn(|i| {
            let bound = TOKEN_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            (bound, self.buckets[i])
        });
        e.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }
}

/// What one target of a credential serves.
#[derive(Clone, Debug)]
pub struct TargetSeries {
    pub target: String,
    /// `false` also when it cannot be read (not known to serve it).
    pub serves_current: bool,
    pub not_after: Option<f64>,
}

/// Everything known about one credential's health, for `/readyz` and `credential_ready`.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pub valid: bool,
    pub outside_critical: bool,
    /// `None` until the first token check.
    pub last_check_ok: Option<bool>,
    pub reason: String,
}

impl Readiness {
    /// Valid, outside `critical_before`, and its last token check (if any) passed.
    pub fn ready(&self) -> bool {
        self.valid && self.outside_critical && self.last_check_ok != Some(false)
    }
}

/// The metric values of one credential. Timestamps are Unix seconds.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub not_before: Option<f64>,
    pub not_after: Option<f64>,
    pub renewal: Option<f64>,
    /// `[success, failure]`.
    pub rotations: [u64; 2],
    /// Indexed by [`step_index`].
    pub failures: [u64; STEPS.len()],
    pub consecutive: i64,
    pub last_success: Option<f64>,
    pub last_check: Option<f64>,
    /// From the first token check on.
    pub token: Option<Box<TokenHistogram>>,
    pub retiring: i64,
    pub hook_failures: u64,
    /// The primary target first, then the replicas, each once.
    pub targets: Vec<TargetSeries>,
    /// `None` until the credential was first inspected, checked or rotated.
    pub readiness: Option<Readiness>,
}

/// The series of every credential, by name.
pub type Records = BTreeMap<String, Series>;

/// The records, shared between the metrics' writers and the registry that encodes them.
#[derive(Clone, Debug)]
pub struct Fleet(Arc<Mutex<Records>>);

impl Fleet {
    pub fn new(records: Records) -> Fleet {
        Fleet(Arc::new(Mutex::new(records)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Records> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The value of one series.
trait Value {
    const KIND: MetricType;
    fn encode(&self, e: MetricEncoder) -> Result<(), Error>;
}

/// A gauge's value.
struct Gauge<V>(V);

/// A counter's value.
struct Counter(u64);

impl<V: EncodeGaugeValue> Value for Gauge<V> {
    const KIND: MetricType = MetricType::Gauge;
    fn encode(&self, mut e: MetricEncoder) -> Result<(), Error> {
        e.encode_gauge(&self.0)
    }
}

impl Value for Counter {
    const KIND: MetricType = MetricType::Counter;
    fn encode(&self, mut e: MetricEncoder) -> Result<(), Error> {
        e.encode_counter::<NoLabelSet, u64, u64>(&self.0, None)
    }
}

impl Value for &TokenHistogram {
    const KIND: MetricType = MetricType::Histogram;
    fn encode(&self, e: MetricEncoder) -> Result<(), Error> {
        TokenHistogram::encode(self, e)
    }
}

/// A family of one series per credential (label `credential`), each `value(series)` when
/// it is `Some`; left out when no credential has one.
fn per_credential<'r, V: Value>(
    enc: &mut DescriptorEncoder,
    records: &'r Records,
    name: &str,
    help: &str,
    value: impl Fn(&'r Series) -> Option<V>,
) -> Result<(), Error> {
    if !records.values().any(|s| value(s).is_some()) {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, None, V::KIND)?;
    for (c, s) in records {
        if let Some(v) = value(s) {
            v.encode(family.encode_family(&[("credential", c.as_str())])?)?;
        }
    }
    Ok(())
}

/// A family labelled `credential` and `key`: `series(record)` lists each credential's
/// (label value, value); left out when no credential has one.
fn per_label<'r, V: Value, I: Iterator<Item = (&'r str, V)>>(
    enc: &mut DescriptorEncoder,
    records: &'r Records,
    (name, help, key): (&str, &str, &'static str),
    series: impl Fn(&'r Series) -> I,
) -> Result<(), Error> {
    if !records.values().any(|s| series(s).next().is_some()) {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, None, V::KIND)?;
    for (c, s) in records {
        for (label, v) in series(s) {
            v.encode(family.encode_family(&[("credential", c.as_str()), (key, label)])?)?;
        }
    }
    Ok(())
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Help texts end with a period, as the registry writes those of its own metrics.
impl Collector for Fleet {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let records = self.lock();
        let r = &*records;
        let e = &mut enc;
        per_credential(
            e,
            r,
            "certificate_not_after_timestamp_seconds",
            "notAfter of the current certificate (Unix seconds).",
            |s| s.not_after.map(Gauge),
        )?;
        per_credential(
            e,
            r,
            "certificate_not_before_timestamp_seconds",
            "notBefore of the current certificate (Unix seconds).",
            |s| s.not_before.map(Gauge),
        )?;
        per_credential(
            e,
            r,
            "certificate_renewal_timestamp_seconds",
            "when the policy renews the current certificate (Unix seconds).",
            |s| s.renewal.map(Gauge),
        )?;
        per_credential(
            e,
            r,
            "credential_ready",
            "1 when the credential is valid, outside critical_before, and its last token check passed.",
            |s| {
                Some(Gauge(flag(
                    s.readiness.as_ref().is_some_and(Readiness::ready),
                )))
            },
        )?;
        per_credential(
            e,
            r,
            "token_check_passing",
            "1 when the last token check of the current generation passed, 0 when it failed (absent before the first).",
            |s| {
                s.readiness
                    .as_ref()
                    .and_then(|x| x.last_check_ok)
                    .map(|ok| Gauge(flag(ok)))
            },
        )?;
        per_label(e, r, ("rotations", "rotations by result.", "result"), |s| {
            [("success", s.rotations[0]), ("failure", s.rotations[1])]
                .into_iter()
                .map(|(l, n)| (l, Counter(n)))
        })?;
        per_label(
            e,
            r,
            ("rotation_failures", "failed rotations by step.", "step"),
            |s| {
                STEPS
                    .iter()
                    .zip(s.failures)
                    .filter(|(step, n)| *n > 0 || FAILING_STEPS.contains(step))
                    .map(|(step, n)| (step.label(), Counter(n)))
            },
        )?;
        per_credential(
            e,
            r,
            "rotation_consecutive_failures",
            "failed rotations since the last success.",
            |s| Some(Gauge(s.consecutive)),
        )?;
        per_credential(
            e,
            r,
            "last_rotation_success_timestamp_seconds",
            "time of the last successful rotation (Unix seconds).",
            |s| s.last_success.map(Gauge),
        )?;
        per_credential(
            e,
            r,
            "last_check_success_timestamp_seconds",
            "time of the last successful token check (Unix seconds).",
            |s| s.last_check.map(Gauge),
        )?;
        per_credential(
            e,
            r,
            "token_request_duration_seconds",
            "duration of token checks.",
            |s| s.token.as_deref(),
        )?;
        per_credential(
            e,
            r,
            "bindings_pending_retirement",
            "replaced bindings waiting for their retirement deadline.",
            |s| Some(Gauge(s.retiring)),
        )?;
        per_credential(e, r, "hook_failures", "hooks that failed.", |s| {
            Some(Counter(s.hook_failures))
        })?;
        per_label(
            e,
            r,
            (
                "target_serves_current",
                "1 when the target (the primary, or a replica) serves the credential's current generation.",
                "target",
            ),
            |s| {
                s.targets
                    .iter()
                    .map(|t| (t.target.as_str(), Gauge(flag(t.serves_current))))
            },
        )?;
        per_label(
            e,
            r,
            (
                "target_certificate_not_after_timestamp_seconds",
                "notAfter of the certificate each target serves (Unix seconds).",
                "target",
            ),
            |s| {
                s.targets
                    .iter()
                    .filter_map(|t| Some((t.target.as_str(), Gauge(t.not_after?))))
            },
        )?;
        let mut info =
            e.encode_descriptor("build_info", "certrot version.", None, MetricType::Gauge)?;
        info.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1i64)
    }
}
