//! Exports of the metrics for one-shot runs: the Prometheus 0.0.4 text format, the
//! node_exporter textfile (written atomically) and the Pushgateway push.

use super::Metrics;

/// Converts OpenMetrics text to the Prometheus 0.0.4 text format.
pub fn to_prometheus_text(om: &str) -> String {
    let counters: Vec<String> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .map(str::to_string)
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let fixed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .iter()
                .any(|c| c == name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(fixed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Writes the textfile atomically (temp file, rename; not synced: the next run writes it
/// again), mode 0644.
pub fn write_textfile(path: &std::path::Path, m: &Metrics) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(&"not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    crate::fsutil::write_atomic(
        dir,
        name,
        m.prometheus_text().as_bytes(),
        0o644,
        crate::fsutil::Durability::Volatile,
    )
    .map_err(|e| err(&e))
}

/// Pushes the metrics to a Pushgateway: `PUT <url>/metrics/job/certrot/instance/<host>`.
pub async fn push(url: &str, instance: Option<&str>, m: &Metrics) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("--push-gateway {url:?}: not an http(s) URL"));
    }
    let host = match instance {
        Some(i) => i.to_string(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    // Plain when safe in a path; else the Pushgateway's base64 form (URL-safe alphabet).
    let instance = if !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        format!("instance/{host}")
    } else {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(host.as_bytes());
        format!(
            "instance@base64/{}",
            if b64.is_empty() { "=".into() } else { b64 }
        )
    };
    let target = format!(
        "{}/metrics/job/certrot/{instance}",
        url.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("{target}: {e}"))?;
    let resp = client
        .put(&target)
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(m.prometheus_text())
        .send()
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{target}: HTTP {status}"))
    }
}
