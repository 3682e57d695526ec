//! `keystore.p12` through the real binary against the sandbox, read by the tools Java and
//! OpenSSL users have: `openssl pkcs12` (OpenSSL 3, no `-legacy`) and `keytool -list`
//! (Debian's JDK; `scripts/test-deps.sh` installs it when missing). The keystore of every
//! generation holds exactly that generation's key and chain under the alias, follows
//! rotations and rollback, opens with the password file's password only, and a missing
//! password file fails the rotation with nothing written.

mod common;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use common::world::World;
use std::path::Path;
use std::process::Command;

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        found.status.success() && !path.is_empty(),
        "{name} is not installed: run scripts/test-deps.sh"
    );
    path
}

/// `keytool -list -v` of `p12` with the password in `pw`: (success, output).
fn keytool_list(p12: &Path, pw: &Path) -> (bool, String) {
    let o = Command::new(tool("keytool"))
        .args(["-list", "-v", "-storetype", "PKCS12", "-keystore"])
        .arg(p12)
        .arg("-storepass:file")
        .arg(pw)
        .output()
        .unwrap();
    (o.status.success(), common::joined(&o))
}

/// The certificates and key `openssl pkcs12` finds in `p12`, as PEM text.
fn openssl_dump(p12: &Path, pw: &Path) -> (bool, String) {
    let o = Command::new(tool("openssl"))
        .args(["pkcs12", "-nodes", "-in"])
        .arg(p12)
        .arg("-passin")
        .arg(format!("file:{}", pw.display()))
        .output()
        .unwrap();
    (o.status.success(), common::joined(&o))
}

/// The base64 body of every PEM block of `label` in `text`, whitespace removed.
fn pem_bodies(text: &str, label: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    text.split(&begin)
        .skip(1)
        .filter_map(|b| b.split(&end).next())
        .map(|b| b.split_whitespace().collect())
        .collect()
}

#[test]
fn the_keystore_follows_every_generation_and_opens_in_openssl_and_keytool() {
    let w = World::new(SmOptions {
        rsa_pool: 3,
        ..SmOptions::default()
    });
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
    let pw = w.root().join("p12.pass");
    std::fs::write(&pw, "ch@nge it\n").unwrap();
    let cfg = w.config(
        None,
        &[w.credential(
            "orders",
            "xsuaa",
            &xs,
            &format!(
                "target.keystore.password_file = {:?}\n",
                pw.display().to_string()
            ),
        )],
    );
    let (code, out, err) = w.certrot(&cfg, &["config", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("keystore.p12 alias \"orders\""), "{out}");

    let p12 = w.target("orders").join("keystore.p12");
    let mut fingerprints = Vec::new();
    for round in 0..2 {
        let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
        assert_eq!(code, 0, "{out}{err}");
        let fp = w.current_fingerprint("orders");
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&p12).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_link(&p12).unwrap(),
            Path::new("..data/keystore.p12"),
            "the keystore is switched with the rest of the generation"
        );

        let (ok, listing) = keytool_list(&p12, &pw);
        assert!(ok, "round {round}: {listing}");
        assert!(
            listing.contains("Alias name: orders")
                && listing.contains("Entry type: PrivateKeyEntry"),
            "{listing}"
        );
        assert!(
            listing.contains(&format!("SHA256: {fp}")),
            "keytool does not see the served certificate {fp}: {listing}"
        );
        let g = w.generation("orders");
        assert!(
            listing.contains(&format!("Certificate chain length: {}", g.chain().count())),
            "{listing}"
        );

        let (ok, dump) = openssl_dump(&p12, &pw);
        assert!(ok, "round {round}: {dump}");
        let served = std::fs::read_to_string(w.target("orders").join("cert.pem")).unwrap();
        let key = std::fs::read_to_string(w.target("orders").join("key.pem")).unwrap();
        let mut in_p12 = pem_bodies(&dump, "CERTIFICATE");
        let mut in_pem = pem_bodies(&served, "CERTIFICATE");
        in_p12.sort();
        in_pem.sort();
        assert_eq!(in_p12, in_pem, "the keystore's chain is not cert.pem's");
        assert_eq!(
            pem_bodies(&dump, "PRIVATE KEY"),
            pem_bodies(&key, "PRIVATE KEY"),
            "the keystore's key is not key.pem's"
        );
        fingerprints.push(fp);
    }
    assert_ne!(fingerprints[0], fingerprints[1]);

    // Only the password opens it (a trailing newline is not part of it).
    let wrong = w.root().join("wrong.pass");
    std::fs::write(&wrong, "ch@nge it \n").unwrap();
    assert!(!keytool_list(&p12, &wrong).0);
    assert!(!openssl_dump(&p12, &wrong).0);

    // Rollback shows the previous generation's keystore.
    let (code, out, err) = w.certrot(&cfg, &["rollback", "orders", "--no-validate"]);
    assert_eq!(code, 0, "{out}{err}");
    let (ok, listing) = keytool_list(&p12, &pw);
    assert!(ok, "{listing}");
    assert!(
        listing.contains(&format!("SHA256: {}", &fingerprints[0])),
        "{listing}"
    );

    // The password file is gone: the rotation fails naming it, nothing is switched, and the
    // attempt's binding is not left behind.
    let bindings = w.binding_ids().len();
    let before = common::snapshot(&w.target("orders"));
    std::fs::remove_file(&pw).unwrap();
    let (code, out, err) = w.certrot(&cfg, &["rotate", "--now"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains(&pw.display().to_string()),
        "the error does not name the password file: {out}{err}"
    );
    assert_eq!(common::snapshot(&w.target("orders")), before);
    assert_eq!(w.binding_ids().len(), bindings);

    // The setting removed: the next generation has no keystore and its link goes (no
    // dangling link).
    let plain = w.config(None, &[w.credential("orders", "xsuaa", &xs, "")]);
    let (code, out, err) = w.certrot(&plain, &["rotate", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        std::fs::symlink_metadata(&p12).is_err(),
        "keystore.p12 stayed"
    );
}

#[test]
fn keystore_settings_are_checked() {
    let w = World::new(SmOptions::default());
    let xs = w.stack.sm.add_instance(InstanceKind::Xsuaa, "sb-orders!t1");
    for (extra, field, says) in [
        (
            "target.keystore.password_file = \"p12.pass\"\n",
            "target.keystore.password_file",
            "absolute path",
        ),
        (
            "target.keystore.alias = \"x\"\n",
            "target.keystore.password_file",
            "needs password_file",
        ),
        (
            "target.layout = \"servicebinding\"\ntarget.keystore.password_file = \"/p\"\n",
            "target.keystore",
            "layout = \"files\"",
        ),
        (
            "target.keystore.password_file = \"/p\"\ntarget.keystore.alias = \"\"\n",
            "target.keystore.alias",
            "1 to 64 characters",
        ),
        (
            "target.keystore.password_file = \"/p\"\ntarget.keystore.pasword = \"x\"\n",
            "",
            "pasword",
        ),
    ] {
        let cfg = w.config(None, &[w.credential("orders", "xsuaa", &xs, extra)]);
        let (code, out, err) = w.certrot(&cfg, &["config", "check"]);
        assert_eq!(code, 2, "{extra}: {out}{err}");
        assert!(
            err.contains(field) && err.contains(says) && err.lines().count() == 1,
            "{extra}: {err}"
        );
    }
}
