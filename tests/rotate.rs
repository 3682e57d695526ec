//! `certrot rotate` end to end against the sandbox (token endpoint + Service Manager API over
//! real TLS on 127.0.0.1), through the real binary: rotation sync and async for xsuaa and
//! identity, `--if-due`, `--dry-run`, failures at each step leaving the old generation intact
//! and no binding behind, a SIGKILL between binding creation and commit, two concurrent
//! runs, retirement (deadline and `--revoke-previous`), 422/429 handling, hooks, and the
//! Service Manager access rotating itself.

mod common;
use certrot::sandbox::sm::{InstanceKind, SmCall, SmFault, SmOptions};
use certrot::sandbox::token::Fault;
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
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-f!t1");
    let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let current = w.state("orders").current.unwrap().binding_id.unwrap();
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
        assert_eq!(last.result, "failure");
        assert!(
            expect.contains(last.step.as_deref().unwrap()),
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
