//! Helpers shared by the integration tests: a local CA, workspaces, and running the real
//! `certrot` binary.
#![allow(dead_code)]

pub mod daemon;
pub mod world;

use certrot::config::{DirectoryTarget as DirCfg, Layout};
use certrot::generation::Generation;
use certrot::store::DirectoryTarget;
use certrot::units::FileMode;
use certrot_sandbox::ca::{Issued, KeyAlg, LocalCa};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use time::{Duration, OffsetDateTime};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certrot"));
    // Tests read text logs, wherever they run (a CI pod would default to JSON).
    c.env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("CERTROT_LOG_FORMAT");
    c
}

pub fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .env_remove("CERTROT_CONFIG")
        .output()
        .expect("run certrot")
}

/// A free port on 127.0.0.1 (bound, then released for the server that takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// stdout followed by stderr, for assertions that do not care which.
pub fn joined(o: &Output) -> String {
    let (out, err) = text(o);
    out + &err
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn issue(ca: &LocalCa, cn: &str, age: Duration, lifetime: Duration) -> Issued {
    let nb = OffsetDateTime::now_utc() - age;
    ca.issue(cn, KeyAlg::EcdsaP256, nb, nb + lifetime)
        .expect("issue")
}

pub fn generation(i: &Issued) -> Generation {
    Generation::from_pem(i.chain_pem.as_bytes(), "chain", i.key_pem.as_bytes(), "key")
        .expect("generation")
}

pub fn dir_target(path: &Path, keep: u32, layout: Layout) -> DirectoryTarget {
    DirectoryTarget::new(
        DirCfg {
            path: path.to_path_buf(),
            mode: FileMode(0o600),
            owner: None,
            group: None,
            layout,
            binding: Default::default(),
            keystore: None,
        },
        keep,
    )
}

/// A config with one credential per name, targets under `root/targets/<name>`.
pub fn write_config(root: &Path, names: &[&str], extra: &str) -> PathBuf {
    let mut s = format!(
        "state_dir = {:?}\n[daemon]\nlisten = \"\"\n[defaults]\njitter = \"0%\"\n{extra}\n",
        root.join("state").display().to_string()
    );
    for n in names {
        s.push_str(&format!(
            "[[credential]]\nname = {n:?}\ntarget.path = {:?}\n",
            root.join("targets").join(n).display().to_string()
        ));
    }
    let p = root.join("certrot.toml");
    std::fs::write(&p, s).expect("write config");
    p
}

/// A service key JSON (nested under `credentials`) for an issued certificate.
pub fn service_key(i: &Issued, client_id: &str) -> serde_json::Value {
    serde_json::json!({
        "credentials": {
            "clientid": client_id,
            "certificate": i.chain_pem,
            "key": i.key_pem.as_str(),
            "certurl": "https://t.authentication.cert.example.invalid",
            "url": "https://t.authentication.example.invalid",
            "credential-type": "x509",
            "xsappname": "app!t1",
            "identityzone": "t"
        }
    })
}

/// An operator's own CA on disk (`<dir>/<cn>.pem`, `<dir>/<cn>.key`) for the `local-ca`
/// signer, which can also sign client certificates itself.
pub struct DiskCa {
    pub pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl DiskCa {
    pub fn new(dir: &Path, cn: &str) -> DiskCa {
        std::fs::create_dir_all(dir).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        DiskCa {
            pem: cert.pem(),
            cert_file,
            key_file,
            issuer: rcgen::Issuer::new(p, key),
        }
    }

    /// A client certificate `CN=<cn>` valid for two days: (chain PEM, key PEM).
    pub fn leaf(&self, cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(2);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem() + &self.pem, key.serialize_pem())
    }
}

/// A CA on disk: (certificate PEM, cert path, key path).
pub fn ca_files(dir: &Path, cn: &str) -> (String, PathBuf, PathBuf) {
    let c = DiskCa::new(dir, cn);
    (c.pem, c.cert_file, c.key_file)
}

/// Every file under `dir` with its content and symlink target: a snapshot to compare.
pub fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.push((
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                ));
            } else if ft.is_dir() {
                out.push((rel.clone(), "dir".into()));
                walk(base, &p, out);
            } else {
                out.push((
                    rel,
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `now + offset` as the state files write times (RFC 3339), for forged states.
pub fn rfc3339_in(offset: Duration) -> serde_json::Value {
    serde_json::json!(
        (OffsetDateTime::now_utc() + offset)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    )
}

/// Makes a FIFO at `path` (planted where certrot expects a regular file).
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// Sleeps until the wall clock is past `t` (a retirement deadline, say).
pub fn sleep_past(t: time::OffsetDateTime) {
    let left = t - time::OffsetDateTime::now_utc();
    if left.is_positive() {
        std::thread::sleep(left.unsigned_abs() + std::time::Duration::from_millis(50));
    }
}

/// Polls `f` every 20 ms until it holds; fails the test after 20 s naming `what`.
pub fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
