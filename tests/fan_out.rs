//! One credential, several targets (`[[credential.target]]`), through the real binary against
//! the sandbox: every target receives each generation; a replica that cannot be written keeps
//! the replaced binding alive (its application still uses that certificate) and is reported by
//! `rotate`, `status`, `check` and the metrics with a `target` label; once it can be written
//! again the next run brings it up to date and only then retires the old binding; `rollback`
//! switches every target back.

mod common;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use common::world::World;

/// The credential of `world.credential` with a primary directory and two replicas.
fn fanned_out(w: &World, instance: &str) -> String {
    let single = w.credential("orders", "xsuaa", instance, "");
    let primary = format!(
        "target.path = {:?}\n",
        w.target("orders").display().to_string()
    );
    assert!(single.contains(&primary));
    let mut c = single.replace(&primary, "");
    for t in ["orders", "orders-r1", "orders-r2"] {
        c.push_str(&format!(
            "[[credential.target]]\npath = {:?}\n",
            w.target(t).display().to_string()
        ));
    }
    c
}

/// A sandbox (with `rsa_pool` pre-made RSA keys) and the configuration of `fanned_out`.
fn fanned_out_world(rsa_pool: usize) -> (World, std::path::PathBuf) {
    let w = World::new(SmOptions {
        rsa_pool,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
    let cfg = w.config(None, &[fanned_out(&w, &xs)]);
    (w, cfg)
}

/// Replaces certrot's `credentials.json` link in `dir` by a real file (a hand edit): the
/// directory still serves its generation, but certrot refuses to write over the file.
fn plant_real_file(dir: &std::path::Path) {
    let link = dir.join("credentials.json");
    let content = std::fs::read(&link).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::fs::write(&link, content).unwrap();
}

#[test]
fn a_failing_replica_keeps_the_old_binding_until_it_serves_the_new_generation() {
    let (w, cfg) = fanned_out_world(3);
    let exists = |id: &str| w.stack.sm.bindings().iter().any(|b| b.id == id);

    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = w.current_fingerprint("orders");
    for r in ["orders-r1", "orders-r2"] {
        assert_eq!(
            w.current_fingerprint(r),
            first,
            "{r} did not receive the generation"
        );
    }
    let b1 = w.state("orders").current.unwrap().binding_id.unwrap();

    // Replica 2 refuses the next generation; replica 1 and the primary take it.
    plant_real_file(&w.target("orders-r2"));
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert_eq!(
        code, 1,
        "a replica left behind must fail the run: {out}{err}"
    );
    assert!(
        out.contains("1 replica(s) not up to date") && out.contains("orders-r2"),
        "{out}"
    );
    let second = w.current_fingerprint("orders");
    assert_ne!(second, first);
    assert_eq!(w.current_fingerprint("orders-r1"), second);
    assert_eq!(w.current_fingerprint("orders-r2"), first);
    assert!(
        exists(&b1),
        "the binding whose certificate replica 2 still serves was deleted"
    );
    let state = w.state("orders");
    assert_eq!(state.lagging.len(), 1, "{:?}", state.lagging);
    assert!(state.lagging[0].target.ends_with("orders-r2"));
    assert!(state.retiring.iter().any(|r| r.binding_id == b1));

    // Reported per target.
    let (_, status, _) = w.certrot(&cfg, &["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("orders-r2") && l.contains("BEHIND"))
            && status
                .lines()
                .any(|l| l.contains("orders-r1") && l.contains("CURRENT")),
        "{status}"
    );
    let metrics = w.root().join("metrics.prom");
    let (code, check, _) = w.certrot(
        &cfg,
        &["check", "--metrics-file", metrics.to_str().unwrap()],
    );
    assert_eq!(code, 1, "a lagging replica is a WARNING: {check}");
    assert!(
        check.contains("do not serve the current generation"),
        "{check}"
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let series = |t: &str, v: u8| {
        prom.lines().any(|l| {
            l.starts_with("certrot_target_serves_current{")
                && l.contains(&format!("{}\"", w.target(t).display()))
                && l.ends_with(&format!(" {v}"))
        })
    };
    assert!(
        series("orders", 1) && series("orders-r1", 1) && series("orders-r2", 0),
        "{prom}"
    );

    // Repaired (and its backoff and the retirement deadline passed): the next run, though
    // not due, brings replica 2 up to date, and only then retires the old binding.
    std::fs::remove_file(w.target("orders-r2").join("credentials.json")).unwrap();
    w.edit_state("orders", |s| {
        s["lagging"][0]["next_attempt"] = "2000-01-01T00:00:00Z".into();
        for r in s["retiring"].as_array_mut().unwrap() {
            r["retire_at"] = "2000-01-01T00:00:00Z".into();
        }
    });
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("not due"), "{out}");
    assert_eq!(w.current_fingerprint("orders-r2"), second);
    assert!(
        !exists(&b1),
        "the old binding outlived its last user: {out}{err}"
    );
    assert!(w.state("orders").lagging.is_empty());

    // Rollback acts on every target.
    let (code, out, err) = w.certrot(&cfg, &["rollback", "orders", "--no-validate"]);
    assert_eq!(code, 0, "{out}{err}");
    for t in ["orders", "orders-r1", "orders-r2"] {
        assert_eq!(
            w.current_fingerprint(t),
            first,
            "{t} was not rolled back: {out}"
        );
    }
}

#[test]
fn an_unreadable_replica_stops_retirement_altogether() {
    let (w, cfg) = fanned_out_world(2);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let b1 = w.state("orders").current.unwrap().binding_id.unwrap();
    // A replica directory opened to every local user: certrot refuses to read or write it,
    // so what it serves is unknown and no binding may be deleted.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        w.target("orders-r1"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now", "--revoke-previous"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        w.stack.sm.bindings().iter().any(|b| b.id == b1),
        "retired although a replica could not be read: {out}{err}"
    );
    assert!(
        err.contains("retirement skipped") || out.contains("cannot be read"),
        "{out}{err}"
    );
}

/// A commit whose state write a power cut lost (the binding not written down before it),
/// then a rotation while a replica cannot be read: reconcile deletes nothing, but still
/// adopts the binding the primary serves, so that binding is queued with its grace period
/// when the rotation replaces it, never left untracked and deleted as an orphan later.
#[test]
fn an_unreadable_replica_does_not_keep_a_lost_commit_from_being_adopted() {
    let w = World::new(SmOptions {
        rsa_pool: 3,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-lost!t1");
    let cfg = w.config(None, &[fanned_out(&w, &xs)]);
    let (b1, b2) = w.commit_with_lost_state_write(&cfg, "orders", &xs);
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |m| std::fs::set_permissions(w.target("orders-r1"), std::fs::Permissions::from_mode(m));
    mode(0o777).unwrap();
    let (_, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert!(err.contains("adopted the binding"), "{out}{err}");
    assert!(!out.contains("deleted orphan"), "{out}{err}");
    w.assert_queued_with_grace("orders", &[&b1, &b2]);
    // The replica readable again: a rotation (it reconciles and retires what is due)
    // deletes nothing served until lately before its time.
    mode(0o755).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("deleted orphan"), "{out}{err}");
    let ids = w.binding_ids();
    assert!(ids.contains(&b1) && ids.contains(&b2), "{ids:?}");
    w.assert_queued_with_grace("orders", &[&b1, &b2]);
}

#[test]
fn lost_or_forged_lagging_records_never_cost_a_replica_its_binding() {
    let (w, cfg) = fanned_out_world(3);
    let exists = |id: &str| w.stack.sm.bindings().iter().any(|b| b.id == id);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = w.current_fingerprint("orders");
    let b1 = w.state("orders").current.unwrap().binding_id.unwrap();

    plant_real_file(&w.target("orders-r2"));
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(w.current_fingerprint("orders-r2"), first);

    // The state forgets that replica 2 lags (lost, or edited by someone) and claims the old
    // binding is due: what replica 2 actually serves still decides.
    w.edit_state("orders", |s| {
        s.as_object_mut().unwrap().remove("lagging");
        for r in s["retiring"].as_array_mut().unwrap() {
            r["retire_at"] = "2000-01-01T00:00:00Z".into();
        }
    });
    assert!(w.state("orders").lagging.is_empty());
    let (_, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert!(
        exists(&b1),
        "deleted the binding a replica serves, on the word of a forged state: {out}{err}"
    );
    assert_eq!(w.current_fingerprint("orders-r2"), first);
    assert!(
        w.state("orders")
            .retiring
            .iter()
            .any(|r| r.binding_id == b1),
        "the retirement was dropped instead of postponed"
    );
}
