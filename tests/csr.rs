//! The `csr` issuer (no Service Manager): key and CSR made here, signed by `local-ca`,
//! `command` (Debian's cfssl behind a small script) or `vault` (OpenBao, see
//! tests/openbao.rs); the subject DN and issuer stay identical across rotations and the
//! sandbox token endpoint, which registered the client by subject + issuer DN, accepts each
//! new certificate without re-registration.

mod common;
use certrot_sandbox::sm::SmOptions;
use common::world::World;
use common::{ca_files, free_port};
use std::path::PathBuf;

/// The subject as certificates show it (x509-parser's rendering, as `CertInfo::subject`).
pub fn display_of(rfc4514: &str) -> String {
    use x509_parser::prelude::FromDer;
    let k = certrot::issuer::csr::key_and_csr(
        certrot::config::KeyType::EcdsaP256,
        certrot::dn::parse_dn(rfc4514).unwrap(),
    )
    .unwrap();
    let der = pem::parse(&k.csr_pem).unwrap();
    let (_, c) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.contents())
            .unwrap();
    c.certification_request_info.subject.to_string()
}

/// TOML for a csr-issued credential checked against the sandbox token endpoint.
pub fn csr_credential(w: &World, name: &str, subject: &str, signer: &str, extra: &str) -> String {
    format!(
        "[[credential]]\nname = {name:?}\ncritical_before = \"1s\"\ntarget.path = {:?}\ncheck.ca_file = {:?}\ncheck.system_roots = false\n\
         check.client_id = \"sb-{name}\"\ncheck.token_url = {:?}\ncheck.attempts = 1\n\
         issuer.type = \"csr\"\nissuer.subject = {subject:?}\nissuer.signer = {signer}\n{extra}\n",
        w.target(name).display().to_string(),
        w.ca_file.display().to_string(),
        w.stack.tokens.url,
    )
}

#[test]
fn local_ca_keeps_subject_and_issuer_and_refuses_a_silent_ca_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca1, c1, k1) = ca_files(tmp.path(), "ACME Issuing CA 1");
    let (ca2, c2, k2) = ca_files(tmp.path(), "ACME Issuing CA 2");
    let w = World::trusting(SmOptions::default(), &[ca1, ca2]);
    let subject = "CN=orders,OU=apps,O=ACME\\, Inc.,C=DE";
    let dn = display_of(subject);
    let dn = dn.as_str();
    w.stack
        .tokens
        .register_dn("sb-orders", dn, "CN=ACME Issuing CA 1");
    w.stack
        .tokens
        .register_dn("sb-orders", dn, "CN=ACME Issuing CA 2");
    w.stack
        .tokens
        .register_dn("sb-static", "CN=static", "CN=ACME Issuing CA 1");
    let signer = |c: &PathBuf, k: &PathBuf, validity: &str| {
        format!(
            "{{ type = \"local-ca\", ca_cert = {:?}, ca_key = {:?}, validity = {validity:?} }}",
            c.display().to_string(),
            k.display().to_string()
        )
    };
    let config = |c: &PathBuf, k: &PathBuf, validity: &str| {
        w.config(
            None,
            &[
                csr_credential(
                    &w,
                    "orders",
                    subject,
                    &signer(c, k, validity),
                    "issuer.sans = [\"orders.internal\"]",
                ),
                csr_credential(
                    &w,
                    "static",
                    "CN=static",
                    &signer(&c1, &k1, "1d"),
                    "issuer.rotate_key = \"never\"",
                ),
            ],
        )
    };
    let cfg = config(&c1, &k1, "1d");
    let mut fps = Vec::new();
    for _ in 0..3 {
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("orders: rotated (") && !out.contains("binding"),
            "{out}"
        );
        let g = w.generation("orders");
        assert_eq!(g.leaf().subject, dn);
        assert_eq!(g.leaf().issuer, "CN=ACME Issuing CA 1");
        fps.push(g.leaf().fingerprint_sha256.clone());
    }
    fps.dedup();
    assert_eq!(fps.len(), 3, "three different certificates");
    assert!(w.stack.sm.calls().is_empty(), "no Service Manager involved");
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
    // rotate_key = "never": a new certificate for the same key.
    let before = w.generation("static");
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", "static"]);
    assert_eq!(code, 0, "{out}");
    let after = w.generation("static");
    assert_ne!(
        before.leaf().fingerprint_sha256,
        after.leaf().fingerprint_sha256
    );
    assert_eq!(*before.key_pem(), *after.key_pem());

    // A scheduled rotation that would switch CA is refused; a forced one does it.
    // A 3-second certificate from CA 1, due once it has expired; then the configuration
    // names CA 2.
    let cfg = config(&c1, &k1, "3s");
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", "orders"]);
    assert_eq!(code, 0, "{out}");
    let not_after = w.generation("orders").leaf().not_after;
    common::sleep_past(not_after);
    let cfg = config(&c2, &k2, "1d");
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--if-due", "orders"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed at verify: issuer-changed"), "{out}");
    assert_eq!(w.generation("orders").leaf().issuer, "CN=ACME Issuing CA 1");
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", "orders"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(w.generation("orders").leaf().issuer, "CN=ACME Issuing CA 2");
    // A subject the sandbox does not know: the check fails, the old generation stays.
    let cfg = w.config(
        None,
        &[csr_credential(
            &w,
            "orders",
            "CN=someone-else",
            &signer(&c2, &k2, "1d"),
            "",
        )],
    );
    let fp = w.generation("orders").leaf().fingerprint_sha256.clone();
    let (code, out, _) = w.certrot(&cfg, &["rotate", "--now", "orders"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("failed at check: unauthorized"), "{out}");
    assert_eq!(w.generation("orders").leaf().fingerprint_sha256, fp);
}

fn wait_port(port: u16) {
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Kills the child when dropped.
struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `command` signer against a real cfssl server (`cfssl serve`, Debian's golang-cfssl,
/// installed by scripts/test-deps.sh), through `tests/cfssl-sign.py`; plus the command's failure modes:
/// non-zero exit (stderr shown), garbage output, timeout — the old generation stays each time.
#[test]
fn command_signer_with_cfssl_and_its_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, c, k) = ca_files(tmp.path(), "cfssl CA");
    let cfg_json = tmp.path().join("cfssl.json");
    std::fs::write(
        &cfg_json,
        r#"{"signing":{"default":{"expiry":"24h","usages":["digital signature","client auth"]}}}"#,
    )
    .unwrap();
    let port = free_port();
    let _cfssl = Server(
        std::process::Command::new("cfssl")
            .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
            .arg(format!("-ca={}", c.display()))
            .arg(format!("-ca-key={}", k.display()))
            .arg(format!("-config={}", cfg_json.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cfssl (Debian package golang-cfssl; scripts/test-deps.sh installs it)"),
    );
    wait_port(port);
    let w = World::trusting(SmOptions::default(), &[ca]);
    let subject = "CN=billing,O=ACME";
    w.stack
        .tokens
        .register_dn("sb-billing", &display_of(subject), "CN=cfssl CA");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cfssl-sign.py");
    // The working signer gets room for a loaded machine; the failing ones a short timeout.
    let argv_within = |v: &[&str], timeout: &str| {
        format!(
            "{{ type = \"command\", argv = [{}], timeout = {timeout:?} }}",
            v.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let argv = |v: &[&str]| argv_within(v, "1s");
    let good = argv_within(
        &[
            "python3",
            script,
            &format!("http://127.0.0.1:{port}"),
            c.to_str().unwrap(),
        ],
        "30s",
    );
    let cfg = w.config(
        None,
        &[csr_credential(
            &w,
            "billing",
            subject,
            &good,
            "issuer.key_type = \"rsa-2048\"",
        )],
    );
    for _ in 0..2 {
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        let g = w.generation("billing");
        assert_eq!(g.leaf().issuer, "CN=cfssl CA");
        assert_eq!(g.leaf().subject, display_of(subject));
        assert_eq!(g.key_type(), "RSA 2048");
    }
    let (code, out, _) = w.certrot(&cfg, &["check", "--validate"]);
    assert_eq!(code, 0, "{out}");
    for (signer, want) in [
        (
            argv(&[
                "sh",
                "-c",
                "cat >/dev/null; echo 'CA is on fire' >&2; exit 3",
            ]),
            "exited with code 3; stderr: CA is on fire",
        ),
        (
            argv(&["sh", "-c", "cat >/dev/null; echo garbage"]),
            "no certificate chain on stdout",
        ),
        (
            argv(&["sh", "-c", "sleep 60"]),
            "no answer within 1s (killed)",
        ),
        (argv(&["/nonexistent/signer"]), "cannot start"),
        (
            argv(&[
                "sh",
                "-c",
                "test \"$CERTROT_CREDENTIAL\" = billing && test \"$CERTROT_SUBJECT\" = 'CN=billing,O=ACME' && exit 7",
            ]),
            "exited with code 7",
        ),
    ] {
        let before = w.generation("billing").leaf().fingerprint_sha256.clone();
        let cfg = w.config(None, &[csr_credential(&w, "billing", subject, &signer, "")]);
        let t = std::time::Instant::now();
        let (code, out, _) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("failed at issue: sign-failed") && out.contains(want),
            "{want}: {out}"
        );
        assert!(
            // A signer that hangs is killed at its timeout, not waited for.
            t.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(w.generation("billing").leaf().fingerprint_sha256, before);
    }
}
