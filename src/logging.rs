//! Logging on stderr: text for a person or the journal, JSON for a collector. Values in log
//! lines come from outside too (Service Manager answers, state files, certificate fields):
//! text lines escape their control and invisible format characters, so no value can forge a
//! log line or drive a terminal (JSON lines escape them by JSON's own rules).

use clap::ValueEnum;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// JSON where logs go to a collector (a pod: `KUBERNETES_SERVICE_HOST` is set, and
    /// stderr is not a terminal); text otherwise.
    pub fn default_for(in_pod: bool, terminal: bool) -> LogFormat {
        if in_pod && !terminal {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Sets up `tracing` on stderr.
pub fn init_logging(format: LogFormat, verbose: u8, quiet: u8) {
    let level = match (verbose as i32) - (quiet as i32) {
        i32::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERTROT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("certrot={level},warn")));
    // kube-client logs whole response bodies (a Secret's private key) at WARN when it cannot
    // parse them: only its errors pass, whatever CERTROT_LOG says.
    let cap = tracing_subscriber::filter::filter_fn(|m| {
        !m.target().starts_with("kube_client") || *m.level() <= tracing::Level::ERROR
    });
    // Colour only for a person at a terminal: never into a file, a pipe or the journal, and
    // never with NO_COLOR (https://no-color.org) set.
    let ansi = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(cap);
    let _ = match format {
        LogFormat::Text => registry.with(layer.fmt_fields(escaped_fields())).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
}

/// How text lines render fields: `message` as it is, others as `name=value`, both with
/// [`crate::text::printable`] applied.
pub fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let text = crate::text::printable(&format!("{value:?}"), usize::MAX);
            match field.name() {
                "message" => write!(w, "{text}"),
                name => write!(w, "{name}={text}"),
            }
        },
    )
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::escaped_fields;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_escape_values_from_outside() {
        let buf = Buffer::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .finish();
        let evil = "sb-x\u{1b}[2J\r\n2026-12-02T00:00:00Z  INFO forged\u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(binding = %evil, "not retired: {evil}");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "one line: {out:?}");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{202e}'),
            "{out:?}"
        );
        assert!(
            out.contains("not retired: sb-x\\u{1b}[2J\\r\\n2026"),
            "{out:?}"
        );
        assert!(out.contains("binding=sb-x\\u{1b}"), "{out:?}");
    }
}
