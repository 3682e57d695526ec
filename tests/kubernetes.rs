//! The `kubernetes-secret` target end to end: the real `certrot` binary against the
//! sandbox token endpoint and Service Manager, with the Kubernetes API stand-in
//! (`sandbox/src/kube.rs`: Secrets and Leases over TLS, resourceVersion, 409 on stale
//! writes) reached through a kubeconfig file. Covers: the first rotation creates the Secret;
//! a run that is not due writes nothing; a concurrent foreign write during the commit is
//! re-read and kept; two overlapping runs rotate once; the state lives in annotations
//! (no state file); retirement on a later run removes `<name>-previous`; rollback swaps the
//! two Secrets; the Secret never holds a key for another certificate; the Lease (held,
//! released, renewed during a long run, lost to another holder).

mod common;

use base64::Engine as _;
use certrot::generation::Generation;
use certrot_sandbox::kube::KubeServer;
use certrot_sandbox::sm::{InstanceKind, SmCall, SmFault, SmOptions};
use certrot_sandbox::token::Fault;
use common::bin;
use common::world::World;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const NS: &str = "apps";
const SECRET: &str = "orders-credentials";

struct KubeWorld {
    w: World,
    kube: KubeServer,
    kubeconfig: PathBuf,
    instance: String,
}

impl KubeWorld {
    fn new() -> KubeWorld {
        let w = World::new(SmOptions {
            rsa_pool: 2,
            ..SmOptions::default()
        });
        let kube =
            w.rt.block_on(KubeServer::start(&w.stack.ca, "kube-token"))
                .unwrap();
        let kubeconfig = w.root().join("kubeconfig");
        std::fs::write(&kubeconfig, kube.kubeconfig(&w.stack.ca_pem, NS)).unwrap();
        let instance = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
        KubeWorld {
            w,
            kube,
            kubeconfig,
            instance,
        }
    }

    /// A configuration with one credential `orders` kept in Secret `apps/orders-credentials`.
    fn config(&self, target_extra: &str, extra: &str) -> PathBuf {
        let cred = format!(
            "[[credential]]\nname = \"orders\"\nkind = \"xsuaa\"\n{extra}\n\
             check.ca_file = {:?}\ncheck.system_roots = false\ncheck.attempts = 2\ncheck.retry_for = \"200ms\"\n\
             issuer.instance_id = {:?}\n\
             [credential.target]\ntype = \"kubernetes-secret\"\nname = \"{SECRET}\"\nkubeconfig = {:?}\n{target_extra}\n",
            self.w.ca_file.display().to_string(),
            self.instance,
            self.kubeconfig.display().to_string(),
        );
        self.w.config(None, &[cred])
    }

    fn certrot(&self, cfg: &std::path::Path, args: &[&str]) -> (i32, String, String) {
        self.w.certrot(cfg, args)
    }

    fn secret(&self, name: &str) -> Option<Value> {
        self.kube.object("secrets", NS, name)
    }

    fn annotation(&self, name: &str, key: &str) -> Option<String> {
        self.secret(name)?["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_string)
    }

    /// The generation a Secret object holds, checked key ↔ certificate.
    fn generation_of(obj: &Value) -> Result<Generation, String> {
        let get = |k: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(obj["data"][k].as_str().unwrap_or_default())
                .unwrap()
        };
        Generation::from_pem(&get("tls.crt"), "tls.crt", &get("tls.key"), "tls.key")
            .map_err(|e| e.to_string())
    }

    fn fingerprint(&self, name: &str) -> String {
        Self::generation_of(&self.secret(name).unwrap())
            .unwrap()
            .leaf()
            .fingerprint_sha256
            .clone()
    }

    fn writes(&self) -> Vec<String> {
        self.kube
            .calls()
            .into_iter()
            .filter(|c| !c.starts_with("GET "))
            .collect()
    }

    fn current_record(&self) -> Value {
        serde_json::from_str(&self.annotation(SECRET, "certrot.io/current").unwrap()).unwrap()
    }
}

fn rotated(out: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with("orders: rotated") || l.starts_with("orders: renewed"))
}

#[test]
fn first_rotation_creates_the_secret_and_a_run_not_due_writes_nothing() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(rotated(&out) && out.contains("(missing)"), "{out}");
    let s = k.secret(SECRET).expect("the Secret was created");
    assert_eq!(s["type"], "kubernetes.io/tls");
    let keys: Vec<&str> = s["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for want in ["tls.crt", "tls.key", "bundle.pem", "credentials.json"] {
        assert!(keys.contains(&want), "{keys:?}");
    }
    let g = KubeWorld::generation_of(&s).unwrap();
    // The state is in the annotations, not in a state file.
    let current = k.current_record();
    assert_eq!(current["fingerprint_sha256"], g.leaf().fingerprint_sha256);
    let binding = current["binding_id"].as_str().unwrap().to_string();
    assert_eq!(k.w.binding_ids(), vec![binding.clone()]);
    assert_eq!(
        k.annotation(SECRET, "certrot.io/credential").unwrap(),
        "orders"
    );
    assert!(k.annotation(SECRET, "certrot.io/pending").is_none());
    assert!(!k.w.root().join("state").join("orders.json").exists());
    // check and status read the Secret; the token check passes with it.
    let (code, out, _) = k.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("token check passed"), "{out}");
    let (code, out, _) = k.certrot(&cfg, &["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st[0]["fingerprint_sha256"], g.leaf().fingerprint_sha256);
    // Not due: no write at all, nothing created.
    let writes = k.writes().len();
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("orders: not due"), "{out}");
    assert_eq!(k.writes().len(), writes, "{:?}", k.writes());
    assert_eq!(k.w.binding_ids(), vec![binding]);
}

/// `layout = "servicebinding"`: one key per credential field plus `type` besides the TLS
/// keys, as SAP's libraries read a binding mounted under `SERVICE_BINDING_ROOT`.
#[test]
fn servicebinding_layout_in_the_secret() {
    let k = KubeWorld::new();
    let cfg = k.config("layout = \"servicebinding\"", "");
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    let s = k.secret(SECRET).unwrap();
    let get = |key: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(
                    s["data"][key]
                        .as_str()
                        .unwrap_or_else(|| panic!("no key {key}: {s}")),
                )
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(get("clientid"), "sb-orders!t1");
    assert_eq!(get("type"), "xsuaa");
    assert_eq!(get("certificate"), get("tls.crt"));
    assert_eq!(get("key"), get("tls.key"));
    assert!(get("certurl").starts_with("https://127.0.0.1:"));
    assert_eq!(s["type"], "kubernetes.io/tls");
    // certrot's own files are not binding fields; .metadata gives each field's format.
    for own in ["bundle.pem", "credentials.json", "cert.pem", "key.pem"] {
        assert!(s["data"].get(own).is_none(), "{own} is in the Secret: {s}");
    }
    assert!(get(".metadata").contains("credentialProperties"));
    // certrot reads the generation back from the keys (no credentials.json): its client id
    // comes from the clientid key through .metadata.
    let (code, out, err) = k.certrot(&cfg, &["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    let me = st
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(st.clone());
    assert_eq!(me["client_id"], "sb-orders!t1", "{out}");
    assert_eq!(me["health"], "OK", "{out}");
    // The next rotation carries the fields.
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let s2 = k.secret(SECRET).unwrap();
    assert_ne!(s2["data"]["tls.crt"], s["data"]["tls.crt"]);
    for field in ["clientid", "certurl", "xsappname", ".metadata"] {
        assert!(s2["data"].get(field).is_some(), "{field} lost: {s2}");
    }
}

#[test]
fn retirement_on_a_later_run_removes_the_previous_secret() {
    let k = KubeWorld::new();
    let env_file = k.w.root().join("hook-env");
    let hook = format!(
        "[[credential.hook]]\nexec = [\"/bin/sh\", \"-c\", \"env | grep ^CERTROT_ | sort > {}\"]",
        env_file.display()
    );
    let cfg = k.config(&hook, "retire_after = \"5s\"");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    // Hooks learn the Secret, and no file names (there are none).
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains("CERTROT_TARGET=secret apps/orders-credentials\n"),
        "{env}"
    );
    assert!(env.contains("CERTROT_RESULT=success"), "{env}");
    assert!(!env.contains("CERTROT_CERT="), "{env}");
    let first = k.fingerprint(SECRET);
    let first_binding = k.current_record()["binding_id"].clone();
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    // The replaced generation is kept in <name>-previous; its binding is queued.
    assert_eq!(k.fingerprint("orders-credentials-previous"), first);
    let retiring: Value =
        serde_json::from_str(&k.annotation(SECRET, "certrot.io/retiring").unwrap()).unwrap();
    assert_eq!(retiring[0]["binding_id"], first_binding);
    assert_eq!(k.w.binding_ids().len(), 2);
    let retire_at = time::OffsetDateTime::parse(
        retiring[0]["retire_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    common::sleep_past(retire_at);
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("retired"), "{out}");
    assert_eq!(k.w.binding_ids().len(), 1);
    assert!(k.annotation(SECRET, "certrot.io/retiring").is_none());
    assert!(k.secret("orders-credentials-previous").is_none());
}

#[test]
fn rollback_swaps_the_secret_and_its_previous() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    let (code, out, err) = k.certrot(&cfg, &["rollback", "orders"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no previous generation"), "{err}");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    let first = k.fingerprint(SECRET);
    let first_binding = k.current_record()["binding_id"].clone();
    assert_eq!(k.certrot(&cfg, &["rotate", "--now"]).0, 0);
    let second = k.fingerprint(SECRET);
    let second_binding = k.current_record()["binding_id"].clone();
    assert_ne!(first, second);
    let (code, out, err) = k.certrot(&cfg, &["rollback", "orders"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rolled back orders"), "{out}");
    assert_eq!(k.fingerprint(SECRET), first);
    assert_eq!(k.fingerprint("orders-credentials-previous"), second);
    let current = k.current_record();
    assert_eq!(current["source"], "rollback");
    assert_eq!(current["fingerprint_sha256"], first);
    // The restored generation's binding is current again (no longer due for deletion); the
    // one rolled away from waits for retirement.
    assert_eq!(current["binding_id"], first_binding);
    let retiring: Value =
        serde_json::from_str(&k.annotation(SECRET, "certrot.io/retiring").unwrap()).unwrap();
    let queued: Vec<&Value> = retiring.as_array().unwrap().iter().collect();
    assert_eq!(queued.len(), 1, "{retiring}");
    assert_eq!(queued[0]["binding_id"], second_binding);
    assert_eq!(queued[0]["reason"], "rolled-back");
    // The rolled-back generation still works.
    let (code, out, _) = k.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
    // A -previous holding the Secret's own certificate (an interrupted commit copies the
    // current one there first) is not rolled back to.
    let main = k.secret(SECRET).unwrap();
    assert!(k.kube.patch_object(
        "secrets",
        NS,
        "orders-credentials-previous",
        &json!({"data": main["data"].clone()})
    ));
    let before = k.secret(SECRET);
    let (code, out, err) = k.certrot(&cfg, &["rollback", "orders"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("holds the certificate the Secret already has"),
        "{err}"
    );
    assert_eq!(k.secret(SECRET), before);
}

/// Someone annotates the Secret while certrot checks the new generation: the commit meets
/// 409, reads the Secret again, and writes on top (their annotation stays; one rotation).
#[test]
fn a_conflict_during_the_commit_is_reread_and_nothing_is_lost() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    let first = k.fingerprint(SECRET);
    let run = k.w.rotation_in_flight(&cfg, 2);
    assert!(k.kube.patch_object(
        "secrets",
        NS,
        SECRET,
        &json!({"metadata": {"annotations": {"example.com/owner": "team-a"}}})
    ));
    let o = run.finish();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(rotated(&out), "{out}");
    assert_ne!(k.fingerprint(SECRET), first);
    assert_eq!(
        k.annotation(SECRET, "example.com/owner").as_deref(),
        Some("team-a")
    );
    assert_eq!(
        k.current_record()["fingerprint_sha256"],
        k.fingerprint(SECRET)
    );
    assert!(k.annotation(SECRET, "certrot.io/pending").is_none());
    assert_eq!(k.w.binding_ids().len(), 2, "one rotation: replaced + new");
}

/// The API server stores the commit but the answer is lost (500): certrot reads the Secret
/// again, finds its certificate there, and completes the rotation instead of deleting the
/// binding of the credential that is now live.
#[test]
fn a_commit_whose_answer_is_lost_is_recognised() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    let old_binding = k.current_record()["binding_id"].clone();
    k.kube.lose_answer_to_data_write(SECRET);
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(rotated(&out), "{out}");
    let current = k.current_record();
    assert_eq!(current["fingerprint_sha256"], k.fingerprint(SECRET));
    assert_ne!(current["binding_id"], old_binding);
    assert!(
        k.w.binding_ids()
            .contains(&current["binding_id"].as_str().unwrap().to_string())
    );
    let (code, out, _) = k.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "the live credential works: {out}");
}

/// Two one-shot runs at once on an empty Secret: exactly one rotation and one binding.
#[test]
fn two_concurrent_runs_rotate_once() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    k.w.stack
        .tokens
        .inject(Fault::Latency(Duration::from_millis(800)), 2);
    let spawn = || k.w.start(&cfg, &["rotate", "--if-due"]);
    let (a, b) = (spawn(), spawn());
    let outs: Vec<(Option<i32>, String)> = [a, b]
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (o.status.code(), common::joined(&o))
        })
        .collect();
    let rotations = outs.iter().filter(|(_, o)| rotated(o)).count();
    assert_eq!(rotations, 1, "{outs:?}");
    for (code, o) in &outs {
        if !rotated(o) {
            // Turned away while the other was at work, or came after it: not due.
            assert!(
                (*code == Some(75) && o.contains("being rotated by another run"))
                    || (*code == Some(0) && o.contains("not due")),
                "{outs:?}"
            );
        }
    }
    let current = k.current_record();
    assert_eq!(
        k.w.binding_ids(),
        vec![current["binding_id"].as_str().unwrap().to_string()]
    );
    assert_eq!(current["fingerprint_sha256"], k.fingerprint(SECRET));
    // A run turned away by an intent in flight, deterministically: the intent stays fresh
    // while the first run waits for its token check.
    let first = k.w.rotation_in_flight(&cfg, 2);
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 75, "{out}{err}");
    assert!(out.contains("being rotated by another run"), "{out}");
    let o = first.finish();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(k.w.binding_ids().len(), 2, "one rotation: replaced + new");
}

/// With `lease = true` a second run finds the Lease held; the Lease is given back at the end.
#[test]
fn the_lease_excludes_a_second_run_and_is_released() {
    let k = KubeWorld::new();
    let cfg = k.config("lease = true\nlease_duration = \"2m\"", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    let lease = k
        .kube
        .object("leases", NS, "certrot-orders-credentials")
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 120);
    let first = k.w.rotation_in_flight(&cfg, 2);
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 75, "{out}{err}");
    assert!(
        out.contains("lease certrot-orders-credentials until"),
        "{out}"
    );
    assert_eq!(first.finish().status.code(), Some(0));
    let lease = k
        .kube
        .object("leases", NS, "certrot-orders-credentials")
        .unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

const LEASE: &str = "certrot-orders-credentials";
const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/apps/leases/certrot-orders-credentials";

impl KubeWorld {
    fn lease(&self) -> Value {
        self.kube.object("leases", NS, LEASE).unwrap()["spec"].clone()
    }
}

fn micro_time(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// A run renews its Lease while it works, so a run that starts after the Lease as first
/// taken would have expired is still turned away by the Lease; it is given back at the end.
#[test]
fn a_long_run_renews_its_lease() {
    let k = KubeWorld::new();
    let cfg = k.config("lease = true\nlease_duration = \"10s\"", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    // Held at its token check: no writes while it waits, only renewals.
    let first = k.w.rotation_in_flight(&cfg, 2);
    let taken = k.lease();
    assert!(taken["holderIdentity"].is_string(), "{taken}");
    common::wait_until("the lease renewed", || {
        k.lease()["renewTime"] != taken["renewTime"]
    });
    assert_eq!(k.lease()["holderIdentity"], taken["holderIdentity"]);
    assert_eq!(k.lease()["acquireTime"], taken["acquireTime"]);
    // Past the first term of the Lease: a second run still finds it held.
    common::sleep_past(micro_time(&taken["acquireTime"]) + time::Duration::seconds(11));
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 75, "{out}{err}");
    assert!(out.contains(&format!("lease {LEASE} until")), "{out}");
    let o = first.finish();
    let out = common::joined(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(rotated(&out), "{out}");
    assert!(
        k.lease()["holderIdentity"].is_null(),
        "released: {}",
        k.lease()
    );
    assert_eq!(k.w.binding_ids().len(), 2, "one rotation: replaced + new");
}

/// A run whose Lease another holder has taken writes nothing more: no request changes the
/// Secret, the new certificate is not committed, its binding is deleted, and the other
/// holder's Lease is left alone. The next holder is not turned away by the intent left
/// behind.
#[test]
fn a_run_that_lost_its_lease_commits_nothing() {
    let k = KubeWorld::new();
    let cfg = k.config("lease = true\nlease_duration = \"10s\"", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    let before = k.fingerprint(SECRET);
    // Held at its token check (binding created and recorded); then another holder takes
    // the Lease.
    let first = k.w.rotation_in_flight(&cfg, 2);
    first.wait_for_token_check();
    assert!(k.kube.patch_object(
        "leases",
        NS,
        LEASE,
        &json!({"spec": {"holderIdentity": "other-node/1"}}),
    ));
    // From here on (the run waits at its check), every request comes after the change.
    let mark = k.kube.calls().len();
    let version = k.secret(SECRET).unwrap()["metadata"]["resourceVersion"].clone();
    // The run's renewal reads the Lease and finds the other holder.
    common::wait_until("the run's renewal", || {
        k.kube.calls()[mark..].contains(&format!("GET {LEASE_PATH}"))
    });
    let o = first.finish();
    let out = common::joined(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "lease {NS}/{LEASE}: the lease is now held by other-node/1"
        )),
        "{out}"
    );
    let secret_writes: Vec<String> = k.kube.calls()[mark..]
        .iter()
        .filter(|c| !c.starts_with("GET ") && c.contains("/secrets"))
        .cloned()
        .collect();
    assert!(secret_writes.is_empty(), "{secret_writes:?}");
    assert_eq!(
        k.secret(SECRET).unwrap()["metadata"]["resourceVersion"],
        version
    );
    assert_eq!(k.fingerprint(SECRET), before, "nothing committed");
    assert_eq!(
        k.w.binding_ids().len(),
        1,
        "the uncommitted binding is deleted"
    );
    assert_eq!(k.current_record()["fingerprint_sha256"], before);
    assert_eq!(k.lease()["holderIdentity"], "other-node/1");
    // The other holder is done; the next run takes the Lease and rotates: the intent left
    // behind is an interrupted run's, not one in flight.
    assert!(k.kube.patch_object(
        "leases",
        NS,
        LEASE,
        &json!({"spec": {"holderIdentity": null}}),
    ));
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(rotated(&out), "{out}");
    assert_ne!(k.fingerprint(SECRET), before);
    assert_eq!(k.w.binding_ids().len(), 2, "replaced + new");
    assert!(k.annotation(SECRET, "certrot.io/pending").is_none());
}

/// A run that has lost its Lease while listing bindings deletes none: what looks like an
/// orphan from its stale view may be the binding another run is creating.
#[test]
fn a_run_that_lost_its_lease_deletes_no_binding() {
    let k = KubeWorld::new();
    let cfg = k.config("lease = true\nlease_duration = \"10s\"", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    // An interrupted run leaves a binding behind (and its Lease, freed here).
    let interrupted = k.w.rotation_in_flight(&cfg, 2);
    drop(interrupted);
    let left = k.w.binding_ids();
    assert!(k.kube.patch_object(
        "leases",
        NS,
        LEASE,
        &json!({"spec": {"holderIdentity": null}}),
    ));
    // The next run's binding list takes 8 s; meanwhile another holder takes the Lease.
    k.w.stack
        .sm
        .inject(SmCall::List, SmFault::Latency(Duration::from_secs(8)), 1);
    let run = k.w.start(&cfg, &["rotate", "--now"]);
    common::wait_until("the run's Lease", || {
        k.lease()["holderIdentity"].is_string()
    });
    assert!(k.kube.patch_object(
        "leases",
        NS,
        LEASE,
        &json!({"spec": {"holderIdentity": "other-node/1"}}),
    ));
    let o = run.wait_with_output().unwrap();
    let out = common::joined(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("failed at reconcile: lease"), "{out}");
    assert!(
        out.contains("the lease is now held by other-node/1"),
        "{out}"
    );
    assert_eq!(k.w.binding_ids(), left, "no binding deleted, none created");
}

/// Many rotations while a reader polls the Secret: every version it sees holds a key that
/// matches its certificate, and a bundle with that same certificate.
#[test]
fn the_secret_never_holds_a_key_for_another_certificate() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut versions = std::collections::HashSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let obj = k.secret(SECRET).unwrap();
                let g = KubeWorld::generation_of(&obj).expect("key matches certificate");
                let bundle = base64::engine::general_purpose::STANDARD
                    .decode(obj["data"]["bundle.pem"].as_str().unwrap())
                    .unwrap();
                let chain = base64::engine::general_purpose::STANDARD
                    .decode(obj["data"]["tls.crt"].as_str().unwrap())
                    .unwrap();
                assert!(
                    String::from_utf8_lossy(&bundle)
                        .contains(String::from_utf8_lossy(&chain).trim()),
                    "bundle.pem holds another certificate"
                );
                versions.insert(g.leaf().fingerprint_sha256.clone());
                std::thread::sleep(Duration::from_millis(2));
            }
            versions.len()
        });
        for _ in 0..4 {
            let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
            assert_eq!(code, 0, "{out}{err}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert!(seen >= 2, "the reader saw {seen} generations");
}

/// Broken state annotations are reported, and reconcile then deletes nothing.
#[test]
fn unusable_state_annotations_are_reported_and_no_binding_is_deleted() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    assert!(k.kube.patch_object(
        "secrets",
        NS,
        SECRET,
        &json!({"metadata": {"annotations": {"certrot.io/current": "{broken"}}})
    ));
    let (code, out, _) = k.certrot(&cfg, &["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    let st: Value = serde_json::from_str(&out).unwrap();
    let warning = st[0]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("annotation certrot.io/current")
            && warning.contains("secret apps/orders-credentials"),
        "{out}"
    );
    let before = k.w.binding_ids();
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    // The broken values are kept aside, not lost.
    let aside: Value =
        serde_json::from_str(&k.annotation(SECRET, "certrot.io/unusable-state").unwrap()).unwrap();
    assert_eq!(aside["certrot.io/current"], "{broken");
    assert!(k.annotation(SECRET, "certrot.io/unknown-since").is_some());
    // The old binding was not deleted as an orphan (certrot no longer knew it was current),
    // neither by this run nor by the next ones: which bindings consumers use stays unknown
    // until a generation committed since has been current for retire_after.
    for _ in 0..2 {
        for id in &before {
            assert!(k.w.binding_ids().contains(id), "{id} deleted");
        }
        assert_eq!(
            k.current_record()["fingerprint_sha256"],
            k.fingerprint(SECRET)
        );
        let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
    }
}

/// In a pod (KUBERNETES_SERVICE_HOST set) with stderr not a terminal, logs are JSON lines by
/// default; `--log-format text` overrides; outside a pod they are text.
#[test]
fn logs_are_json_in_a_pod_by_default() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    let run = |pod: bool, extra: &[&str]| {
        let mut c = bin();
        c.args(["--config", cfg.to_str().unwrap()]).args(extra);
        c.args(["rotate", "--now"]);
        if pod {
            c.env("KUBERNETES_SERVICE_HOST", "10.96.0.1");
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let json_lines = |err: &str| {
        err.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"].is_string()))
    };
    let err = run(true, &[]);
    assert!(err.contains("renewal decided") && json_lines(&err), "{err}");
    let err = run(true, &["--log-format", "text"]);
    assert!(
        err.contains("renewal decided") && !json_lines(&err),
        "{err}"
    );
    let err = run(false, &[]);
    assert!(
        err.contains("renewal decided") && !json_lines(&err),
        "{err}"
    );
}

/// Neither the private key nor the API token appears in the output, even with every
/// crate's log at TRACE.
#[test]
fn no_key_or_token_in_logs_at_trace() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    for env in [None, Some("trace")] {
        let mut c = bin();
        c.args(["--config", cfg.to_str().unwrap(), "-vvv", "rotate", "--now"]);
        if let Some(f) = env {
            c.env("CERTROT_LOG", f);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        let all = common::joined(&o);
        let key = base64::engine::general_purpose::STANDARD
            .decode(
                k.secret(SECRET).unwrap()["data"]["tls.key"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        let key = String::from_utf8(key).unwrap();
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!all.contains("PRIVATE KEY"), "{all}");
        assert!(!all.contains(&body[..40]), "key material in the log");
        assert!(!all.contains("kube-token"), "API token in the log");
        assert!(!all.contains("LS0tLS1CRUdJTi"), "base64 PEM in the log");
        if env.is_some() {
            // The other crates did log at TRACE (the check above saw their output).
            assert!(all.contains("sending request to buffer worker"), "{all}");
        }
    }
}

/// One clear error naming the file or the server, and nothing written: a missing or
/// garbage kubeconfig, one that turns verification off, a wrong token, a server that is
/// gone, an oversized answer.
#[test]
fn bad_kubeconfig_and_unreachable_or_misbehaving_api_server() {
    let k = KubeWorld::new();
    let cfg = k.config("", "");
    assert_eq!(k.certrot(&cfg, &["rotate", "--if-due"]).0, 0);
    let good = std::fs::read_to_string(&k.kubeconfig).unwrap();
    let secret_before = k.secret(SECRET);
    let path = k.kubeconfig.display().to_string();
    let cases: Vec<(String, &str)> = vec![
        ("not: [yaml".into(), "kubeconfig"),
        (
            good.replace(
                "certificate-authority-data:",
                "insecure-skip-tls-verify: true\n    x-was:",
            ),
            "turns off server certificate verification",
        ),
        (good.replace("token: kube-token", "token: wrong"), "401"),
        (
            good.replace(&k.kube.url, "https://127.0.0.1:9"),
            "API server https://127.0.0.1:9",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&k.kubeconfig, &text).unwrap();
        let (code, out, err) = k.certrot(&cfg, &["check"]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(out.contains(want), "want {want:?}: {out}");
        let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.contains(want) || err.contains(want),
            "want {want:?}: {out}{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_file(&k.kubeconfig).unwrap();
    let (code, out, _) = k.certrot(&cfg, &["check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&path), "{out}");
    // An answer beyond the size limit is refused, not read into memory.
    std::fs::write(&k.kubeconfig, &good).unwrap();
    let big =
        json!({"kind": "Secret", "metadata": {"name": "big"}, "data": {"x": "x".repeat(5 << 20)}});
    k.kube.answer_next_reads(1, &big.to_string());
    let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("secret apps/orders-credentials"), "{out}{err}");
    // An answer that is not JSON is an error too, and its body (which could hold a key)
    // is not logged, even at TRACE.
    let marker = "-----BEGIN PRIVATE KEY----- not-json-marker";
    k.kube.answer_next_reads(1, marker);
    let o = bin()
        .args(["--config", cfg.to_str().unwrap(), "-vvv", "rotate", "--now"])
        .env("CERTROT_LOG", "trace")
        .output()
        .unwrap();
    let all = common::joined(&o);
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(all.contains("secret apps/orders-credentials"), "{all}");
    assert!(!all.contains("not-json-marker"), "{all}");
    // Nothing was written meanwhile, and the Secret still works.
    assert_eq!(k.secret(SECRET), secret_before);
    let (code, out, _) = k.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
}

/// `keystore.p12` as a further key of the Secret, replaced in the same write as `tls.crt`
/// and `tls.key`, and gone again when the setting is removed.
#[test]
fn the_secret_carries_a_keystore_of_its_generation() {
    let k = KubeWorld::new();
    let pw = k.w.root().join("p12.pass");
    std::fs::write(&pw, "secret-pw").unwrap();
    let cfg = k.config(
        &format!(
            "keystore.password_file = {:?}\nkeystore.alias = \"orders-client\"\n",
            pw.display().to_string()
        ),
        "",
    );
    let keystore_of = |obj: &Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(obj["data"]["keystore.p12"].as_str().unwrap())
            .unwrap();
        let ks = p12_keystore::KeyStore::from_pkcs12(
            &bytes,
            "secret-pw",
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .unwrap();
        let (alias, chain) = ks.private_key_chain().unwrap();
        (alias.to_string(), chain.certs()[0].as_der().to_vec())
    };
    for _ in 0..2 {
        let (code, out, err) = k.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        let obj = k.secret(SECRET).unwrap();
        let g = KubeWorld::generation_of(&obj).unwrap();
        let (alias, leaf) = keystore_of(&obj);
        assert_eq!(alias, "orders-client");
        assert_eq!(leaf, g.leaf_der(), "the keystore holds another certificate");
    }
    let plain = k.config("", "");
    let (code, out, err) = k.certrot(&plain, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        k.secret(SECRET).unwrap()["data"]
            .get("keystore.p12")
            .is_none(),
        "a keystore of an older generation stayed in the Secret"
    );
}
