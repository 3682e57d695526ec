//! The real `certrot` binary: `check` exit codes for every state, `import` round trip,
//! `status`, `rollback`, `config check`, the lock's exit code 75, and secret hygiene.

mod common;
use certrot::config::Layout;
use common::*;
use time::{Duration, OffsetDateTime};

struct Ws {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    config: String,
    ca: certrot_sandbox::ca::LocalCa,
}

fn ws(names: &[&str], extra: &str) -> Ws {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let config = write_config(&root, names, extra).display().to_string();
    let ca = certrot_sandbox::ca::LocalCa::new("cli CA").unwrap();
    Ws {
        _tmp: tmp,
        root,
        config,
        ca,
    }
}

impl Ws {
    fn put(&self, name: &str, age: Duration, lifetime: Duration) -> certrot_sandbox::ca::Issued {
        let i = issue(&self.ca, name, age, lifetime);
        dir_target(&self.root.join("targets").join(name), 3, Layout::Files)
            .commit(&generation(&i), OffsetDateTime::now_utc())
            .unwrap();
        i
    }
    fn import(&self, key_file: &std::path::Path) -> std::process::Output {
        run(&[
            "--config",
            &self.config,
            "import",
            "orders",
            "--no-validate",
            "--service-key",
            key_file.to_str().unwrap(),
        ])
    }
    fn check(&self, names: &[&str]) -> (i32, String) {
        let mut args = vec!["--config", self.config.as_str(), "check"];
        args.extend(names);
        let o = run(&args);
        (o.status.code().unwrap(), text(&o).0)
    }
}

#[test]
fn check_exit_codes_for_each_state() {
    let w = ws(
        &[
            "ok", "overdue", "critical", "expired", "missing", "mismatch", "garbage",
        ],
        "",
    );
    w.put("ok", Duration::hours(1), Duration::days(7));
    w.put("overdue", Duration::days(5), Duration::days(7));
    w.put("critical", Duration::hours(150), Duration::days(7));
    w.put("expired", Duration::days(8), Duration::days(7));
    w.put("mismatch", Duration::hours(1), Duration::days(7));
    w.put("garbage", Duration::hours(1), Duration::days(7));
    // Swap in another certificate's key inside the current generation.
    let other = issue(&w.ca, "x", Duration::hours(1), Duration::days(7));
    let mm = w.root.join("targets/mismatch/..data/key.pem");
    std::fs::write(&mm, other.key_pem.as_bytes()).unwrap();
    std::fs::write(
        w.root.join("targets/garbage/..data/cert.pem"),
        [0u8, 159, 146, 150],
    )
    .unwrap();

    let cases: &[(&str, i32, &str)] = &[
        ("ok", 0, "OK ok: expires in 6d 2"),
        ("overdue", 1, "WARNING overdue: renewal overdue by"),
        ("critical", 2, "CRITICAL critical: expires in 17h 5"),
        ("expired", 2, "CRITICAL expired: expired 1d 0h ago"),
        ("missing", 2, "CRITICAL missing: no current generation in"),
        (
            "mismatch",
            2,
            "key.pem: the private key matches none of the 1 certificate(s)",
        ),
        ("garbage", 2, "cert.pem: no PEM \"CERTIFICATE\" block found"),
    ];
    for (name, code, expect) in cases {
        let (c, out) = w.check(&[name]);
        assert_eq!(c, *code, "{name}: {out}");
        assert!(out.contains(expect), "{name}: {out}");
    }
    let (c, out) = w.check(&[]);
    assert_eq!(c, 2);
    assert!(
        out.starts_with("CRITICAL - 5 critical, 1 warning, 1 ok\n"),
        "{out}"
    );
    // JSON output says the same.
    let o = run(&["--config", &w.config, "check", "overdue", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["health"], "WARNING");
    assert_eq!(v["credentials"][0]["credential"], "overdue");
    // UNKNOWN: broken config, unknown name.
    let bad = w.root.join("bad.toml");
    std::fs::write(&bad, "[[credential]]\nname = 1\n").unwrap();
    let o = run(&["--config", bad.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).0.starts_with("UNKNOWN - "), "{:?}", text(&o));
    let (c, out) = w.check(&["nope"]);
    assert_eq!(c, 3, "{out}");
    assert!(out.contains("no credential named \"nope\""), "{out}");
}

#[test]
fn import_round_trip_status_and_rollback() {
    let w = ws(&["orders"], "");
    let i1 = issue(&w.ca, "orders", Duration::hours(1), Duration::days(7));
    let mut sk = service_key(&i1, "sb-orders!t7");
    // As `cf service-key` prints it: a leading line, literal \n inside the PEM.
    let cred = sk["credentials"].as_object_mut().unwrap();
    let pem_escaped = i1.chain_pem.replace('\n', "\\n");
    cred.insert("certificate".into(), pem_escaped.into());
    let key_file = w.root.join("sk.json");
    let body = format!(
        "Getting key orders-key for service instance orders as admin...\n\n{}",
        serde_json::to_string_pretty(&sk["credentials"]).unwrap()
    );
    std::fs::write(&key_file, body).unwrap();
    let o = w.import(&key_file);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let (_, err) = text(&o);
    assert!(!err.contains("PRIVATE KEY"), "key in logs: {err}");
    assert!(!err.is_empty(), "the import logs a line");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {err:?}"
    );
    let written: serde_json::Value = serde_json::from_slice(
        &std::fs::read(w.root.join("targets/orders/credentials.json")).unwrap(),
    )
    .unwrap();
    // Every field as given, the certificate as real PEM (an SAP library cannot use the
    // literal \n form).
    let mut expected = sk["credentials"].clone();
    expected["certificate"] = i1.chain_pem.clone().into();
    assert_eq!(
        written, expected,
        "credentials.json differs from the input's fields"
    );

    // Second import, then status and rollback.
    let i2 = issue(&w.ca, "orders", Duration::hours(1), Duration::days(7));
    let key2 = w.root.join("sk2.json");
    std::fs::write(&key2, service_key(&i2, "sb-orders!t7").to_string()).unwrap();
    assert_eq!(w.import(&key2).status.code(), Some(0));
    let serial = |i: &certrot_sandbox::ca::Issued| generation(i).leaf().serial.clone();
    let o = run(&["--config", &w.config, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["serial"], serial(&i2).as_str());
    assert_eq!(v[0]["client_id"], "sb-orders!t7");
    let o = run(&["--config", &w.config, "status"]);
    let (out, _) = text(&o);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("CREDENTIAL  CLIENT ID / SUBJECT"),
        "{out}"
    );
    assert!(out.contains("orders      sb-orders!t7"), "{out}");

    // Checked first: this credential's token endpoint does not answer, so nothing switches.
    let o = run(&["--config", &w.config, "rollback", "orders"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let (_, err) = text(&o);
    assert!(
        err.contains("the previous generation fails its token check, nothing was switched"),
        "{err}"
    );
    let o = run(&["--config", &w.config, "check", "orders", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["credentials"][0]["serial"], serial(&i2).as_str());
    let o = run(&["--config", &w.config, "rollback", "orders", "--no-validate"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = run(&["--config", &w.config, "check", "orders", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["credentials"][0]["serial"], serial(&i1).as_str());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.root.join("state/orders.json")).unwrap()).unwrap();
    assert_eq!(state["current"]["source"], "rollback");
    assert_eq!(state["current"]["serial"], serial(&i1).as_str());
}

#[test]
fn a_held_lock_gives_exit_75() {
    let w = ws(&["orders"], "");
    let i = issue(&w.ca, "orders", Duration::hours(1), Duration::days(7));
    let key_file = w.root.join("sk.json");
    std::fs::write(&key_file, service_key(&i, "c").to_string()).unwrap();
    std::fs::create_dir_all(w.root.join("state")).unwrap();
    let lock =
        certrot::lock::CredentialLock::acquire(&w.root.join("state"), "orders", false).unwrap();
    let o = w.import(&key_file);
    assert_eq!(o.status.code(), Some(75));
    let (_, err) = text(&o);
    assert!(
        err.contains(&format!("locked by pid {}", std::process::id())),
        "{err}"
    );
    assert!(!w.root.join("targets/orders").exists());
    drop(lock);
    let o = w.import(&key_file);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn config_check_and_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let o = run(&["--config", example, "config", "check"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let (out, _) = text(&o);
    assert!(out.contains("is valid"), "{out}");
    // What the Quick start copies switches nothing on that an operator did not ask for.
    assert!(
        out.contains("1 credential(s)")
            && out.contains("0 window(s)")
            && !out.contains("hook on")
            && !out.contains("replica")
            && !out.contains("vault"),
        "{out}"
    );
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/config.reference.toml");
    let o = run(&["--config", reference, "config", "check"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let (out, _) = text(&o);
    for shown in [
        "window: opens",
        "hook on",
        "replica",
        "signer \"vault\"",
        "(generic)",
    ] {
        assert!(out.contains(shown), "the reference lacks {shown}: {out}");
    }
    // CERTROT_CONFIG is honoured when --config is absent.
    let o = bin()
        .args(["config", "check"])
        .env("CERTROT_CONFIG", example)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn no_secret_reaches_output_at_trace_level() {
    let w = ws(&["orders"], "");
    let i = issue(&w.ca, "orders", Duration::hours(1), Duration::days(7));
    let mut sk = service_key(&i, "c");
    sk["credentials"]["clientsecret"] = "s3cr3t-value-never-shown".into();
    let key_file = w.root.join("sk.json");
    std::fs::write(&key_file, sk.to_string()).unwrap();
    let key_body: String = i.key_pem.lines().nth(1).unwrap().to_string();
    for args in [
        vec![
            "-vvv",
            "--config",
            &w.config,
            "import",
            "orders",
            "--no-validate",
            "--service-key",
            key_file.to_str().unwrap(),
        ],
        vec!["-vvv", "--config", &w.config, "status", "--json"],
        vec!["-vvv", "--config", &w.config, "check", "--json"],
        vec![
            "-vvv",
            "--log-format",
            "json",
            "--config",
            &w.config,
            "rollback",
            "orders",
            "--no-validate",
        ],
    ] {
        let o = run(&args);
        let (out, err) = text(&o);
        for s in [&out, &err] {
            assert!(!s.contains(&key_body), "{args:?} leaked the key");
            assert!(
                !s.contains("s3cr3t-value-never-shown"),
                "{args:?} leaked the secret"
            );
        }
    }
    // Debug of a generation redacts.
    let g = certrot::servicekey::parse_service_key(
        sk.to_string().as_bytes(),
        "sk",
        &Default::default(),
    )
    .unwrap();
    let dbg = format!("{g:?}");
    assert!(
        dbg.contains("[REDACTED]") && !dbg.contains(&key_body) && !dbg.contains("s3cr3t"),
        "{dbg}"
    );
}

/// `certrot demo` in its short form: sandbox + the real daemon, 6-second certificates, two
/// rotations per credential; every pipeline event is shown and nothing is left running.
#[test]
fn demo_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let t = std::time::Instant::now();
    let o = run(&[
        "demo",
        "--dir",
        dir.to_str().unwrap(),
        "--lifetime",
        "6s",
        "--rotations",
        "2",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out} {err}");
    assert!(
        // The demo's own deadline is near a minute; this only catches a hang.
        t.elapsed() < std::time::Duration::from_secs(120),
        "{:?}",
        t.elapsed()
    );
    for want in [
        "metrics: http://127.0.0.1:",
        "orders: renewal decided (due)",
        "login: binding login-",
        "token check with the new certificate passed",
        "orders: committed ..",
        "old binding",
        "login: rotated (due)",
        "CREDENTIAL  CLIENT ID",
        "demo finished; files kept in",
        // In words a newcomer understands: which files, and when they change.
        "What an application reads",
        "cert.pem + key.pem, or bundle.pem",
        "orders: next renewal in ",
        "orders: the new certificate is in place; next renewal in ",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let orders_dir = dir.join("targets").join("orders");
    assert!(
        out.contains(&format!("the directory {}", orders_dir.display())),
        "{out}"
    );
    assert!(!err.contains("INFO"), "the demo's own log is quiet: {err}");
    // The daemon it started is gone: its metrics port no longer answers.
    let url = out
        .lines()
        .find_map(|l| l.split("metrics: http://").nth(1))
        .and_then(|l| l.split('/').next())
        .unwrap()
        .to_string();
    assert!(std::net::TcpStream::connect(url).is_err());
    // The workspace stays usable: both credentials pass a token check? The sandbox is gone,
    // so inspection only.
    let o = run(&[
        "--config",
        dir.join("certrot.toml").to_str().unwrap(),
        "status",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

/// Control characters in values from outside (a client id) are escaped in every human
/// output: no terminal escape reaches `import`, `status` or `check`.
#[test]
fn control_characters_from_outside_never_reach_the_terminal() {
    let w = ws(&["orders"], "");
    let i = issue(&w.ca, "orders", Duration::hours(1), Duration::days(7));
    let evil = "sb-orders\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nOK orders: fine";
    let key = w.root.join("evil.json");
    std::fs::write(&key, service_key(&i, evil).to_string()).unwrap();
    let o = w.import(&key);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let status = run(&["--config", &w.config, "status"]);
    let (_, check) = w.check(&[]);
    for (what, out) in [
        ("import", joined(&o)),
        ("status", joined(&status)),
        ("check", check),
    ] {
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\r'),
            "{what}: {out:?}"
        );
        assert!(
            !out.contains("\nOK orders: fine"),
            "{what}: a forged line: {out:?}"
        );
    }
    assert!(
        joined(&status).contains("sb-orders\\u{1b}[2J"),
        "{}",
        joined(&status)
    );
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    let (out, _) = text(&o);
    let version = env!("CARGO_PKG_VERSION");
    let commit = out
        .trim()
        .strip_prefix(&format!("certrot {version} ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `certrot {version} (<commit>)`: {out:?}"));
    // Built from a git checkout (as every test build is): the commit of its HEAD.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success(), "the tests run from a git checkout");
    assert_eq!(commit, String::from_utf8(head.stdout).unwrap().trim());
}

#[test]
fn completions_and_man_page_cover_every_command() {
    let commands = [
        "check", "status", "import", "rotate", "run", "rollback", "config",
    ];
    // bash: the script loads and registers a completion for certrot.
    let script = text(&run(&["completions", "bash"])).0;
    for c in commands {
        assert!(script.contains(c), "bash completion lacks {c}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("certrot.bash");
    std::fs::write(&file, &script).unwrap();
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p certrot", file.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("certrot"));
    for shell in ["zsh", "fish"] {
        let s = text(&run(&["completions", shell])).0;
        assert!(
            s.contains("rotate") && s.contains("revoke-previous"),
            "{shell}"
        );
    }
    // An unknown shell is a usage error naming the choices.
    let o = run(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("bash"), "{}", text(&o).1);
    // The man page: roff with a title, a synopsis and every command.
    let man = text(&run(&["man"])).0;
    assert!(
        man.starts_with(".ie") || man.contains(".TH certrot"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains(".TH certrot"));
    for c in commands {
        assert!(man.contains(c), "man page lacks {c}");
    }
}

#[test]
fn every_argument_has_help() {
    // Every option and positional of every command is explained in `--help`.
    let commands: &[&[&str]] = &[
        &[],
        &["check"],
        &["status"],
        &["import"],
        &["rotate"],
        &["rollback"],
        &["config", "check"],
        &["completions"],
        &["man"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let o = run(&args);
        assert!(o.status.success(), "{args:?}");
        let (out, _) = text(&o);
        let lines: Vec<&str> = out.lines().collect();
        let mut section = "";
        let mut entries = 0;
        for (k, line) in lines.iter().enumerate() {
            if !line.starts_with(' ') {
                section = line;
                continue;
            }
            if section != "Arguments:" && section != "Options:" {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let entry = line.trim_start();
            // An entry (`  -q, --quiet...`, `      --json`, `  [NAMES]...`) has its help on
            // the same line after two spaces, or on the next, deeper-indented line.
            if indent <= 6 && entry.starts_with(['-', '<', '[']) {
                entries += 1;
                let next_is_help = lines.get(k + 1).is_some_and(|n| {
                    let ni = n.len() - n.trim_start().len();
                    ni > indent + 2 && !n.trim().is_empty()
                });
                assert!(
                    entry.contains("  ") || next_is_help,
                    "`certrot {}`: no help for `{entry}`",
                    c.join(" ")
                );
            }
        }
        assert!(
            entries > 0,
            "no arguments read from `certrot {} --help`:\n{out}",
            c.join(" ")
        );
    }
}

/// `--config` shows only where a configuration is read; the commands that read none still
/// accept it (scripts pass it everywhere) but do not offer it.
#[test]
fn config_is_offered_only_where_it_is_read() {
    for (args, offered) in [
        (&["demo", "--help"][..], false),
        (&["sandbox", "--help"], false),
        (&["man", "--help"], false),
        (&["completions", "--help"], false),
        (&["rotate", "--help"], true),
        (&["status", "--help"], true),
    ] {
        let help = text(&run(args)).0;
        assert_eq!(help.contains("--config"), offered, "{args:?}: {help}");
    }
    let o = run(&["completions", "bash", "--config", "/nonexistent.toml"]);
    assert!(o.status.success(), "{}", joined(&o));
}

/// A reader that is gone (`certrot config check | head -1`) ends the process quietly.
#[test]
fn a_closed_stdout_is_no_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[credential]]\nname = \"orders\"\ntarget.path = \"/srv/orders\"\n",
    )
    .unwrap();
    let mut child = bin()
        .args(["--config", cfg.to_str().unwrap(), "config", "check"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the process gets to write (it needs milliseconds to start).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
