//! Hooks: what runs after a rotation. `exec` runs a program (argv, no shell) with the
//! `CERTROT_*` environment, a timeout and its output sent to the log (size-limited);
//! `signal` reads a pid file (each time, so a restarted consumer is found) and signals it.
//!
//! A hook failure is reported and counted; it never undoes a committed generation.

use crate::config::{Hook, HookAction, HookOn};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncReadExt;

/// Output kept from a hook, per stream.
const MAX_HOOK_OUTPUT: u64 = 64 * 1024;

/// What hooks learn about the rotation, as environment variables.
#[derive(Clone, Debug)]
pub struct HookEnv {
    pub credential: String,
    pub target: PathBuf,
    /// The target is a directory: `CERTROT_CERT`, `CERTROT_KEY`, `CERTROT_BUNDLE` name files.
    pub files: bool,
    pub not_after: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

impl HookEnv {
    fn vars(&self) -> Vec<(&'static str, String)> {
        let file = |n: &str| self.target.join(n).display().to_string();
        let mut vars = vec![
            ("CERTROT_CREDENTIAL", self.credential.clone()),
            ("CERTROT_TARGET", self.target.display().to_string()),
            ("CERTROT_NOT_AFTER", self.not_after.clone()),
            ("CERTROT_RESULT", self.result.to_string()),
        ];
        if self.files {
            vars.extend([
                ("CERTROT_CERT", file("cert.pem")),
                ("CERTROT_KEY", file("key.pem")),
                ("CERTROT_BUNDLE", file("bundle.pem")),
            ]);
        }
        vars
    }
}

/// Runs every hook of `hooks` registered for `on`, in order; returns one message per failure.
pub async fn run(hooks: &[Hook], on: HookOn, env: &HookEnv) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, h) in hooks.iter().enumerate().filter(|(_, h)| h.on == on) {
        let r = match &h.action {
            HookAction::Exec { argv, timeout } => exec(argv, timeout.0, env).await,
            HookAction::Signal { signal, pid_file } => {
                // Off the runtime's workers, and bounded: nothing about a pid file may hold
                // a rotation (or the daemon) up.
                let (signal, pid_file) = (signal.clone(), pid_file.clone());
                let job = tokio::task::spawn_blocking(move || send_signal(&signal, &pid_file));
                match tokio::time::timeout(std::time::Duration::from_secs(5), job).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(format!("signal hook: {e}")),
                    Err(_) => Err("signal hook: no answer within 5 s".into()),
                }
            }
        };
        match r {
            Ok(()) => tracing::info!(credential = %env.credential, hook = i, "hook succeeded"),
            Err(m) => {
                let m = format!("hook[{i}]: {m}");
                tracing::warn!(credential = %env.credential, "{m}");
                failures.push(m);
            }
        }
    }
    failures
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> String {
    let Some(r) = r else {
        return String::new();
    };
    let mut buf = Vec::new();
    let mut limited = r.take(MAX_HOOK_OUTPUT);
    let _ = limited.read_to_end(&mut buf).await;
    // Drain the rest so the child never blocks on a full pipe.
    let mut rest = limited.into_inner();
    let mut sink = [0u8; 8192];
    while matches!(rest.read(&mut sink).await, Ok(n) if n > 0) {}
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

async fn exec(argv: &[String], timeout: std::time::Duration, env: &HookEnv) -> Result<(), String> {
    let program = &argv[0];
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .envs(env.vars())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{program}: cannot start: {e}"))?;
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let run = async {
        let (o, e, status) = tokio::join!(read_capped(out), read_capped(err), child.wait());
        (o, e, status)
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            let _ = child.start_kill();
            Err(format!(
                "{program}: killed after {}",
                humantime::format_duration(timeout)
            ))
        }
        Ok((o, e, status)) => {
            if !o.is_empty() {
                tracing::info!(credential = %env.credential, program = %program, stdout = %o, "hook output");
            }
            if !e.is_empty() {
                tracing::info!(credential = %env.credential, program = %program, stderr = %e, "hook output");
            }
            match status {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => {
                    let tail: String = e
                        .chars()
                        .rev()
                        .take(500)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    Err(format!(
                        "{program}: exited with {}{}",
                        s.code()
                            .map_or("a signal".to_string(), |c| format!("code {c}")),
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!(": {tail}")
                        }
                    ))
                }
                Err(err) => Err(format!("{program}: {err}")),
            }
        }
    }
}

fn send_signal(signal: &str, pid_file: &std::path::Path) -> Result<(), String> {
    use rustix::process::Signal;
    let sig = match signal {
        "HUP" => Signal::HUP,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        other => return Err(format!("unsupported signal {other}")),
    };
    // The pid file: a regular file (no planted link or FIFO); the process it names must
    // belong to the file's owner (a pid file a user can write must not get another user's —
    // or root's — process signalled).
    let show = pid_file.display();
    let (mut f, meta) =
        crate::fsutil::open_regular(pid_file, false).map_err(|e| format!("{show}: {e}"))?;
    let owner = {
        use std::os::unix::fs::MetadataExt;
        meta.uid()
    };
    let text = crate::fsutil::read_limited(&mut f, 64).map_err(|e| format!("{show}: {e}"))?;
    let pid_text = String::from_utf8_lossy(&text);
    let pid: i32 = pid_text.trim().parse().map_err(|_| {
        format!(
            "{}: {:?} is not a process id",
            pid_file.display(),
            pid_text.trim()
        )
    })?;
    let pid = rustix::process::Pid::from_raw(pid)
        .filter(|p| p.as_raw_nonzero().get() > 1)
        .ok_or_else(|| format!("{}: refusing to signal pid {pid}", pid_file.display()))?;
    let runs_as = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{}", pid.as_raw_nonzero()))
            .map(|m| m.uid())
            .map_err(|e| format!("{show}: pid {}: {e}", pid.as_raw_nonzero()))?
    };
    if runs_as != owner {
        return Err(format!(
            "{show}: refusing to signal pid {}: it runs as uid {runs_as}, the pid file belongs to uid {owner}",
            pid.as_raw_nonzero()
        ));
    }
    rustix::process::kill_process(pid, sig).map_err(|e| {
        format!(
            "SIG{signal} to pid {} ({}): {e}",
            pid.as_raw_nonzero(),
            pid_file.display()
        )
    })
}
