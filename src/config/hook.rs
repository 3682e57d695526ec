//! `[[credential.hook]]`: what runs after a commit (or a failure) — an `exec` hook (argv, no
//! shell) or a `signal` hook (signal name + pid file, re-read each time).

use crate::units::Span;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// When a hook runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookOn {
    /// After a new generation was committed.
    #[default]
    Success,
    /// After a rotation failed (the old generation stays).
    Failure,
}

/// A hook as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHook {
    #[serde(default)]
    on: HookOn,
    exec: Option<Vec<String>>,
    signal: Option<String>,
    pid_file: Option<PathBuf>,
    timeout: Option<Span>,
}

/// What a hook does.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookAction {
    Exec { argv: Vec<String>, timeout: Span },
    Signal { signal: String, pid_file: PathBuf },
}

/// A resolved hook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hook {
    pub on: HookOn,
    pub action: HookAction,
}

/// Signals a `signal` hook may send.
pub const SIGNALS: [&str; 6] = ["HUP", "USR1", "USR2", "TERM", "INT", "QUIT"];

impl RawHook {
    pub(crate) fn resolve(self) -> Result<Hook, (String, String)> {
        let action = match (self.exec, self.signal) {
            (Some(_), Some(_)) => {
                return Err(("exec".into(), "a hook has exec or signal, not both".into()));
            }
            (None, None) => {
                return Err((
                    "exec".into(),
                    "a hook needs exec = [argv…] or signal = \"HUP\" with pid_file".into(),
                ));
            }
            (Some(argv), None) => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err((
                        "exec".into(),
                        "exec needs a program: exec = [\"/path/to/program\", \"arg\"…]".into(),
                    ));
                }
                if self.pid_file.is_some() {
                    return Err(("pid_file".into(), "pid_file belongs to signal hooks".into()));
                }
                let timeout = self.timeout.unwrap_or(Span::secs(30));
                if timeout.0.is_zero() {
                    return Err(("timeout".into(), "must be greater than zero".into()));
                }
                HookAction::Exec { argv, timeout }
            }
            (None, Some(sig)) => {
                let s = sig.trim_start_matches("SIG").to_ascii_uppercase();
                if !SIGNALS.contains(&s.as_str()) {
                    return Err((
                        "signal".into(),
                        format!("{sig:?} is not one of {}", SIGNALS.join(", ")),
                    ));
                }
                let Some(pid_file) = self.pid_file else {
                    return Err(("pid_file".into(), "a signal hook needs pid_file".into()));
                };
                HookAction::Signal {
                    signal: s,
                    pid_file,
                }
            }
        };
        Ok(Hook {
            on: self.on,
            action,
        })
    }
}
