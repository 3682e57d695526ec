//! The monitoring bundle (`monitoring/`, `kubernetes/monitoring/`) checked by Prometheus
//! itself (Debian's `prometheus` package, installed by `scripts/test-deps.sh`): the rules
//! pass `promtool check rules` and their unit tests, and a weakened rule fails those tests;
//! the Prometheus Operator's `PrometheusRule` carries the same groups; a real Prometheus
//! scraping a real `certrot run` fires the token-check alert for the credential whose
//! certificate the token endpoint rejects (and none for its healthy neighbour), then the
//! daemon-down alert once the daemon is stopped; every query of the Grafana dashboard
//! evaluates there and names only metrics certrot exports.

mod common;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use common::daemon::*;
use common::world::World;
use common::{free_port, joined};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{name} is not installed (Debian package prometheus): run scripts/test-deps.sh"
    );
    path
}

fn promtool(args: &[&Path]) -> (bool, String) {
    let o = Command::new(tool("promtool")).args(args).output().unwrap();
    (o.status.success(), joined(&o))
}

fn rules_text() -> String {
    std::fs::read_to_string(root().join("monitoring/certrot.rules.yml")).unwrap()
}

#[test]
fn rules_pass_promtool_and_their_unit_tests_catch_a_weakened_rule() {
    let rules = root().join("monitoring/certrot.rules.yml");
    let tests = root().join("monitoring/tests/certrot.rules.test.yml");
    let (ok, out) = promtool(&[Path::new("check"), Path::new("rules"), &rules]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&[Path::new("test"), Path::new("rules"), &tests]);
    assert!(ok && out.contains("SUCCESS"), "{out}");

    // The same tests against rules that tolerate one more failed rotation, and no longer
    // alert on a certificate that has just expired: both are caught.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("tests")).unwrap();
    let weakened = rules_text()
        .replace(
            "certrot_rotation_consecutive_failures >= 3",
            "certrot_rotation_consecutive_failures >= 4",
        )
        .replace("- time() <= 0", "- time() <= -600");
    assert_ne!(weakened, rules_text());
    std::fs::write(tmp.path().join("certrot.rules.yml"), weakened).unwrap();
    let copied = tmp.path().join("tests/certrot.rules.test.yml");
    std::fs::copy(&tests, &copied).unwrap();
    let (ok, out) = promtool(&[Path::new("test"), Path::new("rules"), &copied]);
    assert!(!ok, "weakened rules passed their tests: {out}");
    assert!(
        out.contains("alertname: CertrotRotationFailing")
            && out.contains("alertname: CertrotCertificateExpired"),
        "{out}"
    );
}

#[test]
fn the_prometheus_operator_rule_carries_the_same_groups() {
    let manifest =
        std::fs::read_to_string(root().join("kubernetes/monitoring/prometheusrule.yaml")).unwrap();
    let rules = rules_text();
    let groups = &rules[rules.find("groups:").unwrap()..];
    let indented: String = groups
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    assert!(
        manifest.ends_with(&format!("spec:\n{indented}")),
        "kubernetes/monitoring/prometheusrule.yaml: spec is not the groups of \
         monitoring/certrot.rules.yml, indented by two spaces"
    );
    assert!(manifest.contains("kind: PrometheusRule"));
    let sm =
        std::fs::read_to_string(root().join("kubernetes/monitoring/servicemonitor.yaml")).unwrap();
    assert!(
        sm.contains("kind: ServiceMonitor") && sm.contains("honorLabels: true"),
        "{sm}"
    );
    let kust =
        std::fs::read_to_string(root().join("kubernetes/monitoring/kustomization.yaml")).unwrap();
    for f in ["prometheusrule.yaml", "servicemonitor.yaml"] {
        assert!(kust.contains(&format!("- {f}")), "{kust}");
    }
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `certrot` at `target` every second and evaluates `rules` every second.
    fn start(dir: &Path, target: &str, rules: &str) -> Prometheus {
        std::fs::write(dir.join("certrot.rules.yml"), rules).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - certrot.rules.yml\n\
                 scrape_configs:\n  - job_name: certrot\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus { child, addr };
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&p.addr).is_ok() && get(&p.addr, "/-/ready").0 == 200
        });
        p
    }

    fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(&self.addr, path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `(alertname, credential)` of every firing alert.
    fn firing(&self) -> Vec<(String, String)> {
        let v = self.api("/api/v1/alerts");
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                let l = &a["labels"];
                (
                    l["alertname"].as_str().unwrap_or("").to_string(),
                    l["credential"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

/// Percent-encodes a query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression of the Grafana dashboard.
fn dashboard_queries() -> Vec<String> {
    let text =
        std::fs::read_to_string(root().join("monitoring/grafana/certrot-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            p["datasource"]["uid"] == "${DS_PROMETHEUS}",
            "panel {} has no templated data source",
            p["title"]
        );
        for t in p["targets"].as_array().unwrap() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(out.len() >= 6, "{out:?}");
    out
}

#[test]
fn a_real_prometheus_fires_the_alert_of_a_failing_credential_and_the_dashboard_queries_run() {
    let w = World::new(SmOptions {
        key_override: Some(certrot_sandbox::ca::KeyAlg::EcdsaP256),
        ..SmOptions::default()
    });
    let a = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
    let b = w
        .stack
        .sm
        .add_instance(InstanceKind::Xsuaa, "sb-billing!t1");
    let cfg = w.config(
        None,
        &[
            w.credential("orders", "xsuaa", &a, ""),
            w.credential("billing", "xsuaa", &b, ""),
        ],
    );
    listen_on_loopback(&cfg, "probe_schedule = \"* * * * * *\"\n");
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut daemon = w.start(&cfg, &["run"]);
    let lines = stdout_lines(&mut daemon);
    let target = metrics_addr(&lines);

    // The shipped rules, each `for:` shortened to a second (the expressions are as shipped).
    let rules: String = rules_text()
        .lines()
        .map(|l| match l.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 1s\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    assert_eq!(rules.matches("for: 1s").count(), 7, "{rules}");
    let dir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(dir.path(), &target, &rules);
    wait_for("the first scrapes", Duration::from_secs(30), || {
        let v = prom.api(&format!(
            "/api/v1/query?query={}",
            encode("certrot_token_check_passing == 1")
        ));
        v["data"]["result"].as_array().is_some_and(|r| r.len() == 2)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(prom.firing(), vec![], "alerts for healthy credentials");

    // The dashboard's queries run and name only what certrot exports.
    let (_, exported) = get(&target, "/metrics");
    for q in dashboard_queries() {
        let q1 = q
            .replace("$__rate_interval", "1m")
            .replace("$credential", ".*");
        let v = prom.api(&format!("/api/v1/query?query={}", encode(&q1)));
        assert_eq!(v["status"], "success", "{q}: {v}");
        for name in q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|n| n.starts_with("certrot_"))
        {
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum")
                .trim_end_matches("_total");
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "the dashboard queries {name}, which certrot does not export"
            );
        }
    }

    // The token endpoint rejects orders' certificate: its alert fires, billing's does not.
    w.stack.tokens.revoke(&w.current_fingerprint("orders"));
    wait_for(
        "CertrotTokenCheckFailing for orders",
        Duration::from_secs(60),
        || {
            prom.firing()
                .contains(&("CertrotTokenCheckFailing".into(), "orders".into()))
        },
    );
    let firing = prom.firing();
    assert!(
        firing.iter().all(|(_, c)| c == "orders"),
        "an alert names the healthy credential: {firing:?}"
    );

    // The daemon stops: the scrape fails and CertrotDaemonDown fires.
    let _ = daemon.kill();
    let _ = daemon.wait();
    wait_for("CertrotDaemonDown", Duration::from_secs(60), || {
        prom.firing()
            .iter()
            .any(|(name, _)| name == "CertrotDaemonDown")
    });
}
