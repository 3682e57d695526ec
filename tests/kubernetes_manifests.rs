//! The manifests in `kubernetes/`: every one valid against the Kubernetes OpenAPI schemas
//! (PyPI `kubernetes-validate`, strict, installed by `scripts/test-deps.sh`), listed in the
//! kustomization, hardened as documented, RBAC matching the configured Secret; the
//! ConfigMap's `certrot.toml` passes `certrot config check`; and a broken manifest is caught.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has `kubernetes_validate` (the test-deps venv).
fn python() -> PathBuf {
    let venv = root().join("target/test-deps/venv/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import kubernetes_validate, yaml"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "kubernetes-validate is not installed in {}: run scripts/test-deps.sh",
        venv.display()
    );
    venv
}

fn validate(dir: &Path, out: &Path) -> (bool, String) {
    let o = Command::new(python())
        .arg(root().join("tests/validate-manifests.py"))
        .arg(dir)
        .arg(out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn manifests_are_valid_and_hardened() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = tmp.path().join("certrot.toml");
    let (ok, text) = validate(&root().join("kubernetes"), &toml);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "ok");
    let o = common::run(&["config", "check", "--config", toml.to_str().unwrap()]);
    let (out, err) = common::text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("target secret <default namespace>/orders-credentials"),
        "{out}"
    );
}

#[test]
fn a_broken_manifest_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root().join("kubernetes")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            continue; // kubernetes/monitoring/: a kustomization of its own
        }
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let cronjob = tmp.path().join("cronjob.yaml");
    let text = std::fs::read_to_string(&cronjob).unwrap();
    // A misspelt field (strict schema), a lost hardening setting, an unlisted manifest.
    let broken = text
        .replace("concurrencyPolicy: Forbid", "concurrencyPolicyy: Forbid")
        .replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
        );
    std::fs::write(&cronjob, broken).unwrap();
    std::fs::write(
        tmp.path().join("extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    )
    .unwrap();
    let (ok, text) = validate(tmp.path(), &tmp.path().join("out.toml"));
    assert!(!ok, "{text}");
    assert!(text.contains("cronjob.yaml: Kubernetes"), "{text}");
    assert!(text.contains("concurrencyPolicyy"), "{text}");
    assert!(text.contains("readOnlyRootFilesystem missing"), "{text}");
    assert!(text.contains("does not list extra.yaml"), "{text}");
}
