//! `certrot rotate`: runs the pipeline for the selected credentials on one runtime and
//! prints one summary line (or JSON object) per credential. Exit codes: 0 every credential
//! fine (rotated or not due), 1 at least one failed (its old generation kept), 2 usage or
//! configuration error, 75 locked by another process.

use crate::config::Config;
use crate::lock::EXIT_LOCKED;
use crate::rotate::{Options, Rotator};
use std::path::Path;
use std::sync::Arc;

/// Where a one-shot run's metrics go (the options `check` and `rotate` share).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MetricsOut {
    /// Write the metrics here afterwards (node_exporter textfile format, atomically).
    #[arg(long = "metrics-file", value_name = "METRICS_FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Push the metrics to this Pushgateway afterwards (job "certrot", instance = host).
    #[arg(long)]
    pub push_gateway: Option<String>,
    /// The Pushgateway `instance` label instead of the host name (a CronJob's pods are
    /// named anew for every run).
    #[arg(long, env = "CERTROT_PUSH_INSTANCE")]
    pub push_instance: Option<String>,
}

impl MetricsOut {
    pub(super) fn wanted(&self) -> bool {
        self.file.is_some() || self.push_gateway.is_some()
    }
}

/// Inspects the credentials after the run, folds in the summaries, and writes / pushes.
pub(super) async fn emit_metrics(
    config: &Config,
    summaries: &[crate::rotate::Summary],
    checks: &[(
        String,
        Result<std::time::Duration, crate::check::CheckFailure>,
    )],
    out: &MetricsOut,
) -> Result<(), String> {
    let names: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
    let m = crate::health::Metrics::new(&names);
    let now = time::OffsetDateTime::now_utc();
    for c in &config.credentials {
        let (r, st) = crate::status::inspect(c, &config.state_dir, now).await;
        m.observe_report(&r, now, st.as_ref());
    }
    for s in summaries {
        m.observe_rotation(s, now);
    }
    for (name, r) in checks {
        m.observe_check(name, r, now);
    }
    if let Some(f) = &out.file {
        crate::health::write_textfile(f, &m)?;
    }
    if let Some(u) = &out.push_gateway {
        crate::health::push(u, out.push_instance.as_deref(), &m).await?;
    }
    Ok(())
}

/// Runs `certrot rotate`; returns the exit code.
pub fn run(
    config_path: &Path,
    names: &[String],
    opts: Options,
    json: bool,
    parallel: Option<usize>,
    metrics: &MetricsOut,
) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return super::fail_config(&e),
    };
    let selected: Vec<_> = match config.select(names) {
        Ok(v) => v.into_iter().cloned().collect(),
        Err(e) => {
            eprintln!("certrot: {e}");
            return super::EXIT_USAGE;
        }
    };
    let parallel = parallel
        .unwrap_or(config.daemon.max_parallel as usize)
        .max(1);
    let rt = match crate::rt::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certrot: {e}");
            return 1;
        }
    };
    let config = Arc::new(config);
    let rotator = Arc::new(Rotator::new(config.clone()));
    // Each summary is printed as soon as it is in (in configuration order) and only folded
    // into the exit code: the run holds the summaries of the pipelines in flight, not the
    // fleet's, unless metrics are wanted (those cover every credential anyway).
    let keep = metrics.wanted() && !opts.dry_run;
    let mut kept = Vec::new();
    let mut outcome = RunOutcome::default();
    let abnormal = rt.block_on(rotator.rotate_each(selected, opts, parallel, |s| {
        // A reader that stopped reading (`| head -1`) costs the output, never the
        // rotations still in flight: they finish, and the exit code says what happened.
        if !outcome.output_lost {
            use std::io::Write;
            let line = if json {
                serde_json::to_string(&s).unwrap_or_default()
            } else {
                s.line()
            };
            outcome.output_lost = writeln!(std::io::stdout().lock(), "{line}").is_err();
        }
        // A failed hook is reported with exit code 1; the committed generation stays.
        outcome.failed |=
            s.failed() || s.hooks_failed() || s.state_not_saved() || s.replicas_failed();
        outcome.locked |= s.locked();
        if keep {
            kept.push(s);
        }
    }));
    // A pipeline that ended abnormally has no summary; the run did not go well.
    outcome.failed |= abnormal > 0;
    if keep && let Err(e) = rt.block_on(emit_metrics(&config, &kept, &[], metrics)) {
        eprintln!("certrot: metrics: {e}");
        outcome.failed = true;
    }
    outcome.exit_code()
}

/// What a run's summaries add up to for its exit code.
#[derive(Default)]
struct RunOutcome {
    /// A credential failed, or its hooks, state write or replicas did (exit code 1).
    failed: bool,
    /// A credential was locked by another process (exit code 75 when nothing failed).
    locked: bool,
    /// Standard output was closed by its reader (141, as SIGPIPE ends other tools, when
    /// nothing failed and nothing was locked).
    output_lost: bool,
}

impl RunOutcome {
    fn exit_code(&self) -> i32 {
        if self.failed {
            1
        } else if self.locked {
            EXIT_LOCKED
        } else if self.output_lost {
            141
        } else {
            0
        }
    }
}
