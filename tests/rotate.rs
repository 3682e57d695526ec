//! `certrot rotate` end to end against the sandbox (token endpoint + Service Manager API over
//! real TLS on 127.0.0.1), through the real binary: rotation sync and async for xsuaa and
//! identity, `--if-due`, `--dry-run`, failures at each step leaving the old generation intact
//! and no binding behind, a SIGKILL between binding creation and commit, two concurrent
//! runs, retirement (deadline and `--revoke-previous`), 422/429 handling, hooks, and the
//! Service Manager access rotating itself.

mod common;
use certrot_sandbox::sm::{InstanceKind, SmCall, SmFault, SmOptions};
use certrot_sandbox::token::{ALWAYS, Fault};
use common::world::World;
use common::*;
use std::time::Duration;

fn rotated(out: &str, name: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with(&format!("{name}: rotated")))
}

#[test]
fn rotates_sync_and_async_xsuaa_and_identity() {
    for async_default in [false, true] {
        let w = World::new(SmOptions {
            async_default,
            operation_delay: Duration::from_millis(100),
            rsa_pool: 2,
            // Validity days scaled to 4 hours each.
            seconds_per_day: 14_400,
            ..SmOptions::default()
        });
        let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
        let ias = w
            .stack
            .sm
            .add_instance(InstanceKind::Identity, "ias-client-1");
        let cfg = w.config(
            None,
            &[
                w.credential("orders", "xsuaa", &xs, ""),
                w.credential(
                    "login",
                    "identity",
                    &ias,
                    "issuer.app_identifier = \"login\"\ncheck.app_tid = \"sandbox-tenant\"",
                ),
            ],
        );
        // First run: nothing there yet → both are created (reason: missing).
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(rotated(&out, "orders") && rotated(&out, "login"), "{out}");
        assert!(out.contains("(missing)"), "{out}");
        let first = w.current_fingerprint("orders");
        let leaf = w.generation("orders");
        let life = leaf.leaf().not_after - leaf.leaf().not_before;
        assert!(
            (life - time::Duration::hours(28)).abs() < time::Duration::seconds(10),
            "{life}"
        );
        let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
        assert_eq!(code, 0, "{out}");
        // Not due on the next run; nothing created.
        let before = w.binding_ids();
        let (code, out, _) = w.certrot(&cfg, &["rotate", "--if-due"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("orders: not due (renews at") && out.contains("login: not due"),
            "{out}"
        );
        assert_eq!(w.binding_ids(), before);
        // Forced: a new generation, the old binding queued for retirement (1 h default).
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "orders"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(rotated(&out, "orders"), "{out}");
        assert_ne!(w.current_fingerprint("orders"), first);
        let st = w.state("orders");
        let cur = st.current.unwrap().binding_id.unwrap();
        assert_eq!(st.retiring.len(), 1);
        assert_ne!(st.retiring[0].binding_id, cur);
        assert!(st.pending.is_none());
        assert_eq!(
            w.binding_ids().len(),
            3,
            "orders: current + retiring; login: current"
        );
        let labels = &w.stack.sm.bindings()[2].labels;
        assert_eq!(labels["managed_by"], vec!["certrot".to_string()]);
        assert_eq!(labels["certrot_credential"], vec!["orders".to_string()]);
        let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
        assert_eq!(code, 0, "{out}");
        let ias_creds = w
            .stack
            .sm
            .bindings()
            .into_iter()
            .find(|b| b.instance_id == ias)
            .unwrap();
        assert!(ias_creds.name.starts_with("login-"), "{}", ias_creds.name);
    }
}

#[test]
fn dry_run_creates_nothing_and_shows_parameters() {
    let w = World::new(SmOptions::default());
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-o!t1");
    let cfg = w.config(
        None,
        &[w.credential(
            "orders",
            "xsuaa",
            &xs,
            "issuer.validity_days = 3\nissuer.key_length = 4096",
        )],
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("orders: dry run: would rotate (forced)"),
        "{out}"
    );
    assert!(
        out.contains(r#""key-length":4096"#) && out.contains(r#""validity":3"#),
        "{out}"
    );
    assert!(w.binding_ids().is_empty());
    assert!(w.stack.sm.calls().is_empty());
    assert!(!w.target("orders").exists());
    // Not even a corrupt state file is touched by a dry run.
    let state_file = w.root().join("state/orders.json");
    std::fs::create_dir_all(state_file.parent().unwrap()).unwrap();
    std::fs::write(&state_file, "{ not json").unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read(&state_file).unwrap(), b"{ not json");
    assert_eq!(
        std::fs::read_dir(w.root().join("state")).unwrap().count(),
        2,
        "state file + lock only"
    );
}

/// Each failing step: exit 1, `failed at <step>: <label>`, the old generation byte for byte
/// unchanged, no binding left but the current one, the failure recorded with a next attempt.
#[test]
fn failure_at_each_step_keeps_the_old_generation_and_deletes_the_new_binding() {
    let w = World::new(SmOptions {
        operation_delay: Duration::from_millis(50),
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let (cfg, current) = orders_rotated(&w, "sb-f!t1");
    type Arrange<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Arrange, &str)> = vec![
        (
            "issue",
            Box::new(|| w.stack.sm.inject(SmCall::Create, SmFault::Status(400), 1)),
            "failed at issue: sm-rejected",
        ),
        (
            "operation failed",
            Box::new(|| {
                w.stack
                    .sm
                    .inject(SmCall::Create, SmFault::OperationFails, 1)
            }),
            "failed at issue: sm-operation-failed",
        ),
        (
            "malformed credentials",
            Box::new(|| {
                w.stack
                    .sm
                    .inject(SmCall::Create, SmFault::MalformedCredentials, 1)
            }),
            "failed at verify: bad-credentials",
        ),
        (
            // The previous generation's client id must not stand in for the binding's.
            "no client id",
            Box::new(|| {
                w.stack
                    .sm
                    .inject(SmCall::Create, SmFault::WithoutClientId, 1)
            }),
            "failed at verify: bad-credentials",
        ),
        (
            "check rejected",
            Box::new(|| w.stack.tokens.inject(Fault::Status(401), 2)),
            "failed at check: unauthorized",
        ),
        (
            "commit",
            Box::new(|| {
                // A real file where the target keeps a link: the commit refuses to overwrite it.
                let t = w.target("orders");
                std::fs::remove_file(t.join("credentials.json")).unwrap();
                std::fs::write(t.join("credentials.json"), "operator's own file").unwrap();
            }),
            "failed at commit: write-failed",
        ),
    ];
    for (i, (what, arrange, expect)) in cases.into_iter().enumerate() {
        // The operation-failed case needs the asynchronous mode.
        let args: &[&str] = &["rotate", "--now"];
        let cfg_now = if what == "operation failed" {
            let text = std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("attempts = 3\n", "attempts = 3\nmode = \"async\"\n");
            std::fs::write(&cfg, text).unwrap();
            cfg.clone()
        } else {
            let text = std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("mode = \"async\"\n", "");
            std::fs::write(&cfg, text).unwrap();
            cfg.clone()
        };
        let before = snapshot(&w.target("orders"));
        arrange();
        let before = if what == "commit" {
            snapshot(&w.target("orders"))
        } else {
            before
        };
        let (code, out, err) = w.certrot(&cfg_now, args);
        assert_eq!(code, 1, "{what}: {out}{err} {:?}", w.stack.sm.calls());
        assert!(out.contains(expect), "{what}: {out}");
        assert!(
            snapshot(&w.target("orders")) == before,
            "{what}: target changed"
        );
        assert_eq!(
            w.binding_ids(),
            vec![current.clone()],
            "{what}: a binding was left behind"
        );
        let st = w.state("orders");
        assert_eq!(st.consecutive_failures, i as u32 + 1, "{what}");
        assert!(st.next_attempt.is_some() && st.pending.is_none(), "{what}");
        let last = st.last_rotation.unwrap();
        assert_eq!(last.result.to_string(), "failure");
        assert!(
            expect.contains(last.step.unwrap().label()),
            "{what}: {last:?}"
        );
        // --if-due now backs off instead of hammering the service.
        let (code, out, _) = w.certrot(&cfg_now, &["rotate", "--if-due"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("not due") || out.contains("backing off"),
            "{out}"
        );
    }
}

/// A token request with `g` against the sandbox (true = accepted).
fn accepted(w: &World, g: &certrot::generation::Generation, client: &str) -> bool {
    let trust = certrot::check::ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(w.stack.ca_pem.as_bytes()),
    };
    w.rt.block_on(certrot::check::request_token(
        g,
        &w.stack.tokens.url,
        client,
        &[],
        trust,
        certrot::check::Limits::default(),
    ))
    .is_ok()
}

/// SIGKILL of `certrot rotate --now` while it checks the new generation (binding created,
/// nothing committed): the target is untouched, the intent naming the binding is on record,
/// and the next run deletes the orphan binding and rotates.
#[test]
fn crash_between_binding_creation_and_commit_is_reconciled() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let (cfg, current) = orders_rotated(&w, "sb-c!t1");
    let before = snapshot(&w.target("orders"));
    w.stack
        .tokens
        .inject(Fault::Latency(Duration::from_secs(20)), 1);
    let mut child = bin()
        .args(["--config", cfg.to_str().unwrap(), "rotate", "--now"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the new binding", || w.binding_ids().len() == 2);
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    w.stack.tokens.clear_faults();
    assert!(
        snapshot(&w.target("orders")) == before,
        "the target changed"
    );
    // A binding that shows its certificate is not written down before its commit: the
    // intent names it, by its name only.
    let pending = w.state("orders").pending.unwrap();
    assert_eq!(pending.binding_id, None, "not written down before a commit");
    assert_eq!(pending.fingerprint_sha256, None);
    let orphan = w
        .stack
        .sm
        .bindings()
        .into_iter()
        .find(|b| b.id != current)
        .unwrap();
    assert_eq!(orphan.name, pending.binding_name);
    let orphan = orphan.id;

    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("deleted orphan binding(s) {orphan}")),
        "{out}"
    );
    assert!(rotated(&out, "orders"), "{out}");
    let ids = w.binding_ids();
    assert!(!ids.contains(&orphan), "{ids:?}");
    let st = w.state("orders");
    assert!(st.pending.is_none());
    assert_eq!(
        ids.len(),
        2,
        "the replaced binding (queued) and the new one"
    );
    assert!(
        ids.contains(&current) && ids.contains(st.current.unwrap().binding_id.as_ref().unwrap())
    );
}

/// A power cut that loses the intent of a binding that shows its certificate (that intent
/// is written atomically, not durably): the binding the run made is named by no record. The
/// next rotation finds it by its labels and deletes it, since no target serves its
/// certificate; the current binding stays.
#[test]
fn a_binding_whose_intent_a_power_cut_lost_is_found_by_its_labels_and_deleted() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let (cfg, current) = orders_rotated(&w, "sb-lost-intent!t1");
    let state_file = w.root().join("state/orders.json");
    let before = std::fs::read(&state_file).unwrap();
    let orphan = w.interrupted_rotation(&cfg, "orders", 2);
    // The state as a power cut could leave it: the rename of the intent never on disk.
    std::fs::write(&state_file, &before).unwrap();
    assert!(w.state("orders").pending.is_none());
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("deleted orphan binding(s) {orphan}")),
        "{out}"
    );
    let ids = w.binding_ids();
    assert!(!ids.contains(&orphan) && ids.contains(&current), "{ids:?}");
}

/// Two `rotate --now` at once: exactly one rotation; the other exits 75.
#[test]
fn concurrent_rotations_exactly_one_wins() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-l!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    let first = w.rotation_in_flight(&cfg, 2);
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 75, "{out}");
    assert!(out.contains("is locked by pid"), "{out}");
    let o = first.finish();
    assert_eq!(o.status.code(), Some(0));
    assert!(rotated(&String::from_utf8_lossy(&o.stdout), "orders"));
    assert_eq!(w.binding_ids().len(), 2, "one rotation: replaced + new");
}

/// The sync calls of one steady rotation of a binding that shows its certificate, in
/// order, are exactly those docs/architecture.md ("Durable writes") gives a reason for: the
/// intent (file only), the generation's four files and its directory, one sync of the
/// target directory, and the state after the commit (file only).
/// A sync dropped, added or moved fails this (strace from Debian's `strace`,
/// scripts/test-deps.sh installs it).
#[test]
fn a_rotation_makes_exactly_the_documented_sync_calls_in_order() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let (cfg, _) = orders_rotated(&w, "sb-sync!t1");
    assert_eq!(
        sync_calls(&w, &cfg, "orders"),
        [
            "fdatasync state file",
            "fsync cert.pem",
            "fsync key.pem",
            "fsync bundle.pem",
            "fsync credentials.json",
            "fsync generation dir",
            "fsync target dir",
            "fdatasync state file",
        ]
    );
    // The first binding of an installation: its intent is durable (file, directory), since
    // the binding's labels name an installation id no disk holds yet.
    let fresh = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = fresh
        .stack
        .sm
        .add_instance(InstanceKind::Xsuaa, "sb-sync-first!t1");
    let first = fresh.config(None, &[fresh.credential("orders", "xsuaa", &xs, "")]);
    assert_eq!(
        sync_calls(&fresh, &first, "orders")[..2],
        ["fdatasync state file", "fsync state dir"]
    );
    // A self-managed binding shows no certificate: its intent is durable and its binding
    // and fingerprint are recorded (file, directory) before the commit.
    let tmp = tempfile::tempdir().unwrap();
    let (w, cfg, _) = self_managed_rotated(tmp.path(), "sb-sync-own!t1");
    assert_eq!(
        sync_calls(&w, &cfg, "own"),
        [
            "fdatasync state file",
            "fsync state dir",
            "fdatasync state file",
            "fsync state dir",
            "fsync cert.pem",
            "fsync key.pem",
            "fsync bundle.pem",
            "fsync credentials.json",
            "fsync generation dir",
            "fsync target dir",
            "fdatasync state file",
        ]
    );
}

/// The fsync/fdatasync calls of one `rotate --now` of credential `name`, each named by
/// what it syncs.
fn sync_calls(w: &World, cfg: &std::path::Path, name: &str) -> Vec<String> {
    let trace = w.root().join("syncs.txt");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_certrot"))
        .args(["--config", cfg.to_str().unwrap(), "rotate", "--now"])
        .output()
        .expect("strace (Debian package strace; scripts/test-deps.sh installs it)");
    assert!(out.status.success(), "{}", joined(&out));
    let state = w.root().join("state").display().to_string();
    let target = w.target(name).display().to_string();
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let call = if l.contains("fdatasync(") {
                "fdatasync"
            } else if l.contains("fsync(") {
                "fsync"
            } else {
                return None;
            };
            let path = l.split_once('<')?.1.split_once('>')?.0;
            let what = if path == state {
                "state dir".to_string()
            } else if path.starts_with(&format!("{state}/.{name}.json.tmp-")) {
                "state file".to_string()
            } else if path == target {
                "target dir".to_string()
            } else if let Some(rest) = path.strip_prefix(&format!("{target}/..staging.")) {
                match rest.split_once('/') {
                    Some((_, file)) => file.to_string(),
                    None => "generation dir".to_string(),
                }
            } else {
                format!("unexpected {path}")
            };
            Some(format!("{call} {what}"))
        })
        .collect()
}

/// A rotation's Service Manager calls do not grow with the retirement queue: the queued
/// bindings are neither read nor touched before their deadline (the one reconcile list
/// returns them on its single page).
#[test]
fn a_rotation_costs_the_same_however_long_the_retirement_queue() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let (cfg, _) = orders_rotated(&w, "sb-queue!t1");
    let calls_of_a_rotation = || {
        let mark = w.stack.sm.calls().len();
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        w.stack.sm.calls()[mark..].to_vec()
    };
    let first = calls_of_a_rotation();
    for _ in 0..4 {
        calls_of_a_rotation();
    }
    assert_eq!(w.state("orders").retiring.len(), 5);
    let sixth = calls_of_a_rotation();
    assert_eq!(first.len(), sixth.len(), "{first:?}\n{sixth:?}");
}

/// A rotation asks for two tokens: Service Manager's (fetched while the intent is written,
/// then used by every Service Manager call of the run) and the new generation's check.
#[test]
fn a_rotation_asks_for_one_service_manager_token_and_one_check() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let (cfg, _) = orders_rotated(&w, "sb-tokens!t1");
    let tokens = w.stack.tokens.handle();
    let before = tokens.issued();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(tokens.issued() - before, 2, "{:?}", w.stack.sm.calls());
}

/// The replaced binding lives until `retire_after`, then the next run deletes it and its
/// certificate gets 401; `--revoke-previous` does that at once.
#[test]
fn retirement_at_the_deadline_and_revoke_previous() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-t!t1");
    let cfg = w.config(
        None,
        &[w.credential("orders", "xsuaa", &xs, "retire_after = \"5s\"")],
    );
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    let g1 = w.generation("orders");
    let b1 = w.state("orders").current.unwrap().binding_id.unwrap();
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("retired"), "{out}");
    assert!(
        accepted(&w, &g1, "sb-t!t1"),
        "the old certificate works during the grace period"
    );
    common::sleep_past(w.state("orders").retiring[0].retire_at);
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("retired binding(s) {b1}")), "{out}");
    assert!(!accepted(&w, &g1, "sb-t!t1"), "retired = revoked");
    assert!(w.state("orders").retiring.is_empty());

    let g2 = w.generation("orders");
    let b2 = w.state("orders").current.unwrap().binding_id.unwrap();
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("retired binding(s) {b2}")), "{out}");
    assert!(!accepted(&w, &g2, "sb-t!t1"));
    assert!(accepted(&w, &w.generation("orders"), "sb-t!t1"));
    assert_eq!(w.binding_ids().len(), 1);
}

/// 422 ConcurrentOperation and 429 Retry-After are waited out within one run.
#[test]
fn concurrent_operation_and_rate_limit_are_retried() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-q!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    w.stack.sm.inject(SmCall::Create, SmFault::Concurrent, 1);
    w.stack
        .sm
        .inject(SmCall::Create, SmFault::RateLimited("1".into()), 1);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let posts = w
        .stack
        .sm
        .calls()
        .iter()
        .filter(|c| c.starts_with("POST"))
        .count();
    assert_eq!(posts, 3, "422, 429, then created");
    // Persistent 429: the run fails at issue with the label, nothing left behind.
    w.stack
        .sm
        .inject(SmCall::Create, SmFault::RateLimited("0".into()), 10);
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed at issue: sm-rate-limited"), "{out}");
    assert_eq!(w.binding_ids().len(), 1);
}

/// Hooks: exec with the CERTROT_* environment, signal via pid file, failure hooks; a failing
/// success hook gives exit 1 but never rolls back.
#[test]
fn hooks_run_with_the_environment_and_never_roll_back() {
    use std::os::unix::process::ExitStatusExt;
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-h!t1");
    let env_out = w.root().join("hook-env.txt");
    let fail_out = w.root().join("hook-failure.txt");
    let pid_file = w.root().join("app.pid");
    let mut app = std::process::Command::new("sleep");
    app.arg("30");
    // SIGHUP at its default, as a service manager starts an application: a test run under
    // `nohup` ignores it, and a child inherits that.
    use std::os::unix::process::CommandExt;
    // SAFETY: `signal` is async-signal-safe, the only call between fork and exec here.
    unsafe {
        app.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut app = app.spawn().unwrap();
    std::fs::write(&pid_file, format!("{}\n", app.id())).unwrap();
    let hooks = format!(
        "[[credential.hook]]\nexec = [\"/bin/sh\", \"-c\", \"env | grep ^CERTROT_ | sort > \\\"$0\\\"\", {:?}]\n\
         [[credential.hook]]\nsignal = \"HUP\"\npid_file = {:?}\n\
         [[credential.hook]]\non = \"failure\"\nexec = [\"/bin/sh\", \"-c\", \"env | grep ^CERTROT_RESULT > \\\"$0\\\"\", {:?}]\n",
        env_out.display().to_string(),
        pid_file.display().to_string(),
        fail_out.display().to_string()
    );
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, &hooks)]);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let env = std::fs::read_to_string(&env_out).unwrap();
    let t = w.target("orders");
    for want in [
        "CERTROT_CREDENTIAL=orders".to_string(),
        format!("CERTROT_TARGET={}", t.display()),
        format!("CERTROT_CERT={}", t.join("cert.pem").display()),
        format!("CERTROT_KEY={}", t.join("key.pem").display()),
        format!("CERTROT_BUNDLE={}", t.join("bundle.pem").display()),
        "CERTROT_RESULT=success".to_string(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in {env}");
    }
    assert!(env.contains("CERTROT_NOT_AFTER=20"), "{env}");
    let status = app.wait().unwrap();
    assert_eq!(status.signal(), Some(1), "the app got SIGHUP");
    assert!(!fail_out.exists());

    // The pid file now names a dead process, and a failing exec hook joins it: reported,
    // exit 1, but the new generation stays.
    let hooks = format!("{hooks}[[credential.hook]]\nexec = [\"/bin/false\"]\n");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, &hooks)]);
    let before = w.current_fingerprint("orders");
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        rotated(&out, "orders") && out.contains("2 hook(s) failed"),
        "{out}"
    );
    assert!(out.contains("/bin/false: exited with code 1"), "{out}");
    assert_ne!(w.current_fingerprint("orders"), before, "no rollback");

    // A failed rotation runs the failure hook.
    w.stack.sm.inject(SmCall::Create, SmFault::Status(400), 1);
    let (code, _, _) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1);
    assert_eq!(
        std::fs::read_to_string(&fail_out).unwrap().trim(),
        "CERTROT_RESULT=failure"
    );
}

/// The Service Manager access is itself a managed credential: it rotates first, while the
/// old one still works, and everything after it uses the new one.
#[test]
fn service_manager_access_rotates_itself_first() {
    use certrot_sandbox::stack::SM_X509_CLIENT;
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let sm_inst = w
        .stack
        .sm
        .add_instance(InstanceKind::ServiceManager, SM_X509_CLIENT);
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-s!t1");
    let key = w.stack.sm_x509_key(time::Duration::days(7)).unwrap();
    let key_file = w.root().join("sm-x509.json");
    std::fs::write(&key_file, key.to_string()).unwrap();
    let sm = format!(
        "[service_manager.main]\ncredential = \"sm-access\"\nca_file = {:?}\nsystem_roots = false\n",
        w.ca_file.display().to_string()
    );
    // Configuration order puts the dependent credential first; certrot still does sm-access first.
    let cfg = w.config(
        Some(&sm),
        &[
            w.credential("orders", "xsuaa", &xs, ""),
            w.credential("sm-access", "xsuaa", &sm_inst, ""),
        ],
    );
    let (code, out, err) = w.certrot(
        &cfg,
        &[
            "import",
            "sm-access",
            "--service-key",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    for round in 0..2 {
        let g_old = w.generation("sm-access");
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        assert!(
            rotated(&out, "sm-access") && rotated(&out, "orders"),
            "{out}"
        );
        let g_new = w.generation("sm-access");
        let new_fp = g_new.leaf().fingerprint_sha256.clone();
        // The new access was checked and then used for Service Manager tokens.
        let uses = w
            .stack
            .tokens
            .seen()
            .iter()
            .filter(|f| **f == new_fp)
            .count();
        assert!(uses >= 2, "round {round}: new access used {uses} time(s)");
        assert!(accepted(&w, &g_new, SM_X509_CLIENT));
        if round == 1 {
            // Its predecessor was a binding: retired at once, so it no longer works.
            assert!(!accepted(&w, &g_old, SM_X509_CLIENT));
        }
    }
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
}

/// Credential `orders` on a new xsuaa instance of `client`, rotated once: (its config, the
/// binding that is current).
fn orders_rotated(w: &World, client: &str) -> (std::path::PathBuf, String) {
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, client);
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let binding = w.state("orders").current.unwrap().binding_id.unwrap();
    (cfg, binding)
}

/// Credential `orders` on a new xsuaa instance of `client`, in a sandbox with `rsa_pool`
/// pre-made RSA keys, after a commit whose state write was lost
/// ([`World::commit_with_lost_state_write`]): the world, its config, the binding the state
/// names current and the one the target serves.
fn orders_after_lost_state_write(
    client: &str,
    rsa_pool: usize,
) -> (World, std::path::PathBuf, String, String) {
    let w = World::new(SmOptions {
        rsa_pool,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, client);
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    let (b1, b2) = w.commit_with_lost_state_write(&cfg, "orders", &xs);
    (w, cfg, b1, b2)
}

/// A customer CA on disk (certificate, key) for the `local-ca` signer.
fn customer_ca(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    ca_files(dir, "customer CA")
}

/// A world whose credential `own` (instance `instance`) is self-managed, signed by a
/// customer CA in `dir`, and rotated once; the world, the configuration, the instance id.
fn self_managed_rotated(
    dir: &std::path::Path,
    instance: &str,
) -> (World, std::path::PathBuf, String) {
    let (ca_pem, ca_cert, ca_key) = customer_ca(dir);
    let w = World::trusting(SmOptions::default(), &[ca_pem]);
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, instance);
    let signer = format!(
        "issuer.certificate = \"self-managed\"\nissuer.signer = {{ type = \"local-ca\", ca_cert = {:?}, ca_key = {:?} }}\n",
        ca_cert.display().to_string(),
        ca_key.display().to_string()
    );
    let cfg = w.config(None, &[w.credential("own", "xsuaa", &xs, &signer)]);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    (w, cfg, xs)
}

/// Self-managed: certrot makes the key and CSR, the local-ca signer signs, only the
/// certificate goes into the binding parameters; the result passes the token check.
#[test]
fn self_managed_xsuaa_and_identity_with_local_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca_pem, ca_cert, ca_key) = customer_ca(tmp.path());
    let w = World::trusting(SmOptions::default(), &[ca_pem]);
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-own!t1");
    let ias = w.stack.sm.add_instance(InstanceKind::Identity, "ias-own");
    let signer = format!(
        "issuer.certificate = \"self-managed\"\nissuer.signer = {{ type = \"local-ca\", ca_cert = {:?}, ca_key = {:?} }}\n",
        ca_cert.display().to_string(),
        ca_key.display().to_string()
    );
    let cfg = w.config(
        None,
        &[
            w.credential(
                "own",
                "xsuaa",
                &xs,
                &format!("{signer}issuer.key_type = \"rsa-2048\""),
            ),
            w.credential(
                "own-ias",
                "identity",
                &ias,
                &format!("{signer}issuer.app_identifier = \"ownapp\""),
            ),
        ],
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("<certificate signed for a new key>"), "{out}");
    for _ in 0..2 {
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(rotated(&out, "own") && rotated(&out, "own-ias"), "{out}");
    }
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
    let g = w.generation("own");
    assert_eq!(g.leaf().issuer, "CN=customer CA");
    assert_eq!(g.leaf().subject, "CN=own");
    assert_eq!(g.key_type(), "RSA 2048");
    assert_eq!(w.generation("own-ias").leaf().subject, "CN=ownapp");
    for b in w.stack.sm.bindings() {
        let p = b.parameters.to_string();
        assert!(p.contains("BEGIN CERTIFICATE"), "{p}");
        assert!(!p.contains("PRIVATE KEY"), "a key left the host: {p}");
    }
    // A CA the service does not trust: Service Manager refuses the certificate, nothing kept.
    let rogue_dir = tempfile::tempdir().unwrap();
    let (_, rogue_cert, rogue_key) = customer_ca(rogue_dir.path());
    let rogue = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &ca_cert.display().to_string(),
            &rogue_cert.display().to_string(),
        )
        .replace(
            &ca_key.display().to_string(),
            &rogue_key.display().to_string(),
        );
    let rogue_cfg = w.root().join("rogue.toml");
    std::fs::write(&rogue_cfg, rogue).unwrap();
    let before = w.binding_ids();
    let (code, out, _) = w.certrot(&rogue_cfg, &["rotate", "--now", "own"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed at issue: sm-rejected") && out.contains("not trusted"),
        "{out}"
    );
    assert_eq!(w.binding_ids(), before);
    // A signer whose key does not belong to its certificate: a clear error at issue.
    let (_, _, other_key) = customer_ca(&tmp.path().join(".."));
    let bad = std::fs::read_to_string(&cfg).unwrap().replace(
        &ca_key.display().to_string(),
        &other_key.display().to_string(),
    );
    std::fs::write(&cfg, bad).unwrap();
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", "own"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("failed at issue: signer")
            && out.contains("does not belong to the CA certificate"),
        "{out}"
    );
}

/// At TRACE for certrot and every library, a rotation leaks no secret: not the Service
/// Manager client secret, no private key, no bearer or access token.
#[test]
fn no_secret_in_output_at_trace() {
    use certrot_sandbox::stack::SM_SECRET;
    let w = World::new(SmOptions {
        rsa_pool: 2,
        async_default: true,
        operation_delay: Duration::from_millis(50),
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-x!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    for args in [
        vec!["-vvv", "rotate", "--now"],
        vec!["-vvv", "--log-format", "json", "rotate", "--now", "--json"],
    ] {
        let mut all = vec!["--config", cfg.to_str().unwrap()];
        all.extend(args);
        let o = bin()
            .args(&all)
            .env("CERTROT_LOG", "trace")
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        assert!(
            err.contains("TRACE") || err.contains("\"TRACE\""),
            "no trace output"
        );
        for secret in [SM_SECRET, "PRIVATE KEY", "eyJ", "Bearer ", "MII"] {
            assert!(!out.contains(secret), "{secret:?} in stdout");
            assert!(!err.contains(secret), "{secret:?} in stderr");
        }
    }
}

/// One-shot metrics: `--metrics-file` (textfile format, atomic, 0644) and `--push-gateway`
/// (PUT to /metrics/job/certrot/instance/<host>) after `rotate` and `check --validate`.
#[test]
fn one_shot_metrics_file_and_push_gateway() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-m!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    // A Pushgateway stand-in: records each request's line and body, answers 200.
    let gw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_url = format!("http://{}", gw.local_addr().unwrap());
    let pushed = std::thread::spawn(move || {
        let (s, _) = gw.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        (line, String::from_utf8(body).unwrap())
    });
    let file = w.root().join("metrics/certrot.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let (code, out, err) = w.certrot(
        &cfg,
        &[
            "rotate",
            "--now",
            "--metrics-file",
            file.to_str().unwrap(),
            "--push-gateway",
            &gw_url,
            "--push-instance",
            "cron job/apps",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    for want in [
        "# TYPE certrot_rotations_total counter",
        "certrot_rotations_total{credential=\"orders\",result=\"success\"} 1",
        "certrot_rotation_failures_total{credential=\"orders\",step=\"issue\"} 0",
        "certrot_certificate_not_after_timestamp_seconds{credential=\"orders\"}",
        "certrot_bindings_pending_retirement{credential=\"orders\"} 0",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(!text.contains("# EOF"));
    let (line, body) = pushed.join().unwrap();
    assert!(
        line.starts_with("PUT /metrics/job/certrot/instance@base64/Y3JvbiBqb2IvYXBwcw "),
        "{line}"
    );
    assert_eq!(body, text);
    // check --validate: the token check's time and success.
    let (code, out, _) = w.certrot(
        &cfg,
        &[
            "check",
            "--validate",
            "--metrics-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("certrot_last_check_success_timestamp_seconds{credential=\"orders\"}"),
        "{text}"
    );
    assert!(
        text.contains("certrot_token_request_duration_seconds_count{credential=\"orders\"} 1"),
        "{text}"
    );
    // An unreachable Pushgateway is reported and fails the run (a CronJob should notice).
    let (code, _, err) = w.certrot(
        &cfg,
        &["rotate", "--if-due", "--push-gateway", "http://127.0.0.1:1"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("certrot: metrics: http://127.0.0.1:1/metrics/job/certrot"),
        "{err}"
    );
}

/// A crash after the target commit but before the state write: the state still names the
/// old binding, the target already serves the new certificate. The next run must adopt the
/// new binding (recorded with its fingerprint just before the commit), not delete it as an
/// orphan — that would revoke the live credential.
#[test]
fn interrupted_state_write_after_commit_is_adopted_not_deleted() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-a!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    let state_file = w.root().join("state/orders.json");
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let b1 = before["current"]["binding_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let b2 = after["current"]["binding_id"].as_str().unwrap().to_string();
    // Rewind the state to the instant after the commit: old current, new binding pending.
    let mut crashed = before.clone();
    crashed["pending"] = serde_json::json!({
        "binding_name": "orders-x", "binding_id": b2, "service_manager": "main",
        "instance_id": xs, "started_at": after["current"]["committed_at"],
        "fingerprint_sha256": after["current"]["fingerprint_sha256"],
    });
    std::fs::write(&state_file, crashed.to_string()).unwrap();
    let live = w.generation("orders");
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("deleted orphan"), "{out}");
    assert!(err.contains("adopted the binding"), "{err}");
    let st = w.state("orders");
    let retiring: Vec<&str> = st.retiring.iter().map(|r| r.binding_id.as_str()).collect();
    assert!(
        retiring.contains(&b1.as_str()) && retiring.contains(&b2.as_str()),
        "{retiring:?}"
    );
    assert_eq!(w.binding_ids().len(), 3);
    // The certificate that was live stays valid until its retirement.
    let trust = certrot::check::ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(w.stack.ca_pem.as_bytes()),
    };
    let ok = w.rt.block_on(certrot::check::request_token(
        &live,
        &w.stack.tokens.url,
        "sb-a!t1",
        &[],
        trust,
        certrot::check::Limits::default(),
    ));
    assert!(ok.is_ok(), "{ok:?}");
}

/// The same crash after a rotation that kept no record of binding and fingerprint before
/// its commit (a binding that shows its certificate, the state in `state_dir`): the state
/// names the old binding and holds only the intent's binding name. A run that is not due
/// finds the new binding by the certificate the target serves and adopts it, never
/// deleting it; the old one goes to retirement, not at once.
#[test]
fn a_commit_whose_state_write_was_lost_is_adopted_by_the_served_certificate() {
    let (w, cfg, b1, b2) = orders_after_lost_state_write("sb-served!t1", 2);
    let served = w.current_fingerprint("orders");
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("deleted orphan"), "{out}");
    assert!(err.contains("adopted the binding"), "{err}");
    let st = w.state("orders");
    assert!(st.pending.is_none(), "the interrupted intent is settled");
    let current = st.current.unwrap();
    assert_eq!(current.binding_id.as_deref(), Some(b2.as_str()));
    assert_eq!(current.fingerprint_sha256, served);
    w.assert_queued_with_grace("orders", &[&b1]);
    assert!(w.binding_ids().contains(&b2));
    // The next rotation queues the adopted binding with its grace period too.
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("deleted orphan"), "{out}");
    w.assert_queued_with_grace("orders", &[&b2]);
    assert_eq!(w.binding_ids().len(), 3);
}

/// The same crash, then `rollback` before any run adopted the commit: the generation rolled
/// away from is one the state does not know, and its certificate was served until the
/// switch. Its binding is never deleted as an orphan at once: reconcile holds back until a
/// new rotation has been current for `retire_after`.
#[test]
fn a_rollback_away_from_a_commit_whose_state_write_was_lost_deletes_nothing() {
    let (w, cfg, b1, b2) = orders_after_lost_state_write("sb-back!t1", 2);
    let (code, out, err) = w.certrot(&cfg, &["rollback", "orders", "--no-validate"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("not known to the state"), "{err}");
    let st = w.state("orders");
    assert!(st.unknown_since.is_some());
    assert_eq!(st.current.unwrap().binding_id.as_deref(), Some(b1.as_str()));
    for args in [&["rotate", "--if-due"][..], &["rotate", "--now"]] {
        let (code, out, err) = w.certrot(&cfg, args);
        assert_eq!(code, 0, "{out}{err}");
        assert!(!out.contains("deleted orphan"), "{args:?}: {out}{err}");
        assert!(w.binding_ids().contains(&b2), "{args:?}: {out}{err}");
    }
    // Held back by `unknown_since` alone: reconcile did not run, so it did not queue it.
    let st = w.state("orders");
    assert!(st.unknown_since.is_some());
    assert!(
        !st.retiring.iter().any(|r| r.binding_id == b2),
        "{:?}",
        st.retiring
    );
}

/// Two rotations in quick succession, then a power cut that loses both state writes after
/// the first commit (the state after it, atomic only, and the second's intent): the state
/// names the first binding current, the target serves the third. The next rotation adopts
/// the third; the second, served in between and named by nothing, is in a generation the
/// target keeps, so it is queued with its grace period, never deleted at once.
#[test]
fn a_binding_served_in_between_two_lost_state_writes_gets_its_grace_period() {
    let (w, cfg, b1, b2) = orders_after_lost_state_write("sb-twice!t1", 3);
    let state_file = w.root().join("state/orders.json");
    let lost = std::fs::read(&state_file).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let b3 = w.state("orders").current.unwrap().binding_id.unwrap();
    assert!(![&b1, &b2].contains(&&b3));
    // What the power cut left: the state of before the second commit, no later intent.
    let mut crashed: serde_json::Value = serde_json::from_slice(&lost).unwrap();
    crashed.as_object_mut().unwrap().remove("pending");
    std::fs::write(&state_file, crashed.to_string()).unwrap();
    // The next rotation (every rotation reconciles) adopts the third and replaces it.
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("adopted the binding"), "{out}{err}");
    assert!(!out.contains("deleted orphan"), "{out}{err}");
    assert!(w.binding_ids().contains(&b2), "{out}{err}");
    w.assert_queued_with_grace("orders", &[&b1, &b2, &b3]);
}

/// A create whose answer is lost (the binding exists, the client sees 503 and retries into
/// 409): the lost binding is found, queued and deleted in the same run — never forgotten.
#[test]
fn a_lost_create_answer_leaves_no_binding_behind() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-lost!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    w.stack
        .sm
        .inject(SmCall::Create, SmFault::CreatedThenStatus(503), 1);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("a binding from a lost answer holds the name"),
        "{err}"
    );
    assert!(out.contains("retired binding(s)"), "{out}");
    let current = w.state("orders").current.unwrap().binding_id.unwrap();
    assert_eq!(w.binding_ids(), vec![current]);
}

/// A corrupt state file is set aside; reconcile then does not know what is current or
/// retiring, so it deletes nothing (the operator is told), and the rotation goes on.
#[test]
fn a_corrupt_state_file_never_leads_to_deleting_bindings() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w
        .stack
        .sm
        .add_instance(InstanceKind::Xsuaa, "sb-corrupt!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    let before = w.binding_ids();
    assert_eq!(before.len(), 2, "current and retiring");
    std::fs::write(w.root().join("state/orders.json"), "{ not json").unwrap();
    // A run that is not due writes nothing else, yet the mark that certrot lost track
    // is kept (the file is set aside and a fresh state with the mark takes its place).
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("not due"), "{out}");
    assert!(w.state("orders").unknown_since.is_some());
    // Neither the next rotation nor the one after deletes a binding certrot no longer
    // knows: one of them may be what consumers still use, until a rotated generation has
    // been current for retire_after (1 h here).
    for n in [3, 4] {
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(!out.contains("deleted orphan"), "{out}");
        assert!(err.contains("reconcile skipped"), "{err}");
        let after = w.binding_ids();
        assert!(
            before.iter().all(|b| after.contains(b)),
            "{before:?} {after:?} {out} {err}"
        );
        assert_eq!(after.len(), n);
    }
}

/// A retirement that fails is postponed with growing delays, not retried on every run.
#[test]
fn failed_retirement_is_postponed() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-pp!t1");
    let cfg = w.config(
        None,
        &[w.credential("orders", "xsuaa", &xs, "retire_after = \"5s\"")],
    );
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    assert_eq!(w.certrot(&cfg, &["rotate", "--now"]).0, 0);
    common::sleep_past(w.state("orders").retiring[0].retire_at);
    w.stack.sm.inject(SmCall::Delete, SmFault::Status(500), 10);
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("retirement postponed"), "{out}");
    let r = &w.state("orders").retiring[0];
    assert_eq!(r.attempts, 1);
    assert!(r.retire_at > time::OffsetDateTime::now_utc() + time::Duration::seconds(50));
    let deletes = || {
        w.stack
            .sm
            .calls()
            .iter()
            .filter(|c| c.starts_with("DELETE"))
            .count()
    };
    let before = deletes();
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(deletes(), before, "not retried before its new deadline");
}

/// XSUAA with `certificate-pinning: false` refuses a second binding with the same subject
/// and issuer DN while the first lives: each generation's subject is its binding's name and
/// a random number, so a rotation (even within the same second) succeeds with the old
/// binding still in its grace period.
#[test]
fn self_managed_xsuaa_without_pinning_gets_a_subject_per_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca_pem, ca_cert, ca_key) = customer_ca(tmp.path());
    let w = World::trusting(SmOptions::default(), &[ca_pem]);
    let xs = w
        .stack
        .sm
        .add_instance(InstanceKind::Xsuaa, "sb-unpinned!t1");
    let cfg = w.config(
        None,
        &[w.credential(
            "unpinned",
            "xsuaa",
            &xs,
            &format!(
                "issuer.certificate = \"self-managed\"\nissuer.certificate_pinning = false\n\
                 issuer.signer = {{ type = \"local-ca\", ca_cert = {:?}, ca_key = {:?} }}\n",
                ca_cert.display().to_string(),
                ca_key.display().to_string()
            ),
        )],
    );
    let mut subjects = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(rotated(&out, "unpinned"), "{out}");
        subjects.push(w.generation("unpinned").leaf().subject.clone());
    }
    assert_ne!(subjects[0], subjects[1]);
    let names: Vec<String> = w.stack.sm.bindings().into_iter().map(|b| b.name).collect();
    assert_eq!(
        names.len(),
        2,
        "the old binding is still in its grace period"
    );
    for s in &subjects {
        assert!(
            names.iter().any(|n| s.starts_with(&format!("CN={n}-"))),
            "{s} is not a binding's name: {names:?}"
        );
    }
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
}

/// A state written while the clock ran a month ahead (`next_attempt` 30 days out) does not
/// hold back a due renewal once the clock is right again.
#[test]
fn a_next_attempt_from_a_clock_that_ran_ahead_does_not_hold_a_renewal_back() {
    let w = World::new(SmOptions {
        // Seven days of validity are seven minutes.
        seconds_per_day: 60,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-clock!t1");
    let cfg = w.config(
        None,
        &[w.credential(
            "orders",
            "xsuaa",
            &xs,
            "renew_before = \"99%\"\njitter = \"0%\"\n",
        )],
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = w.current_fingerprint("orders");
    w.edit_state("orders", |st| {
        st["next_attempt"] = rfc3339_in(time::Duration::days(30));
        st["consecutive_failures"] = serde_json::json!(4);
    });
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        rotated(&out, "orders"),
        "held back by a month-old backoff: {out}"
    );
    assert_ne!(w.current_fingerprint("orders"), first);
}

/// A 404 from the Cloud Foundry router (`X-Cf-RouterError`) on a retirement's DELETE means
/// Service Manager is unreachable: the old binding stays queued (and alive), never dropped
/// as "already gone"; the next run retires it.
#[test]
fn a_router_404_on_retirement_keeps_the_binding_queued() {
    let w = World::new(SmOptions::default());
    let (cfg, old) = orders_rotated(&w, "sb-router!t1");
    w.stack
        .sm
        .inject(SmCall::Delete, SmFault::RouterNotFound, 100);
    let (_, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert!(rotated(&out, "orders"), "{out}{err}");
    let st = w.state("orders");
    assert!(
        st.retiring.iter().any(|r| r.binding_id == old),
        "the old binding left the queue: {:?}",
        st.retiring
    );
    assert!(w.binding_ids().contains(&old), "the old binding is gone");
    // Service Manager reachable again: the next run retires it.
    // (Its deadline was pushed out a minute; the test moves it back instead of waiting.)
    w.stack.sm.clear_faults();
    w.edit_state("orders", |st| {
        for r in st["retiring"].as_array_mut().unwrap() {
            r["retire_at"] = rfc3339_in(-time::Duration::seconds(1));
        }
    });
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!w.binding_ids().contains(&old), "{out}{err}");
    assert!(w.state("orders").retiring.is_empty());
}

/// The state file moved away, then a rotation whose token check fails: nothing certrot does
/// may revoke the binding the target serves (reconcile used to delete it as an "orphan").
#[test]
fn a_lost_state_file_never_costs_the_live_binding() {
    let w = World::new(SmOptions::default());
    let (cfg, live) = orders_rotated(&w, "sb-lost!t1");
    let state = w.root().join("state/orders.json");
    std::fs::rename(&state, w.root().join("orders.json.moved")).unwrap();
    w.stack.tokens.inject(Fault::Status(503), ALWAYS);
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}");
    w.stack.tokens.clear_faults();
    assert!(
        w.binding_ids().contains(&live),
        "the live binding was deleted"
    );
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "the served credential stopped working: {out}");
    // Later runs delete nothing either while it is unknown which binding is live.
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(w.binding_ids().contains(&live), "{out}{err}");
}

/// A second installation (its own state and target, the same credential name and instance)
/// never takes the first one's bindings for its orphans.
#[test]
fn a_second_installation_leaves_the_first_ones_bindings_alone() {
    let w = World::new(SmOptions::default());
    let (cfg, first) = orders_rotated(&w, "sb-two!t1");
    let other = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &w.root().join("state").display().to_string(),
            &w.root().join("state-2").display().to_string(),
        )
        .replace(
            &w.target("orders").display().to_string(),
            &w.root().join("targets-2/orders").display().to_string(),
        );
    let cfg2 = w.root().join("second.toml");
    std::fs::write(&cfg2, other).unwrap();
    for _ in 0..2 {
        let (code, out, err) = w.certrot(&cfg2, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    assert!(
        w.binding_ids().contains(&first),
        "the first installation's binding was deleted"
    );
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
}

/// Retirement re-reads each queued binding: a forged queue entry naming another credential's
/// binding, or the binding the target serves, is dropped, never deleted.
#[test]
fn retirement_deletes_only_this_credentials_bindings_and_never_the_served_one() {
    let w = World::new(SmOptions::default());
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-forge!t1");
    let cfg = w.config(
        None,
        &[
            w.credential("orders", "xsuaa", &xs, ""),
            w.credential("billing", "xsuaa", &xs, ""),
        ],
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let served = w.state("orders").current.unwrap().binding_id.unwrap();
    let foreign = w.state("billing").current.unwrap().binding_id.unwrap();
    let due = rfc3339_in(-time::Duration::seconds(1));
    w.edit_state("orders", |st| {
        st["retiring"] = serde_json::json!([
            {"binding_id": foreign, "service_manager": "main", "fingerprint_sha256": "AA:BB",
             "retire_at": due, "reason": "replaced", "attempts": 0},
            {"binding_id": served, "service_manager": "main", "fingerprint_sha256": "CC:DD",
             "retire_at": due, "reason": "replaced", "attempts": 0},
        ])
    });
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due", "orders"]);
    assert_eq!(code, 0, "{out}{err}");
    let ids = w.binding_ids();
    assert!(
        ids.contains(&foreign),
        "another credential's binding was retired"
    );
    assert!(ids.contains(&served), "the served binding was retired");
    assert!(
        w.state("orders").retiring.is_empty(),
        "forged entries stay queued"
    );
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
}

/// A state directory another local user can write to is refused; a link planted as the lock
/// file is never followed (its victim is untouched); a FIFO planted as the state file does
/// not hang a run.
#[test]
fn a_hostile_state_directory_is_refused_and_planted_files_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new(SmOptions::default());
    let xs = w
        .stack
        .sm
        .add_instance(InstanceKind::Xsuaa, "sb-hostile!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    let state_dir = w.root().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        (out.clone() + &err).contains("writable by group or others"),
        "{out}{err}"
    );
    assert!(w.binding_ids().is_empty(), "a binding was created");
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A planted lock link: refused, the file it points at keeps its content.
    let victim = w.root().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, state_dir.join("orders.lock")).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_ne!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    std::fs::remove_file(state_dir.join("orders.lock")).unwrap();
    // A FIFO in place of the state file: a clear error, no hang, no binding.
    let fifo = state_dir.join("orders.json");
    mkfifo(&fifo);
    let t = std::time::Instant::now();
    let (code, out, err) = w.certrot(&cfg, &["check"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "check hung on a FIFO"
    );
    assert!(
        (out.clone() + &err).contains("not a regular file"),
        "{code} {out}{err}"
    );
    std::fs::remove_file(&fifo).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A signal hook cannot be turned against another process: a FIFO planted as the pid file
/// fails the hook at once (no hang), and a pid file naming a process of another user gets
/// nothing signalled. The rotation itself stands; the failed hook makes the exit 1.
#[test]
fn a_signal_hook_refuses_fifos_and_other_users_processes() {
    use std::os::unix::process::CommandExt;
    let w = World::new(SmOptions::default());
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-pid!t1");
    let pid_file = w.root().join("app.pid");
    let hook = format!(
        "[[credential.hook]]\nsignal = \"TERM\"\npid_file = {:?}\n",
        pid_file.display().to_string()
    );
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, &hook)]);
    mkfifo(&pid_file);
    let t = std::time::Instant::now();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the hook hung on a FIFO"
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(rotated(&out, "orders"), "{out}");
    assert!(out.contains("not a regular file"), "{out}{err}");
    std::fs::remove_file(&pid_file).unwrap();
    // A process of another user: as root, one started as nobody; otherwise a root process.
    let mut other = None;
    let victim = if rustix::process::geteuid().is_root() {
        let c = std::process::Command::new("sleep")
            .arg("30")
            .uid(65534)
            .spawn()
            .unwrap();
        let id = c.id();
        other = Some(c);
        id
    } else {
        // Some process of root's (never one of ours: that one would really be signalled).
        use std::os::unix::fs::MetadataExt;
        let Some(pid) = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                (pid > 1 && e.metadata().ok()?.uid() == 0).then_some(pid)
            })
            .next()
        else {
            eprintln!("no process of another user is visible here; that case is not exercised");
            return;
        };
        pid
    };
    std::fs::write(&pid_file, format!("{victim}\n")).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("refusing to signal"), "{out}{err}");
    if let Some(mut c) = other {
        assert!(
            c.try_wait().unwrap().is_none(),
            "the other user's process was signalled"
        );
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A run killed after creating its binding leaves an intent: `check` warns about it, and a
/// `rotate --if-due` that is not due still deletes that orphan (never the served binding).
#[test]
fn an_interrupted_rotation_is_shown_and_settled_by_a_run_that_is_not_due() {
    let w = World::new(SmOptions::default());
    let (cfg, live) = orders_rotated(&w, "sb-orphan!t1");
    // A second run caught at its token check, then killed.
    let orphan = w.interrupted_rotation(&cfg, "orders", 2);
    assert!(w.binding_ids().contains(&orphan));
    // An hour later (the intent's clock moved back instead of waiting).
    w.edit_state("orders", |st| {
        st["pending"]["started_at"] = rfc3339_in(-time::Duration::hours(1));
    });
    let (code, out, _) = w.certrot(&cfg, &["check"]);
    assert_eq!(code, 1, "WARNING expected: {out}");
    assert!(
        out.contains("interrupted")
            && out.contains(&w.state("orders").pending.unwrap().binding_name),
        "{out}"
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("not due"), "{out}");
    let ids = w.binding_ids();
    assert!(!ids.contains(&orphan), "the orphan lives on: {out}{err}");
    assert!(ids.contains(&live));
    assert!(w.state("orders").pending.is_none());
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
}

/// A self-managed binding shows no certificate, so reconcile deletes one only as the
/// credential's own interrupted attempt — also when the next run is due and replaces that
/// attempt's intent with its own.
#[test]
fn a_self_managed_interrupted_attempt_is_cleaned_up_by_the_next_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, cfg, _) = self_managed_rotated(tmp.path(), "sb-own-orphan!t1");
    let live = w.state("own").current.unwrap().binding_id.unwrap();
    let orphan = w.interrupted_rotation(&cfg, "own", 2);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let ids = w.binding_ids();
    assert!(
        !ids.contains(&orphan),
        "the interrupted attempt's binding lives on: {out}{err}"
    );
    assert!(
        ids.contains(&live),
        "the binding rotated away from is retired later, not now"
    );
}

/// A forged intent that names the served self-managed binding (no id, no fingerprint: what
/// an attempt killed before its commit leaves) never gets that binding deleted as the
/// attempt's own — not by a run that settles the intent, nor by a rotation that replaces
/// it: the binding the state names as current is never an orphan.
#[test]
fn a_forged_intent_naming_the_served_binding_never_deletes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, cfg, xs) = self_managed_rotated(tmp.path(), "sb-own-forged!t1");
    let live = w.state("own").current.unwrap().binding_id.unwrap();
    let live_name = w
        .stack
        .sm
        .bindings()
        .into_iter()
        .find(|b| b.id == live)
        .unwrap()
        .name;
    let served = w.current_fingerprint("own");
    let forge = |w: &World| {
        w.edit_state("own", |st| {
            st["pending"] = serde_json::json!({
                "binding_name": live_name, "binding_id": null, "service_manager": "main",
                "instance_id": xs, "started_at": rfc3339_in(-time::Duration::hours(1)),
                "fingerprint_sha256": null,
            });
        });
    };
    // A run that is not due settles the intent.
    forge(&w);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(w.binding_ids().contains(&live), "{out}{err}");
    assert_eq!(w.current_fingerprint("own"), served);
    // A rotation replaces the intent with its own: the served binding is queued, not deleted.
    forge(&w);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(w.binding_ids().contains(&live), "{out}{err}");
    assert!(
        w.state("own").retiring.iter().any(|r| r.binding_id == live),
        "the binding rotated away from is retired after its grace period"
    );
}

/// A value from outside that reaches the output — here a binding id in a forged state file,
/// in the summary line and the debug log — is escaped there: no control character forges a
/// second line or drives a terminal (the log formatter itself: `logging::tests`).
#[test]
fn control_characters_in_logged_values_are_escaped() {
    let w = World::new(SmOptions::default());
    let (cfg, _) = orders_rotated(&w, "sb-logs!t1");
    let evil = "b1\u{1b}[2J\r\n2026-12-02T00:00:00Z  INFO certrot: retired binding b1";
    w.edit_state("orders", |v| {
        v["retiring"] = serde_json::json!([{
            "binding_id": evil, "service_manager": "main", "fingerprint_sha256": null,
            "retire_at": "2026-01-01T00:00:00Z", "reason": "replaced", "attempts": 0,
        }]);
    });
    let (_, out, err) = w.certrot(&cfg, &["-vv", "rotate", "--if-due"]);
    assert!(out.contains("b1\\u{1b}[2J\\r\\n2026"), "{out}{err}");
    for text in [&out, &err] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\r'),
            "a raw control character: {text:?}"
        );
        assert!(
            !text.contains("\n2026-12-02T00:00:00Z"),
            "a forged line: {text:?}"
        );
    }
}

/// A wall clock that stands where it is told, plus the real time that passes.
struct AheadClock(time::Duration);

impl certrot::clock::Clock for AheadClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + self.0
    }
}

/// Every step of a rotation reads the time through the injected clock: with a clock two
/// hours ahead, the commit, the last rotation and the retirement deadline are all on that
/// clock, not on the system's.
#[test]
fn the_pipeline_reads_time_only_from_its_clock() {
    let w = World::new(SmOptions::default());
    let (cfg, _) = orders_rotated(&w, "sb-clock!t1");
    let config = std::sync::Arc::new(certrot::config::Config::load(&cfg).unwrap());
    let ahead = time::Duration::hours(2);
    let rotator = certrot::rotate::Rotator::with_clock(
        config.clone(),
        std::sync::Arc::new(AheadClock(ahead)),
    );
    let cred = config
        .credentials
        .iter()
        .find(|c| c.name == "orders")
        .unwrap();
    let before = time::OffsetDateTime::now_utc() + ahead;
    let summary = certrot::rt::runtime().unwrap().block_on(rotator.rotate(
        cred,
        certrot::rotate::Options {
            force: true,
            ..Default::default()
        },
    ));
    let after = time::OffsetDateTime::now_utc() + ahead;
    assert!(!summary.failed(), "{}", summary.line());
    let st = w.state("orders");
    let on_clock = |t: time::OffsetDateTime, what: &str| {
        assert!(
            before <= t && t <= after,
            "{what} {t} is not on the clock ({before} … {after})"
        );
    };
    on_clock(st.current.as_ref().unwrap().committed_at, "committed_at");
    on_clock(st.last_rotation.as_ref().unwrap().at, "last rotation");
    on_clock(st.last_success.unwrap(), "last success");
    let retire_after = cred.policy.retire_after.to_time();
    on_clock(
        st.retiring[0].retire_at - retire_after,
        "retirement deadline less retire_after",
    );
}

/// A binding made by hand (no certrot labels), as `btp create services/binding` makes the
/// bootstrap one, and its document as `btp get services/binding` prints it.
fn binding_by_hand(w: &World, instance: &str, name: &str) -> (String, serde_json::Value) {
    use certrot::check::{Limits, ServerTrust};
    use certrot::issuer::service_manager::{BindingRequest, Mode, RetryPolicy, SmAccess, SmClient};
    let access =
        SmAccess::from_service_key(w.stack.sm_secret_key().to_string().as_bytes(), "sm.json")
            .unwrap();
    let trust = ServerTrust {
        system_roots: false,
        extra_ca_pem: Some(w.stack.ca_pem.as_bytes()),
    };
    let client = SmClient::new(access, trust, Limits::default(), RetryPolicy::default()).unwrap();
    let request = BindingRequest {
        name: name.into(),
        instance_id: instance.into(),
        parameters: serde_json::json!({"credential-type": "x509", "x509": {"key-length": 2048, "validity": 7, "validity-type": "DAYS"}}),
        labels: vec![],
    };
    let b =
        w.rt.block_on(client.create_binding(&request, Mode::Sync))
            .unwrap();
    let doc = serde_json::json!({
        "id": b.id, "name": b.name, "service_instance_id": instance,
        "credentials": b.credentials,
    });
    (b.id.clone(), doc)
}

#[test]
fn the_binding_behind_an_imported_key_is_adopted_and_retired_by_the_first_rotation() {
    let w = World::new(SmOptions {
        rsa_pool: 2,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
    let exists = |id: &str| w.stack.sm.bindings().iter().any(|b| b.id == id);
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    // `btp get services/binding` output: the id is read from the document.
    let (id, doc) = binding_by_hand(&w, &xs, "orders-bootstrap");
    let key = w.root().join("binding.json");
    std::fs::write(&key, doc.to_string()).unwrap();
    let (code, out, err) = w.certrot(
        &cfg,
        &["import", "orders", "--service-key", key.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("binding {id} adopted")), "{out}");
    assert_eq!(
        w.state("orders").current.unwrap().binding_id,
        Some(id.clone())
    );
    // The first rotation queues it (as adopted) and, with --revoke-previous, deletes it.
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !exists(&id),
        "the adopted bootstrap binding was not retired: {out}{err}"
    );

    // A `cf service-key` printout (credentials only) without --binding-id: import says the
    // binding stays, and no rotation touches it.
    let (kept, doc) = binding_by_hand(&w, &xs, "orders-cf-key");
    std::fs::write(&key, doc["credentials"].to_string()).unwrap();
    let (code, out, err) = w.certrot(
        &cfg,
        &["import", "orders", "--service-key", key.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("stays alive") && out.contains("--binding-id"),
        "{out}"
    );
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        exists(&kept),
        "a binding certrot was not told about was deleted"
    );

    // --binding-id naming a binding whose certificate is not the imported one: queued, but
    // not deleted (it is not the binding behind this key).
    let (other, _) = binding_by_hand(&w, &xs, "someone-else");
    let (_, doc) = binding_by_hand(&w, &xs, "orders-third");
    std::fs::write(&key, doc["credentials"].to_string()).unwrap();
    let (code, out, err) = w.certrot(
        &cfg,
        &[
            "import",
            "orders",
            "--service-key",
            key.to_str().unwrap(),
            "--binding-id",
            &other,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        exists(&other),
        "a binding that does not hold the imported certificate was deleted"
    );
    assert!(
        w.state("orders").retiring.is_empty(),
        "refused, it leaves the queue"
    );

    // A forged queue entry marks the served binding as adopted and due: never deleted.
    let served = w.state("orders").current.unwrap();
    let served_id = served.binding_id.clone().unwrap();
    w.edit_state("orders", |v| {
        v["retiring"] = serde_json::json!([{
            "binding_id": served_id, "service_manager": "main",
            "fingerprint_sha256": served.fingerprint_sha256, "retire_at": "2020-01-01T00:00:00Z",
            "reason": "adopted", "attempts": 0,
        }]);
    });
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        exists(&served_id),
        "the served binding was deleted as adopted"
    );

    // A binding id that is no Service Manager id is refused before anything is written.
    let before = w.current_fingerprint("orders");
    let (code, _, err) = w.certrot(
        &cfg,
        &[
            "import",
            "orders",
            "--service-key",
            key.to_str().unwrap(),
            "--binding-id",
            "../../x",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("is not a Service Manager id"), "{err}");
    assert_eq!(w.current_fingerprint("orders"), before);
}

/// A reader that stops reading (`certrot rotate --now | head -1`) costs the output, never
/// the rotations still to run: every credential is rotated, and the exit code is 141 (as
/// SIGPIPE ends other tools). One at a time, so that the reader is gone long before the
/// last one starts.
#[test]
fn a_closed_stdout_does_not_stop_the_rotations_still_to_run() {
    let w = World::new(SmOptions::default());
    let names: Vec<String> = (0..4).map(|n| format!("app{n}")).collect();
    let creds: Vec<String> = names
        .iter()
        .map(|n| {
            let xs = w
                .stack
                .sm
                .add_instance(InstanceKind::Xsuaa, &format!("sb-{n}!t1"));
            w.credential(n, "xsuaa", &xs, "")
        })
        .collect();
    let cfg = w.config(None, &creds);
    let mut child = w.start(&cfg, &["rotate", "--now", "--parallel", "1"]);
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
    for n in &names {
        assert!(w.state(n).current.is_some(), "{n} was not rotated: {err}");
    }
}
