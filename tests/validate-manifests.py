#!/usr/bin/env python3
"""Validates the manifests in DIR (default kubernetes/) for tests/kubernetes_manifests.rs:

- kustomization.yaml lists every manifest, and every manifest it lists exists;
- every document passes kubernetes-validate in strict mode against the Kubernetes OpenAPI
  schemas (oldest and newest supported versions);
- the CronJob, Role and ConfigMap keep what docs/kubernetes.md promises (schedule, Forbid,
  hardening, resourceNames matching the configured Secret);
- writes the ConfigMap's certrot.toml to OUT (for `certrot config check`).

Usage: validate-manifests.py DIR OUT   (exit 0 and "ok", or 1 and one line per problem)
"""
import pathlib
import sys
import tomllib

import kubernetes_validate
import yaml

VERSIONS = ["1.30.0", "1.33.0", kubernetes_validate.latest_version()]


def main() -> int:
    d = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    problems = []
    kust = yaml.safe_load((d / "kustomization.yaml").read_text())
    if kust.get("kind") != "Kustomization":
        problems.append("kustomization.yaml: kind is not Kustomization")
    listed = kust.get("resources", [])
    present = sorted(p.name for p in d.glob("*.yaml") if p.name != "kustomization.yaml")
    for name in listed:
        if not (d / name).exists():
            problems.append(f"kustomization.yaml: lists {name}, which does not exist")
    for name in present:
        if name not in listed:
            problems.append(f"kustomization.yaml: does not list {name}")
    docs = {}
    for name in present:
        for doc in yaml.safe_load_all((d / name).read_text()):
            if doc is None:
                continue
            for v in VERSIONS:
                try:
                    kubernetes_validate.validate(doc, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    problems.append(f"{name}: Kubernetes {v}: {where}: {e.message}")
                    break
                except Exception as e:  # schema not found, bad document
                    problems.append(f"{name}: Kubernetes {v}: {e}")
                    break
            docs[doc.get("kind")] = doc
    cj = docs.get("CronJob", {}).get("spec", {})
    job = cj.get("jobTemplate", {}).get("spec", {})
    pod = job.get("template", {}).get("spec", {})
    psc = pod.get("securityContext", {})
    want = [
        ("CronJob schedule every 15 minutes", cj.get("schedule") == "*/15 * * * *"),
        ("CronJob concurrencyPolicy Forbid", cj.get("concurrencyPolicy") == "Forbid"),
        ("CronJob startingDeadlineSeconds", isinstance(cj.get("startingDeadlineSeconds"), int)),
        ("CronJob successfulJobsHistoryLimit", isinstance(cj.get("successfulJobsHistoryLimit"), int)),
        ("Job backoffLimit", isinstance(job.get("backoffLimit"), int)),
        ("pod runAsNonRoot", psc.get("runAsNonRoot") is True),
        ("pod seccompProfile RuntimeDefault", psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"),
        ("pod serviceAccountName certrot", pod.get("serviceAccountName") == "certrot"),
    ]
    for c in pod.get("containers", []):
        sc = c.get("securityContext", {})
        want += [
            (f"container {c['name']}: readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True),
            (f"container {c['name']}: allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is False),
            (f"container {c['name']}: capabilities drop ALL", sc.get("capabilities", {}).get("drop") == ["ALL"]),
            (f"container {c['name']}: rotate --if-due", c.get("args", [])[:2] == ["rotate", "--if-due"]),
        ]
    for what, ok in want:
        if not ok:
            problems.append(f"cronjob.yaml: {what} missing")
    toml_text = docs.get("ConfigMap", {}).get("data", {}).get("certrot.toml", "")
    out.write_text(toml_text)
    config = tomllib.loads(toml_text)
    secrets = [c["target"]["name"] for c in config.get("credential", [])
               if c.get("target", {}).get("type") == "kubernetes-secret"]
    rules = docs.get("Role", {}).get("rules", [])
    for r in rules:
        if "*" in r.get("verbs", []) or "*" in r.get("resources", []):
            problems.append("role.yaml: a wildcard rule")
        if set(r.get("verbs", [])) - {"create"} and not r.get("resourceNames"):
            problems.append(f"role.yaml: {r.get('resources')} {r.get('verbs')} without resourceNames")
    def allowed(resource, name, verb):
        return any(resource in r.get("resources", []) and verb in r.get("verbs", [])
                   and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)
    for s in secrets:
        for name, verbs in [(s, ["get", "update", "create"]),
                            (s + "-previous", ["get", "update", "create", "delete"])]:
            for v in verbs:
                if not allowed("secrets", name, v):
                    problems.append(f"role.yaml: no {v} on Secret {name}")
        for v in ["get", "update", "create"]:
            if not allowed("leases", "certrot-" + s, v):
                problems.append(f"role.yaml: no {v} on Lease certrot-{s}")
    for p in problems:
        print(p)
    if problems:
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
