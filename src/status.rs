//! Inspection of each credential's current generation and its health at an instant: the
//! imperative shell around [`crate::policy`], shared by `check`, `status` and `demo`.

use crate::config::Credential;
use crate::policy::{self, Health, Validity};
use crate::state::RotationRecord;
use crate::store::Backend;
use serde::Serialize;
use std::path::Path;
use time::OffsetDateTime;

/// What `check` and `status` say about one credential.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub credential: String,
    pub health: Health,
    /// One line, plain language.
    pub reason: String,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub serial: Option<String>,
    pub fingerprint_sha256: Option<String>,
    pub key_type: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub renews_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub critical_at: Option<OffsetDateTime>,
    /// The generation directory in use.
    pub generation: Option<String>,
    pub last_rotation: Option<RotationRecord>,
    /// Policy warnings (e.g. `renew_before` longer than the lifetime).
    pub warnings: Vec<String>,
    /// The primary target (a path or `secret <namespace>/<name>`).
    pub target: Option<String>,
    /// What each replica serves (none without replicas).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaView>,
}

/// One replica as `status`, `check` and the metrics see it.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaView {
    pub target: String,
    /// True when it serves the primary's current certificate; `None` when it cannot be read.
    pub serves_current: Option<bool>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// Why it cannot be read, or the last failure to bring it up to date.
    pub problem: Option<String>,
}

impl Report {
    /// A report with only a name, health and reason.
    pub fn bare(name: &str, health: Health, reason: String) -> Report {
        Report {
            credential: name.to_string(),
            health,
            reason,
            subject: None,
            issuer: None,
            client_id: None,
            serial: None,
            fingerprint_sha256: None,
            key_type: None,
            not_before: None,
            not_after: None,
            renews_at: None,
            critical_at: None,
            generation: None,
            last_rotation: None,
            warnings: Vec::new(),
            target: None,
            replicas: Vec::new(),
        }
    }
}

/// What each replica of `backend` serves, against the primary's `current` fingerprint, with
/// the state's last failure for lagging ones.
async fn replica_views(
    backend: &Backend,
    current: Option<&str>,
    state: Option<&crate::state::State>,
) -> Vec<ReplicaView> {
    let mut out = Vec::new();
    for slot in backend.replicas() {
        let lag = state
            .and_then(|s| s.lagging.iter().find(|l| l.target == slot.place))
            .map(|l| {
                format!(
                    "not brought up to date since {} ({} attempt(s), next at {}): {}",
                    short_time(l.since),
                    l.attempts,
                    short_time(l.next_attempt),
                    l.error
                )
            });
        out.push(match slot.served().await {
            Ok(g) => {
                let fp = g.as_ref().map(|g| g.leaf().fingerprint_sha256.as_str());
                let serves = current.is_some() && fp == current;
                ReplicaView {
                    target: slot.place.clone(),
                    serves_current: Some(serves),
                    not_after: g.as_ref().map(|g| g.leaf().not_after),
                    problem: lag.or_else(|| {
                        (!serves).then(|| match g {
                            None => "holds no generation".to_string(),
                            Some(_) => "serves another generation".to_string(),
                        })
                    }),
                }
            }
            Err(e) => ReplicaView {
                target: slot.place.clone(),
                serves_current: None,
                not_after: None,
                problem: Some(crate::text::printable(&e.to_string(), 300)),
            },
        });
    }
    out
}

/// Inspects `cred` at `now`, also returning the state it read (the daemon and the metrics
/// need both). Never fails: problems become CRITICAL with the reason.
pub async fn inspect(
    cred: &Credential,
    state_dir: &Path,
    now: OffsetDateTime,
) -> (Report, Option<crate::state::State>) {
    let backend = match Backend::open(cred, state_dir).await {
        Ok(b) => b,
        Err(e) => {
            return (
                Report::bare(&cred.name, Health::Critical, e.to_string()),
                None,
            );
        }
    };
    let mut warnings = Vec::new();
    let state = match backend.load_state(&cred.name, false).await {
        Ok(l) => {
            if let Some((p, why)) = l.set_aside {
                warnings.push(format!("state in {} is unusable: {why}", p.display()));
            }
            Some(l.state)
        }
        Err(e) => {
            warnings.push(e.to_string());
            None
        }
    };
    // An intent left behind: a rotation that was interrupted after (or while) creating a
    // binding; the next rotation (`--if-due` too) reconciles it.
    let interrupted = state
        .as_ref()
        .and_then(|s| s.pending.as_ref())
        .filter(|p| p.started_at < now - time::Duration::minutes(10))
        .map(|p| {
            // The id is written down just before the commit; until then, the name.
            let binding = match &p.binding_id {
                Some(id) => format!(
                    "binding {} ({})",
                    crate::text::printable(id, 100),
                    crate::text::printable(&p.binding_name, 100)
                ),
                None => format!(
                    "a binding named {}",
                    crate::text::printable(&p.binding_name, 100)
                ),
            };
            format!(
                "a rotation interrupted at {} may have left {binding} behind; the next rotation reconciles it",
                short_time(p.started_at),
            )
        });
    warnings.extend(interrupted.clone());
    let last_rotation = state.as_ref().and_then(|s| s.last_rotation.clone());
    let mut report = match backend.read_current().await {
        Ok(None) => Report::bare(
            &cred.name,
            Health::Critical,
            format!(
                "no current generation in {} (bootstrap it with `certrot import {} --service-key FILE`)",
                backend.describe(),
                cred.name
            ),
        ),
        Err(e) => Report::bare(&cred.name, Health::Critical, e.to_string()),
        Ok(Some(current)) => {
            let g = &current.generation;
            let leaf = g.leaf();
            let v = Validity {
                not_before: leaf.not_before,
                not_after: leaf.not_after,
            };
            let r = policy::renewal(&cred.policy, v, &leaf.serial);
            if let Some(w) = &r.warning {
                warnings.push(w.clone());
            }
            if !g.chain_linked() {
                warnings
                    .push("the chain has certificates that do not issue the leaf's chain".into());
            }
            warnings.extend(library_warnings(cred.kind, g));
            let (health, reason) = policy::assess(now, v, &r);
            Report {
                credential: cred.name.clone(),
                health,
                reason,
                subject: Some(leaf.subject.clone()),
                issuer: Some(leaf.issuer.clone()),
                client_id: g.client_id().map(str::to_string),
                serial: Some(leaf.serial.clone()),
                fingerprint_sha256: Some(leaf.fingerprint_sha256.clone()),
                key_type: Some(g.key_type().to_string()),
                not_before: Some(leaf.not_before),
                not_after: Some(leaf.not_after),
                renews_at: Some(r.at),
                critical_at: Some(r.critical_at),
                generation: Some(current.dir_name),
                last_rotation: None,
                warnings: Vec::new(),
                target: None,
                replicas: Vec::new(),
            }
        }
    };
    report.last_rotation = last_rotation;
    report.target = Some(backend.describe());
    report.replicas = replica_views(
        &backend,
        report.fingerprint_sha256.as_deref(),
        state.as_ref(),
    )
    .await;
    let behind: Vec<String> = report
        .replicas
        .iter()
        .filter(|r| r.serves_current != Some(true))
        .map(|r| {
            format!(
                "replica {}: {}",
                r.target,
                r.problem.as_deref().unwrap_or("behind")
            )
        })
        .collect();
    if !behind.is_empty() && report.fingerprint_sha256.is_some() {
        if report.health == Health::Ok {
            report.health = Health::Warning;
            report.reason = format!(
                "{} of {} replica(s) do not serve the current generation; the replaced binding stays until they do",
                behind.len(),
                report.replicas.len()
            );
        }
        warnings.extend(behind.into_iter().map(|b| crate::text::printable(&b, 400)));
    }
    if let Some(why) = interrupted
        && report.health == Health::Ok
    {
        report.health = Health::Warning;
        report.reason = why;
    }
    report.warnings = warnings;
    (report, state)
}

/// What SAP's client libraries would miss in a generation's fields: @sap/xssec and the Java
/// library fetch an XSUAA token with a certificate from `certurl`, an Identity
/// Authentication token from `url`'s discovery document; both need `clientid`.
pub fn library_warnings(
    kind: crate::config::Kind,
    g: &crate::generation::Generation,
) -> Vec<String> {
    let need: &[&str] = match kind {
        crate::config::Kind::Xsuaa => &["clientid", "certurl"],
        crate::config::Kind::Identity => &["clientid", "url"],
        crate::config::Kind::Generic => &[],
    };
    need.iter()
        .filter(|f| g.field(f).is_none_or(str::is_empty))
        .map(|f| {
            format!(
                "the credential fields have no {f}: SAP's client libraries cannot fetch a token with them (set it in [credential.fields])"
            )
        })
        .collect()
}

/// RFC 3339 without sub-seconds, for tables.
pub fn short_time(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Inspects the selected credentials, in order; a large selection is split into one
/// contiguous share per processor, inspected at once (each inspection reads, checks and
/// parses its own files).
pub async fn reports(
    config: &crate::config::Config,
    names: &[String],
) -> Result<Vec<Report>, String> {
    let selected = config.select(names)?;
    let now = OffsetDateTime::now_utc();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    if workers < 2 || selected.len() < PARALLEL_FROM {
        let mut out = Vec::with_capacity(selected.len());
        for c in selected {
            out.push(inspect(c, &config.state_dir, now).await.0);
        }
        return Ok(out);
    }
    let share = selected.len().div_ceil(workers);
    let mut tasks = Vec::with_capacity(workers);
    for chunk in selected.chunks(share) {
        let (chunk, state_dir): (Vec<std::sync::Arc<Credential>>, _) = (
            chunk.iter().map(|c| (*c).clone()).collect(),
            config.state_dir.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(chunk.len());
            for c in &chunk {
                out.push(inspect(c, &state_dir, now).await.0);
            }
            out
        }));
    }
    let mut out = Vec::with_capacity(selected.len());
    for t in tasks {
        out.extend(
            t.await
                .map_err(|e| format!("an inspection ended abnormally: {e}"))?,
        );
    }
    Ok(out)
}

/// Below this many credentials, `reports` inspects them one after another (splitting costs
/// more than it saves).
const PARALLEL_FROM: usize = 64;

/// The outcome of proving one credential's current generation.
pub type CheckResult = Result<std::time::Duration, crate::check::CheckFailure>;

/// Proves the current generation of each of `credentials` (a token request or an mTLS
/// probe), at most `parallel` at a time; one entry per credential that has a current
/// generation, in the order given. Credentials whose target cannot be read are left out
/// (their report says why).
pub async fn check_current(
    credentials: Vec<std::sync::Arc<Credential>>,
    state_dir: &Path,
    parallel: usize,
) -> Vec<(String, CheckResult)> {
    // At most `parallel` checks exist at once: memory follows the parallelism.
    let mut todo = credentials.into_iter().enumerate();
    let mut tasks = tokio::task::JoinSet::new();
    let mut done = Vec::new();
    loop {
        while tasks.len() < parallel.max(1) {
            let Some((i, c)) = todo.next() else { break };
            let state_dir = state_dir.to_path_buf();
            tasks.spawn(async move {
                let backend = Backend::open(&c, &state_dir).await.ok()?;
                let current = backend.read_current().await.ok().flatten()?;
                let r = crate::check::validate(&c, &current.generation).await;
                Some((i, c.name.clone(), r))
            });
        }
        match tasks.join_next().await {
            Some(Ok(Some(r))) => done.push(r),
            Some(_) => {}
            None => break,
        }
    }
    done.sort_by_key(|(i, _, _)| *i);
    done.into_iter().map(|(_, n, r)| (n, r)).collect()
}

/// The `status` table.
pub fn render_status(reports: &[Report], now: OffsetDateTime) -> String {
    let header = [
        "CREDENTIAL",
        "CLIENT ID / SUBJECT",
        "NOT AFTER",
        "EXPIRES IN",
        "RENEWS AT",
        "LAST ROTATION",
        "HEALTH",
    ];
    let dash = || "-".to_string();
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for r in reports {
        let who = r
            .client_id
            .as_deref()
            .or(r.subject.as_deref())
            .map_or_else(dash, |w| crate::text::printable(w, 200));
        let expires = r.not_after.map_or_else(dash, |t| {
            if t > now {
                crate::policy::human(t - now)
            } else {
                "expired".into()
            }
        });
        let last = r
            .last_rotation
            .as_ref()
            .map_or_else(dash, |l| format!("{} {}", short_time(l.at), l.result));
        rows.push([
            r.credential.clone(),
            who,
            r.not_after.map_or_else(dash, short_time),
            expires,
            r.renews_at.map_or_else(dash, short_time),
            last,
            r.health.as_str().to_string(),
        ]);
        // One row per replica: what it serves, and whether that is the current generation.
        for v in &r.replicas {
            let expires = v.not_after.map_or_else(dash, |t| {
                if t > now {
                    crate::policy::human(t - now)
                } else {
                    "expired".into()
                }
            });
            rows.push([
                format!("  replica {}", crate::text::printable(&v.target, 200)),
                dash(),
                v.not_after.map_or_else(dash, short_time),
                expires,
                dash(),
                dash(),
                match v.serves_current {
                    Some(true) => "CURRENT",
                    Some(false) => "BEHIND",
                    None => "UNREADABLE",
                }
                .to_string(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
