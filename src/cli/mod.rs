//! Command line: clap definitions, dispatch, exit codes, human and JSON output.

mod help;
pub use help::parse as parse_args;
mod rotate;

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::lock::{EXIT_LOCKED, LockError};
pub use crate::logging::LogFormat;
use crate::logging::init_logging;
use crate::policy::Health;
use crate::status::{self, Report};
use crate::store::{Backend, Guard};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use time::OffsetDateTime;

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "certrot",
    version = help::VERSION,
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
        /// One JSON array of every credential's report instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Bootstrap a credential's target from a service key (cf service-key / btp output).
    Import {
        /// The credential (its `[[credential]] name`).
        name: String,
        /// The service key or binding credentials JSON.
        #[arg(long)]
        service_key: PathBuf,
        /// The Service Manager binding behind the key (`btp get services/binding`): the first
        /// rotation retires it after retire_after. Read from the key's `id` when it is a
        /// binding document.
        #[arg(long, value_name = "ID")]
        binding_id: Option<String>,
        /// Wait for the credential's lock instead of failing.
        #[arg(long)]
        wait: bool,
        /// Write without the token check (for credentials whose endpoint is unreachable from here).
        #[arg(long)]
        no_validate: bool,
    },
    /// Renew credentials: those due (--if-due), or now (--now). Exit 0 fine, 1 a credential
    /// failed (its old generation kept), 2 usage/configuration, 75 locked, 141 output
    /// closed by its reader (every rotation still ran).
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
        /// The credential (its `[[credential]] name`).
        name: String,
        /// Wait for the credential's lock instead of failing.
        #[arg(long)]
        wait: bool,
        /// Switch without the token check.
        #[arg(long)]
        no_validate: bool,
    },
    /// Print a shell completion script: `certrot completions bash > /etc/bash_completion.d/certrot`.
    Completions {
        /// The shell (bash, zsh, fish, elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `certrot man > /usr/share/man/man1/certrot.1`.
    Man,
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
        /// Seconds per day of binding validity (86400; smaller to watch rotations live). The
        /// generated configuration scales critical_before (24 h) and retire_after (1 h) alike.
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
        /// Port the generated configuration's daemon (`certrot run`) serves /metrics,
        /// /healthz and /readyz on, on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        metrics_port: u16,
        /// Port of XSUAA's plain (secrets-only) host on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        plain_port: u16,
        /// Port of the Identity Authentication tenant on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        ias_port: u16,
        /// Port of the Cloud Logging ingest host on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        ingest_port: u16,
        /// Port of the Service Manager API on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        sm_port: u16,
        /// Port of the Kubernetes API stand-in (with --kube) on 127.0.0.1 (0 = any free port).
        #[arg(long, default_value_t = 0)]
        kube_port: u16,
        /// Inject a fault into Service Manager calls: CALL:KIND[:VALUE][*N], CALL one of
        /// create, get, list, delete, operation; KIND one of status:CODE, concurrent,
        /// instance-not-ready, broker:CODE, router-not-found, rate-limited:RETRY-AFTER,
        /// latency:DURATION, and for create operation-fails, malformed-credentials,
        /// without-clientid, created-then-status:CODE; N = how many calls (default: every
        /// one). Repeatable.
        #[arg(long = "sm-fault", value_name = "SPEC", value_parser = certrot_sandbox::sm::SmFault::parse_spec)]
        sm_faults: Vec<(
            certrot_sandbox::sm::SmCall,
            certrot_sandbox::sm::SmFault,
            usize,
        )>,
        /// Trust client certificates issued by this CA (PEM), at the token hosts and for
        /// self-managed binding certificates, as XSUAA trusts a self-managed CA. Repeatable.
        #[arg(long = "trust-ca", value_name = "PEM")]
        trust_ca: Vec<PathBuf>,
        /// Also make a CA of "your own" in the workspace (own-ca.pem, own-ca.key), trust it,
        /// and add a credential `self-managed` whose keys are made by certrot and signed by
        /// that CA (certificate = "self-managed", a local-ca signer).
        #[arg(long)]
        self_managed: bool,
        /// Reach Service Manager with an X.509 service key, as a credential `sm-access` that
        /// certrot rotates itself, before the credentials that depend on it.
        #[arg(long)]
        sm_x509: bool,
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
            binding_id,
            wait,
            no_validate,
        } => cmd_import(
            &cli.config,
            &name,
            &service_key,
            binding_id.as_deref(),
            wait,
            !no_validate,
        ),
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
        Command::Completions { shell } => help::completions(shell),
        Command::Man => help::man(),
        Command::Run => {
            // Before the configuration: a fleet's parsed sections are large buffers too.
            crate::daemon::memory::map_large_buffers();
            match Config::load(&cli.config) {
                Err(e) => fail_config(&e),
                Ok(config) => match crate::daemon::run(&cli.config, config) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("certrot run: {e}");
                        1
                    }
                },
            }
        }
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
            metrics_port,
            plain_port,
            ias_port,
            ingest_port,
            sm_port,
            kube_port,
            sm_faults,
            trust_ca,
            self_managed,
            sm_x509,
        } => crate::sandbox::run(crate::sandbox::Settings {
            kube,
            metrics_port,
            ports: certrot_sandbox::token::Ports {
                mtls: port,
                plain: plain_port,
                ias: ias_port,
                ingest: ingest_port,
            },
            kube_port,
            dir,
            faults,
            sm_faults,
            trust_ca,
            self_managed,
            sm_x509,
            credentials,
            sm: certrot_sandbox::sm::SmOptions {
                async_default,
                seconds_per_day: seconds_per_day.max(1),
                rsa_pool,
                key_override: ecdsa_bindings.then_some(certrot_sandbox::ca::KeyAlg::EcdsaP256),
                port: sm_port,
                ..certrot_sandbox::sm::SmOptions::default()
            },
        }),
    }
}

fn fail_config(e: &ConfigError) -> i32 {
    eprintln!("certrot: {e}");
    EXIT_USAGE
}

/// Runs `f` to completion on a fresh runtime (for the synchronous commands).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    Ok(crate::rt::runtime()?.block_on(f))
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
    let mut reports = match block_on(status::reports(&config, names)).and_then(|r| r) {
        Ok(r) => r,
        Err(e) => {
            println!("UNKNOWN - {e}");
            return Health::Unknown.exit_code();
        }
    };
    let mut checks = Vec::new();
    if validate {
        // Every selected credential's check at once, `[daemon] max_parallel` at a time.
        let by_name: std::collections::HashMap<&str, &std::sync::Arc<crate::config::Credential>> =
            config
                .credentials
                .iter()
                .map(|c| (c.name.as_str(), c))
                .collect();
        let selected: Vec<std::sync::Arc<crate::config::Credential>> = reports
            .iter()
            .filter_map(|r| by_name.get(r.credential.as_str()).map(|c| (*c).clone()))
            .collect();
        let parallel = config.daemon.max_parallel as usize;
        checks = match block_on(status::check_current(selected, &config.state_dir, parallel)) {
            Ok(c) => c,
            Err(e) => {
                println!("UNKNOWN - {e}");
                return Health::Unknown.exit_code();
            }
        };
        let results: std::collections::HashMap<&str, &status::CheckResult> =
            checks.iter().map(|(n, r)| (n.as_str(), r)).collect();
        for r in &mut reports {
            match results.get(r.credential.as_str()) {
                Some(Ok(d)) => r
                    .reason
                    .push_str(&format!("; token check passed ({} ms)", d.as_millis())),
                Some(Err(e)) => {
                    r.health = Health::Critical;
                    r.reason = format!("token check failed: {e}");
                }
                None => {}
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
    let reports = match block_on(status::reports(&config, &[])).and_then(|r| r) {
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
        print!(
            "{}",
            status::render_status(&reports, OffsetDateTime::now_utc())
        );
    }
    0
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
            let cred = crate::config::Credential::clone(v[0]);
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
    binding_id: Option<&str>,
    wait: bool,
    validate: bool,
) -> i32 {
    with_locked(
        config_path,
        name,
        wait,
        async |cred, backend| match crate::manual::import(
            cred, backend, key_file, binding_id, validate,
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
        },
    )
}

fn cmd_rollback(config_path: &std::path::Path, name: &str, wait: bool, validate: bool) -> i32 {
    with_locked(
        config_path,
        name,
        wait,
        async |cred, backend| match crate::manual::rollback(cred, backend, validate).await {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(e) => {
                eprintln!("certrot: rollback {}: {e}", cred.name);
                1
            }
        },
    )
}
