//! Command line: clap definitions, dispatch, exit codes, human and JSON output.

mod rotate;

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::lock::{EXIT_LOCKED, LockError};
pub use crate::logging::LogFormat;
use crate::logging::init_logging;
use crate::policy::Health;
use crate::state::CurrentRecord;
use crate::status::{self, Report, short_time};
use crate::target::{Backend, Current, Guard};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use time::OffsetDateTime;

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "certrot",
    version,
    about = "Keeps X.509 client credentials for SAP BTP alive"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "CERTROT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Log format on stderr [default: json in a Kubernetes pod when stderr is not a
    /// terminal, else text].
    #[arg(long, global = true, value_enum, env = "CERTROT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (repeat for less).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect the current generation of each credential (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Check {
        /// Credentials to check (default: all).
        names: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also prove each current generation with a token request (CRITICAL on failure).
        #[arg(long)]
        validate: bool,
        #[command(flatten)]
        metrics: rotate::MetricsOut,
    },
    /// Table of every credential: client id, expiry, renewal time, last rotation, health.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Bootstrap a credential's target from a service key (cf service-key / btp output).
    Import {
        name: String,
        /// The service key or binding credentials JSON.
        #[arg(long)]
        service_key: PathBuf,
        /// Wait for the credential's lock instead of failing.
        #[arg(long)]
        wait: bool,
        /// Write without the token check (for credentials whose endpoint is unreachable from here).
        #[arg(long)]
        no_validate: bool,
    },
    /// Renew credentials: those due (--if-due), or now (--now). Exit 0 fine, 1 a credential
    /// failed (its old generation kept), 2 usage/configuration, 75 locked.
    #[command(group(clap::ArgGroup::new("when").required(true).args(["if_due", "now"])))]
    Rotate {
        /// Credentials to rotate (default: all).
        names: Vec<String>,
        /// Rotate what the policy says is due (for timers and CronJobs).
        #[arg(long)]
        if_due: bool,
        /// Rotate regardless of the policy and of backoff.
        #[arg(long)]
        now: bool,
        /// Delete the replaced binding right after the commit (compromised key).
        #[arg(long)]
        revoke_previous: bool,
        /// Show the decision and the binding parameters; create nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object per credential.
        #[arg(long)]
        json: bool,
        /// Wait for locks instead of giving up.
        #[arg(long)]
        wait: bool,
        /// Rotations at once (default: [daemon] max_parallel).
        #[arg(long)]
        parallel: Option<usize>,
        #[command(flatten)]
        metrics: rotate::MetricsOut,
    },
    /// The daemon: renew on schedule, serve /metrics, /healthz, /readyz (systemd Type=notify).
    Run,
    /// Switch a credential back to its previous generation (inspected and token-checked
    /// first; its binding becomes current again, the one rolled away from is retired later).
    Rollback {
        name: String,
        #[arg(long)]
        wait: bool,
        /// Switch without the token check.
        #[arg(long)]
        no_validate: bool,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    #[cfg(feature = "sandbox")]
    /// Local stand-in for XSUAA's token hosts, with one working credential.
    Sandbox {
        /// Port of the mTLS token endpoint on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Keep the sandbox files here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Inject a fault into token requests: KIND[:VALUE][*N] with KIND one of status:CODE,
        /// rate-limited:SECONDS, latency:DURATION, malformed, oversize, reset,
        /// handshake-abort; N = how many requests (default: every one). Repeatable; faults
        /// apply in order.
        #[arg(long = "fault", value_name = "SPEC", value_parser = certrot_sandbox::token::Fault::parse_spec)]
        faults: Vec<(certrot_sandbox::token::Fault, usize)>,
        /// Credentials in the generated configuration: `sandbox` (imported) and `app-0002`…
        /// (created by the first rotation).
        #[arg(long, default_value_t = 1)]
        credentials: usize,
        /// Service Manager answers asynchronously (202 + operation) unless told otherwise.
        #[arg(long = "async")]
        async_default: bool,
        /// Seconds per day of binding validity (86400; smaller to watch rotations live).
        #[arg(long, default_value_t = 86_400)]
        seconds_per_day: u64,
        /// Pre-generate this many RSA keys and reuse them for new bindings (benchmarks).
        #[arg(long, default_value_t = 0)]
        rsa_pool: usize,
        /// Give new bindings ECDSA P-256 keys instead of RSA (a deviation, for benchmarks).
        #[arg(long)]
        ecdsa_bindings: bool,
        /// Also run a Kubernetes API stand-in (Secrets, Leases) and keep `app-0002`… in
        /// Secrets there (writes a kubeconfig).
        #[arg(long)]
        kube: bool,
    },
    #[cfg(feature = "sandbox")]
    /// The whole product on loopback: sandbox + daemon with short-lived certificates (no SAP account needed).
    Demo {
        /// Keep the demo files here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rotations per credential before the demo ends.
        #[arg(long, default_value_t = 2)]
        rotations: u32,
        /// How long the demo's certificates live (renewed at 2/3).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        lifetime: std::time::Duration,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate the configuration and print a normalised summary.
    Check,
}

/// Parses arguments, runs the command, returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    // The demo narrates its own events; its log shows only warnings unless asked.
    #[cfg(feature = "sandbox")]
    let demo = matches!(cli.command, Command::Demo { .. });
    #[cfg(not(feature = "sandbox"))]
    let demo = false;
    let quiet = cli.quiet + u8::from(demo);
    let format = cli.log_format.unwrap_or_else(|| {
        use std::io::IsTerminal;
        LogFormat::default_for(
            std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            std::io::stderr().is_terminal(),
        )
    });
    init_logging(format, cli.verbose, quiet);
    match cli.command {
        Command::Check {
            names,
            json,
            validate,
            metrics,
        } => cmd_check(&cli.config, &names, json, validate, &metrics),
        Command::Status { json } => cmd_status(&cli.config, json),
        Command::Import {
            name,
            service_key,
            wait,
            no_validate,
        } => cmd_import(&cli.config, &name, &service_key, wait, !no_validate),
        Command::Rollback {
            name,
            wait,
            no_validate,
        } => cmd_rollback(&cli.config, &name, wait, !no_validate),
        Command::Rotate {
            names,
            if_due: _,
            now,
            revoke_previous,
            dry_run,
            json,
            wait,
            parallel,
            metrics,
        } => rotate::run(
            &cli.config,
            &names,
            crate::rotate::Options {
                force: now,
                revoke_previous,
                dry_run,
                wait,
            },
            json,
            parallel,
            &metrics,
        ),
        Command::Run => crate::daemon::run(&cli.config),
        Command::Config {
            action: ConfigAction::Check,
        } => match Config::load(&cli.config) {
            Ok(c) => {
                print!("{}", c.summary());
                for w in c.warnings() {
                    println!("warning: {w}");
                }
                0
            }
            Err(e) => fail_config(&e),
        },
        #[cfg(feature = "sandbox")]
        Command::Demo {
            dir,
            rotations,
            lifetime,
        } => crate::demo::run(crate::demo::DemoSettings {
            dir,
            rotations,
            lifetime,
        }),
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            port,
            dir,
            faults,
            credentials,
            async_default,
            seconds_per_day,
            rsa_pool,
            ecdsa_bindings,
            kube,
        } => crate::sandbox::run(crate::sandbox::Settings {
            kube,
            port,
            dir,
            faults,
            credentials,
            sm: certrot_sandbox::sm::SmOptions {
                async_default,
                seconds_per_day: seconds_per_day.max(1),
                rsa_pool,
                key_override: ecdsa_bindings.then_some(certrot_sandbox::ca::KeyAlg::EcdsaP256),
                ..certrot_sandbox::sm::SmOptions::default()
            },
        }),
    }
}

fn fail_config(e: &ConfigError) -> i32 {
    eprintln!("certrot: {e}");
    EXIT_USAGE
}

/// Inspects the selected credentials.
pub async fn reports(config: &Config, names: &[String]) -> Result<Vec<Report>, String> {
    let selected = config.select(names)?;
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::with_capacity(selected.len());
    for c in selected {
        out.push(status::inspect(c, &config.state_dir, now).await.0);
    }
    Ok(out)
}

/// Runs `f` to completion on a fresh runtime (for the synchronous commands).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    Ok(crate::rt::runtime()?.block_on(f))
}

/// The current generation of `cred`, if it can be read.
fn current_of(cred: &crate::config::Credential, state_dir: &std::path::Path) -> Option<Current> {
    block_on(async {
        let backend = Backend::open(cred, state_dir).await.ok()?;
        backend.read_current().await.ok().flatten()
    })
    .ok()
    .flatten()
}

fn cmd_check(
    config_path: &std::path::Path,
    names: &[String],
    json: bool,
    validate: bool,
    metrics: &rotate::MetricsOut,
) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            println!("UNKNOWN - {e}");
            return Health::Unknown.exit_code();
        }
    };
    let mut reports = match block_on(reports(&config, names)).and_then(|r| r) {
        Ok(r) => r,
        Err(e) => {
            println!("UNKNOWN - {e}");
            return Health::Unknown.exit_code();
        }
    };
    let mut checks = Vec::new();
    if validate {
        for r in &mut reports {
            let Some(cred) = config.credentials.iter().find(|c| c.name == r.credential) else {
                continue;
            };
            if let Some(current) = current_of(cred, &config.state_dir) {
                let result = crate::check::validate_blocking(cred, &current.generation);
                checks.push((cred.name.clone(), result.clone()));
                match result {
                    Ok(d) => r
                        .reason
                        .push_str(&format!("; token check passed ({} ms)", d.as_millis())),
                    Err(e) => {
                        r.health = Health::Critical;
                        r.reason = format!("token check failed: {e}");
                    }
                }
            }
        }
    }
    let mut worst = reports.iter().map(|r| r.health).max().unwrap_or(Health::Ok);
    if metrics.wanted() {
        let emitted = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(rotate::emit_metrics(&config, &[], &checks, metrics)));
        if let Err(e) = emitted {
            eprintln!("certrot: metrics: {e}");
            worst = worst.max(Health::Unknown);
        }
    }
    if json {
        let out = serde_json::json!({ "health": worst, "credentials": reports });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", render_check(&reports, worst));
    }
    worst.exit_code()
}

/// Monitoring-plugin output: a summary line, then one line per credential.
pub fn render_check(reports: &[Report], worst: Health) -> String {
    let count = |h| reports.iter().filter(|r| r.health == h).count();
    let mut out = format!(
        "{} - {} critical, {} warning, {} ok\n",
        worst.as_str(),
        count(Health::Critical),
        count(Health::Warning),
        count(Health::Ok)
    );
    // Reasons and warnings quote values from outside (subjects, client ids, server
    // answers): control characters are escaped so that none can rewrite the terminal.
    let p = |s: &str| crate::text::printable(s, 2000);
    for r in reports {
        out.push_str(&format!(
            "{} {}: {}\n",
            r.health.as_str(),
            r.credential,
            p(&r.reason)
        ));
        for w in &r.warnings {
            out.push_str(&format!("  warning: {}\n", p(w)));
        }
    }
    out
}

fn cmd_status(config_path: &std::path::Path, json: bool) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return fail_config(&e),
    };
    let reports = match block_on(reports(&config, &[])).and_then(|r| r) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certrot: {e}");
            return EXIT_USAGE;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).unwrap_or_default()
        );
    } else {
        print!("{}", render_status(&reports, OffsetDateTime::now_utc()));
    }
    0
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

/// Loads the configuration and selects credential `name`; `Err` is the exit code, the
/// message already printed.
fn load_one(
    config_path: &std::path::Path,
    name: &str,
) -> Result<(Config, crate::config::Credential), i32> {
    let config = Config::load(config_path).map_err(|e| fail_config(&e))?;
    match config.select(&[name.to_string()]) {
        Ok(v) => {
            let cred = v[0].clone();
            Ok((config, cred))
        }
        Err(e) => {
            eprintln!("certrot: {e}");
            Err(EXIT_USAGE)
        }
    }
}

/// Opens the credential's target and takes its lock; `Err` is the exit code, the message
/// already printed.
async fn open_locked(
    config: &Config,
    cred: &crate::config::Credential,
    wait: bool,
) -> Result<(Backend, Guard), i32> {
    let backend = Backend::open(cred, &config.state_dir).await.map_err(|e| {
        eprintln!("certrot: {e}");
        1
    })?;
    let guard = backend.lock(&cred.name, wait).await.map_err(|e| {
        eprintln!("certrot: {e}");
        match e {
            LockError::Locked { .. } => EXIT_LOCKED,
            LockError::Io { .. } => 1,
        }
    })?;
    Ok((backend, guard))
}

/// Runs `body` with the credential `name` opened and locked; returns its exit code.
fn with_locked<F>(config_path: &std::path::Path, name: &str, wait: bool, body: F) -> i32
where
    F: AsyncFnOnce(&crate::config::Credential, &Backend) -> i32,
{
    let (config, cred) = match load_one(config_path, name) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let run = async {
        let (backend, guard) = match open_locked(&config, &cred, wait).await {
            Ok(x) => x,
            Err(code) => return code,
        };
        let code = backend.hold(&guard, body(&cred, &backend)).await;
        backend.release(guard).await;
        code
    };
    block_on(run).unwrap_or_else(|e| {
        eprintln!("certrot: {e}");
        1
    })
}

fn cmd_import(
    config_path: &std::path::Path,
    name: &str,
    key_file: &std::path::Path,
    wait: bool,
    validate: bool,
) -> i32 {
    with_locked(config_path, name, wait, async |cred, backend| match import(
        cred, backend, key_file, validate,
    )
    .await
    {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("certrot: import {}: {e}", cred.name);
            1
        }
    })
}

/// Reads a service key, verifies it and commits it as the credential's new generation.
pub async fn import(
    cred: &crate::config::Credential,
    backend: &Backend,
    key_file: &std::path::Path,
    validate: bool,
) -> Result<String, String> {
    let bytes = read_input(key_file)?;
    let bytes = zeroize::Zeroizing::new(bytes);
    let label = key_file.display().to_string();
    let g = crate::servicekey::parse_service_key(&bytes, &label).map_err(|e| e.to_string())?;
    // [credential.fields] fill in what the service key lacks; the key's own fields win.
    let fields = crate::generation::merge_fields(None, &cred.fields, g.credentials());
    let g = g.with_credentials(fields);
    let now = OffsetDateTime::now_utc();
    if g.leaf().not_after <= now {
        return Err(format!(
            "{label}: the certificate expired at {}; create a new service key",
            short_time(g.leaf().not_after)
        ));
    }
    if validate {
        crate::check::validate(cred, &g).await.map_err(|e| {
            format!("{label}: the token check failed, nothing was written: {e} (use --no-validate to write it anyway)")
        })?;
    }
    let mut state = backend
        .load_state(&cred.name, true)
        .await
        .map_err(|e| e.to_string())?
        .state;
    let dir = backend.commit(&g, now).await.map_err(|e| e.to_string())?;
    state.current = Some(CurrentRecord {
        serial: g.leaf().serial.clone(),
        fingerprint_sha256: g.leaf().fingerprint_sha256.clone(),
        not_after: g.leaf().not_after,
        generation: Some(dir.clone()),
        binding_id: None,
        committed_at: now,
        source: "import".into(),
    });
    backend
        .save_state(&state)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(credential = %cred.name, generation = %dir, serial = %g.leaf().serial, "imported");
    Ok(format!(
        "imported {}: {} (client id {}), valid until {}, into {} ({dir})",
        cred.name,
        crate::text::printable(&g.leaf().subject, 200),
        crate::text::printable(g.client_id().unwrap_or("-"), 200),
        short_time(g.leaf().not_after),
        backend.describe()
    ))
}

/// Reads a user-supplied file with the 1 MiB limit, naming it in errors.
pub fn read_input(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut f =
        crate::fsutil::open_regular(path, true).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::fsutil::read_limited(&mut f, crate::x509::MAX_PEM_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn cmd_rollback(config_path: &std::path::Path, name: &str, wait: bool, validate: bool) -> i32 {
    with_locked(config_path, name, wait, async |cred, backend| {
        rollback(cred, backend, validate).await
    })
}

async fn rollback(cred: &crate::config::Credential, backend: &Backend, validate: bool) -> i32 {
    let name = &cred.name;
    let previous = match backend.previous().await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("certrot: rollback {name}: {e}");
            return 1;
        }
    };
    if validate && let Err(e) = crate::check::validate(cred, &previous).await {
        eprintln!(
            "certrot: rollback {name}: the previous generation fails its token check, nothing was switched: {e} (--no-validate switches anyway)"
        );
        return 1;
    }
    let now = OffsetDateTime::now_utc();
    // The generation switched to must be the one checked (a Secret may change meanwhile).
    let expected = previous.leaf().fingerprint_sha256.clone();
    let (from, to, g) = match backend.rollback(&expected).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("certrot: rollback {name}: {e}");
            return 1;
        }
    };
    if g.leaf().not_after <= now {
        tracing::warn!(
            credential = %name,
            "the generation rolled back to has expired"
        );
    }
    let saved = match backend.load_state(name, true).await {
        Ok(l) => {
            let mut state = l.state;
            crate::rotate::rolled_back(&mut state, cred, &g, &to, now);
            backend.save_state(&state).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        eprintln!("certrot: rollback {name}: switched, but the state was not saved: {e}");
        return 1;
    }
    println!(
        "rolled back {name}: {from} -> {to} ({}, valid until {})",
        g.leaf().subject,
        short_time(g.leaf().not_after)
    );
    0
}
