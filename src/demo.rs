//! `certrot demo`: the whole product on loopback, with nothing to configure. It starts the
//! sandbox (token endpoint + Service Manager stand-in), writes a configuration with two
//! credentials — one XSUAA, one Identity service, both service-managed — whose certificates
//! live `--lifetime` (60 s by default, renewed at 2/3), creates their first generations, and
//! runs the real daemon (`certrot run`, a child process) against it. It prints each event as
//! it happens (renewal decided, binding created, token check passed, committed, old binding
//! retired), a status table after each rotation, and the metrics URL; it ends after
//! `--rotations` per credential or Ctrl-C, and leaves nothing running.

use crate::config::Config;
use crate::status::{render_status, reports};
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use certrot_sandbox::stack::Stack;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the demo was asked for.
#[derive(Clone, Debug)]
pub struct DemoSettings {
    pub dir: Option<PathBuf>,
    pub rotations: u32,
    pub lifetime: Duration,
}

const CREDENTIALS: [&str; 2] = ["orders", "login"];

/// Runs the demo; returns the exit code.
pub fn run(settings: DemoSettings) -> i32 {
    let (root, guard) = match &settings.dir {
        Some(d) => (d.clone(), None),
        None => match tempfile::Builder::new().prefix("certrot-demo-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("certrot demo: cannot create a temporary directory: {e}");
                return 1;
            }
        },
    };
    let rt = match crate::rt::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certrot demo: {e}");
            return 1;
        }
    };
    let result = rt.block_on(demo(&settings, &root));
    match result {
        Ok(()) => {
            match guard {
                Some(_) => println!("\ndemo finished; its temporary files are removed."),
                None => println!("\ndemo finished; files kept in {}", root.display()),
            }
            0
        }
        Err(e) => {
            eprintln!("certrot demo: {e}");
            1
        }
    }
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))
}

async fn demo(settings: &DemoSettings, root: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let life = settings.lifetime.max(Duration::from_secs(3));
    let stack = Stack::start(
        0,
        SmOptions {
            // One "day" of validity lasts `life`: the bindings ask for 1 day.
            seconds_per_day: life.as_secs().max(1),
            key_override: Some(certrot_sandbox::ca::KeyAlg::EcdsaP256),
            ..SmOptions::default()
        },
    )
    .await?;
    let ca_file = root.join("ca.pem");
    write(&ca_file, &stack.ca_pem)?;
    let sm_key = root.join("sm-key.json");
    write(&sm_key, stack.sm_secret_key().to_string())?;
    let xsuaa = stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t42");
    let ias = stack
        .sm
        .add_instance(InstanceKind::Identity, "demo-login-client");
    let secs = life.as_secs().max(1);
    let cred = |name: &str, kind: &str, inst: &str, extra: &str| {
        format!(
            "[[credential]]\nname = {name:?}\nkind = {kind:?}\ncritical_before = \"{}s\"\n\
             retire_after = \"{}s\"\ntarget.path = {:?}\ncheck.ca_file = {:?}\n\
             check.system_roots = false\ncheck.retry_for = \"2s\"\nissuer.instance_id = {inst:?}\n\
             issuer.validity_days = 1\n{extra}\n",
            (secs / 6).max(1),
            (secs / 4).max(1),
            root.join("targets").join(name).display().to_string(),
            ca_file.display().to_string()
        )
    };
    let config_text = format!(
        "state_dir = {:?}\n\n[daemon]\nlisten = \"127.0.0.1:0\"\ncheck_schedule = \"*/5 * * * * *\"\n\
         probe_schedule = \"*/10 * * * * *\"\n\n[service_manager.sandbox]\nservice_key = {:?}\n\
         ca_file = {:?}\nsystem_roots = false\n\n{}\n{}",
        root.join("state").display().to_string(),
        sm_key.display().to_string(),
        ca_file.display().to_string(),
        cred("orders", "xsuaa", &xsuaa, ""),
        cred(
            "login",
            "identity",
            &ias,
            "issuer.app_identifier = \"login\"\ncheck.app_tid = \"sandbox-tenant\""
        ),
    );
    let cfg_path = root.join("certrot.toml");
    write(&cfg_path, config_text)?;
    let config = Arc::new(Config::load(&cfg_path).map_err(|e| e.to_string())?);

    println!("certrot demo: everything runs on 127.0.0.1; nothing leaves this machine.");
    println!("  sandbox token endpoint: {}", stack.tokens.url);
    println!("  sandbox Service Manager: {}", stack.sm.url);
    println!("  configuration:           {}", cfg_path.display());
    println!(
        "  certificates live {secs} s and are renewed at 2/3 of their life; {} rotation(s) each.\n",
        settings.rotations
    );
    println!("First generations, through the same pipeline as `certrot rotate --now`:");
    let rotator = Arc::new(crate::rotate::Rotator::new(config.clone()));
    let creds = config.credentials.clone();
    for s in rotator
        .rotate_all(creds, crate::rotate::Options::default(), 2)
        .await
    {
        println!("  {}", s.line());
        if s.failed() {
            return Err("the first rotation failed".into());
        }
    }
    print_status(&config).await;
    explain(&config).await;

    let exe = std::env::current_exe().map_err(|e| format!("cannot find certrot itself: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .args(["--config"])
        .arg(&cfg_path)
        .args(["--log-format", "json", "run"])
        .env("CERTROT_LOG", "certrot=info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Line>();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Out(l));
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Log(l));
            }
        });
    }
    drop(tx);
    println!("\nThe daemon (`certrot run`) takes over:");
    let started = Instant::now();
    let mut done: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let finished = |done: &std::collections::HashMap<String, u32>| {
        CREDENTIALS
            .iter()
            .all(|c| done.get(*c).copied().unwrap_or(0) >= settings.rotations)
    };
    let deadline = life * (settings.rotations + 2) + Duration::from_secs(30);
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = tokio::time::sleep(deadline.saturating_sub(started.elapsed())) => {
                break Err(format!("no {} rotation(s) per credential within {} s", settings.rotations, deadline.as_secs()));
            }
            line = rx.recv() => match line {
                None => break Err("the daemon ended unexpectedly".to_string()),
                Some(Line::Out(l)) => {
                    let t = started.elapsed().as_secs_f64();
                    if let Some(url) = l.strip_prefix("certrot run: metrics at ") {
                        println!("[{t:6.1}s] metrics: {url} (also /healthz, /readyz)");
                    } else if let Some((name, _)) = l.split_once(": rotated") {
                        *done.entry(name.to_string()).or_default() += 1;
                        println!("[{t:6.1}s] {l}");
                        print_status(&config).await;
                        if let Some(next) = next_renewal(&config, name).await {
                            println!("         {name}: the new certificate is in place; {next}");
                        }
                        if finished(&done) {
                            break Ok(());
                        }
                    } else {
                        println!("[{t:6.1}s] {l}");
                    }
                }
                Some(Line::Log(l)) => {
                    if let Some(e) = event(&l) {
                        println!("[{:6.1}s] {e}", started.elapsed().as_secs_f64());
                    }
                }
            }
        }
    };
    // Leave nothing running: stop the daemon, then the sandbox.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    );
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    drop(stack);
    outcome
}

enum Line {
    Out(String),
    Log(String),
}

/// One pipeline event from the daemon's JSON log, as a line for people.
fn event(json_line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json_line).ok()?;
    let f = v.get("fields")?;
    let s = |k: &str| f.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let n = |k: &str| f.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let cred = s("credential");
    Some(match f.get("event")?.as_str()? {
        "decided" => format!("{cred}: renewal decided ({})", s("reason")),
        "issued" => format!("{cred}: binding {} created ({} ms)", s("name"), n("ms")),
        "checked" => format!(
            "{cred}: token check with the new certificate passed ({} ms)",
            n("ms")
        ),
        "committed" => format!(
            "{cred}: committed {} (valid until {})",
            s("generation"),
            s("not_after")
        ),
        "retired" => format!(
            "{cred}: old binding {} retired (deleted: its certificate is revoked)",
            s("binding")
        ),
        _ => return None,
    })
}

/// In words: which files each application reads, and when they change next.
async fn explain(config: &Config) {
    println!("\nWhat an application reads; each renewal swaps the files in one step:");
    for c in &config.credentials {
        let service = match c.kind {
            crate::config::Kind::Xsuaa => "XSUAA client",
            crate::config::Kind::Identity => "Identity Authentication client",
            crate::config::Kind::Generic => "service client",
        };
        println!("  {} ({service}): the directory {}", c.name, c.target);
        println!(
            "      cert.pem + key.pem, or bundle.pem (both in one file), or credentials.json \
             (every field, as SAP's libraries read a service key)"
        );
    }
    for c in &config.credentials {
        if let Some(next) = next_renewal(config, &c.name).await {
            println!("  {}: {next}", c.name);
        }
    }
    if let Some(c) = config.credentials.first() {
        println!(
            "  A replaced binding is deleted {} after its renewal (retire_after), once no \
             application can still be using its certificate.",
            c.policy.retire_after
        );
    }
}

/// "next renewal in 38 s (12:01:05 UTC, at 2/3 of the certificate's life)".
async fn next_renewal(config: &Config, name: &str) -> Option<String> {
    let r = reports(config, &[name.to_string()]).await.ok()?;
    let at = r.first()?.renews_at?;
    let secs = (at - time::OffsetDateTime::now_utc())
        .whole_seconds()
        .max(0);
    Some(format!(
        "next renewal in {secs} s ({:02}:{:02}:{:02} UTC, at 2/3 of the certificate's life)",
        at.hour(),
        at.minute(),
        at.second()
    ))
}

async fn print_status(config: &Config) {
    if let Ok(r) = reports(config, &[]).await {
        let table = render_status(&r, time::OffsetDateTime::now_utc());
        for l in table.lines() {
            println!("    {l}");
        }
    }
}
