//! The `command` signer: runs `argv` (no shell) with the CSR PEM on stdin and reads the
//! certificate chain PEM from stdout. Environment `CERTROT_CREDENTIAL`, `CERTROT_SUBJECT`;
//! a time limit (default 60 s, then the process is killed); stdout limited to 1 MiB; a
//! non-zero exit or output that is not a certificate chain is an error that carries the
//! command's stderr (last 2 KiB).

use super::sign::{SignError, SignRequest};
use crate::config::CommandConfig;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_STDOUT: u64 = 1 << 20;
const MAX_STDERR_SHOWN: usize = 2048;

/// A configured command signer.
pub struct CommandSigner {
    argv: Vec<String>,
    timeout: Duration,
}

impl CommandSigner {
    pub fn load(cfg: &CommandConfig) -> Result<CommandSigner, SignError> {
        if cfg.argv.is_empty() {
            return Err(SignError {
                signer: "command".into(),
                message: "argv is required".into(),
            });
        }
        Ok(CommandSigner {
            argv: cfg.argv.clone(),
            timeout: cfg.timeout.map_or(Duration::from_secs(60), |t| t.0),
        })
    }

    pub async fn sign(&self, req: &SignRequest<'_>) -> Result<String, SignError> {
        let program = &self.argv[0];
        let e = |m: String| SignError {
            signer: format!("command {program}"),
            message: m,
        };
        let mut child = tokio::process::Command::new(program)
            .args(&self.argv[1..])
            .env("CERTROT_CREDENTIAL", req.credential)
            .env("CERTROT_SUBJECT", req.subject)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|x| e(format!("cannot start: {x}")))?;
        let mut stdin = child.stdin.take();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let csr = req.csr_pem.as_bytes().to_vec();
        let work = async {
            let feed = async {
                if let Some(mut i) = stdin.take() {
                    // A program that does not read its input is its own business.
                    let _ = i.write_all(&csr).await;
                    let _ = i.shutdown().await;
                }
            };
            let read_out = async {
                let mut buf = Vec::new();
                if let Some(o) = out {
                    let mut limited = o.take(MAX_STDOUT + 1);
                    let _ = limited.read_to_end(&mut buf).await;
                }
                buf
            };
            let read_err = async {
                let mut buf = Vec::new();
                if let Some(r) = err {
                    let mut limited = r.take(64 * 1024);
                    let _ = limited.read_to_end(&mut buf).await;
                }
                buf
            };
            let ((), o, r) = tokio::join!(feed, read_out, read_err);
            (o, r, child.wait().await)
        };
        let (stdout, stderr, status) = match tokio::time::timeout(self.timeout, work).await {
            Ok(x) => x,
            Err(_) => {
                return Err(e(format!(
                    "no answer within {} (killed)",
                    humantime::format_duration(self.timeout)
                )));
            }
        };
        let stderr = String::from_utf8_lossy(&stderr);
        let tail: String = {
            let t = stderr.trim();
            let start = t.len().saturating_sub(MAX_STDERR_SHOWN);
            let start = (start..t.len())
                .find(|i| t.is_char_boundary(*i))
                .unwrap_or(t.len());
            t[start..].to_string()
        };
        let with_stderr = |m: String| {
            if tail.is_empty() {
                e(m)
            } else {
                e(format!("{m}; stderr: {tail}"))
            }
        };
        let status = status.map_err(|x| e(x.to_string()))?;
        if !status.success() {
            return Err(with_stderr(match status.code() {
                Some(c) => format!("exited with code {c}"),
                None => "killed by a signal".into(),
            }));
        }
        if stdout.len() as u64 > MAX_STDOUT {
            return Err(with_stderr("printed more than 1 MiB".into()));
        }
        let label = format!("output of {program}");
        let chain = crate::x509::parse_chain(&stdout, &label)
            .map_err(|x| with_stderr(format!("no certificate chain on stdout: {x}")))?;
        Ok(chain
            .iter()
            .map(|c| crate::x509::pem_block("CERTIFICATE", &c.der))
            .collect())
    }
}
