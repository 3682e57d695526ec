//! The bad-input corpus: configurations (files under `tests/bad-input/config`, each with the
//! exact expected message on its first line) and service keys (built here around fresh
//! certificates). Every case must give one clear error naming the culprit, exit with the
//! documented code, never panic, and leave the target exactly as it was.

mod common;
use common::*;
use std::path::Path;
use time::Duration;

fn check_config_case(path: &Path, expect: &str) {
    let o = run(&["--config", path.to_str().unwrap(), "config", "check"]);
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}: stdout {out} stderr {err}",
        path.display()
    );
    assert!(!err.contains("panicked"), "{}: {err}", path.display());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{}: want one line, got {err}",
        path.display()
    );
    let want = format!(
        "certrot: {}",
        expect.replace("{FILE}", path.to_str().unwrap())
    );
    assert!(
        lines[0].starts_with(&want),
        "{}:\n want: {want}\n  got: {}",
        path.display(),
        lines[0]
    );
}

#[test]
fn config_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-input/config");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "corpus shrank: {}", cases.len());
    for path in cases {
        let body = std::fs::read_to_string(&path).unwrap();
        let expect = body
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()));
        check_config_case(&path, expect);
    }
}

#[test]
fn config_oversize_garbage_and_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; (64 << 20) + 1]).unwrap();
    check_config_case(
        &big,
        "{FILE}: the configuration is 67108865 bytes, over the 64 MiB limit",
    );
    let bin = tmp.path().join("garbage.toml");
    std::fs::write(&bin, [0xff, 0xfe, 0x00, 0x12, 0x80, 0x81]).unwrap();
    check_config_case(&bin, "{FILE}: the configuration is not UTF-8 text");
    let missing = tmp.path().join("missing.toml");
    check_config_case(
        &missing,
        "{FILE}: cannot read the configuration: No such file or directory",
    );
    // Not a regular file: refused at once (a FIFO would hang, /dev/zero never end).
    let fifo = tmp.path().join("fifo.toml");
    mkfifo(&fifo);
    for p in [fifo.as_path(), Path::new("/dev/zero")] {
        check_config_case(
            p,
            "{FILE}: cannot read the configuration: not a regular file",
        );
    }
    // Two targets that are one directory through a symlink.
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("alias")).unwrap();
    let shared = tmp.path().join("shared.toml");
    std::fs::write(
        &shared,
        format!(
            "[[credential]]\nname = \"a\"\ntarget.path = {:?}\n[[credential]]\nname = \"b\"\ntarget.path = {:?}\n",
            real.display().to_string(),
            tmp.path().join("alias").display().to_string()
        ),
    )
    .unwrap();
    check_config_case(
        &shared,
        &format!(
            "{{FILE}}:4:1: credential[1].target.path: {} is already the target of credential \"a\"",
            tmp.path().join("alias").display()
        ),
    );
}

/// A workspace with credential `orders` already holding a valid generation.
struct Workspace {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    config: std::path::PathBuf,
    ca: certrot_sandbox::ca::LocalCa,
}

fn workspace() -> Workspace {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let config = write_config(&root, &["orders"], "");
    let ca = certrot_sandbox::ca::LocalCa::new("bad-input CA").unwrap();
    let good = issue(&ca, "orders", Duration::hours(1), Duration::days(7));
    let key = root.join("good.json");
    std::fs::write(&key, service_key(&good, "sb-orders").to_string()).unwrap();
    let o = run(&[
        "--config",
        config.to_str().unwrap(),
        "import",
        "orders",
        "--no-validate",
        "--service-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    Workspace {
        _tmp: tmp,
        root,
        config,
        ca,
    }
}

#[test]
fn service_key_corpus() {
    let ws = workspace();
    let target = ws.root.join("targets/orders");
    let before = snapshot(&target);
    let good = issue(&ws.ca, "orders", Duration::hours(1), Duration::days(7));
    let other = issue(&ws.ca, "other", Duration::hours(1), Duration::days(7));
    let expired = issue(&ws.ca, "orders", Duration::days(8), Duration::days(7));
    let sk = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut v = service_key(&good, "sb-orders");
        f(v["credentials"].as_object_mut().unwrap());
        v.to_string().into_bytes()
    };
    let set = |k: &'static str, val: serde_json::Value| {
        move |m: &mut serde_json::Map<String, serde_json::Value>| {
            m.insert(k.into(), val.clone());
        }
    };
    let truncated_cert = good.chain_pem[..good.chain_pem.len() / 2].to_string();
    let mut random = vec![0u8; 4096];
    aws_lc_rs::rand::fill(&mut random).unwrap();
    random[0] = 0xff;
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("truncated-certificate", sk(&set("certificate", truncated_cert.clone().into())),
            "{FILE}: field `certificate`: malformed PEM".into()),
        ("key-of-another-certificate", sk(&set("key", other.key_pem.as_str().into())),
            "{FILE}: field `key`: the private key matches none of the 1 certificate(s) in {FILE}: field `certificate`".into()),
        ("missing-key", sk(&|m| { m.remove("key"); }),
            "{FILE}: field `key`: is missing (is this an X.509 credential?".into()),
        ("certificate-is-a-number", sk(&set("certificate", 42.into())),
            "{FILE}: field `certificate`: must be a string, found a number".into()),
        ("empty-certificate", sk(&set("certificate", "  ".into())),
            "{FILE}: field `certificate`: is empty".into()),
        ("clientid-not-a-string", sk(&set("clientid", serde_json::json!(["a"]))),
            "{FILE}: field `clientid`: must be a string, found an array".into()),
        ("certificate-holds-a-key", sk(&set("certificate", good.key_pem.as_str().into())),
            "{FILE}: field `certificate`: no PEM \"CERTIFICATE\" block found".into()),
        ("key-holds-a-certificate", sk(&set("key", good.chain_pem.clone().into())),
            "{FILE}: field `key`: no private key found".into()),
        ("encrypted-key", sk(&set("key", encrypted.into())),
            "{FILE}: field `key`: the private key is encrypted".into()),
        ("expired-certificate", {
            let mut v = service_key(&expired, "sb-orders");
            v["credentials"]["clientid"] = "sb-orders".into();
            v.to_string().into_bytes()
        }, "{FILE}: the certificate expired at".into()),
        ("not-json", b"Getting key orders-key for service instance orders as admin...\n\nFAILED\n".to_vec(),
            "{FILE}: not a service key: no JSON object found".into()),
        ("truncated-json", sk(&|_| {})[..200].to_vec(),
            "{FILE}: not a service key: invalid JSON: EOF while parsing".into()),
        ("binary-garbage", random, "{FILE}: not a service key: not UTF-8 text".into()),
        ("json-array", b"[{\"certificate\": 1}]".to_vec(), "{FILE}: not a service key: invalid JSON".into()),
        ("empty-file", Vec::new(), "{FILE}: not a service key: no JSON object found".into()),
        ("two-mib", vec![b' '; 2 << 20], "{FILE}: larger than the 1024 KiB limit".into()),
        ("garbage-inside-pem", sk(&set("certificate",
            "-----BEGIN CERTIFICATE-----\n!!!!not base64!!!!\n-----END CERTIFICATE-----\n".into())),
            "{FILE}: field `certificate`: malformed PEM".into()),
        ("der-not-a-certificate", sk(&set("certificate",
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n".into())),
            "{FILE}: field `certificate`: certificate 1 is not a valid X.509 certificate".into()),
    ];
    assert!(cases.len() >= 15);
    for (name, body, expect) in cases {
        let file = ws.root.join(format!("{name}.json"));
        std::fs::write(&file, &body).unwrap();
        let o = run(&[
            "--config",
            ws.config.to_str().unwrap(),
            "import",
            "orders",
            "--no-validate",
            "--service-key",
            file.to_str().unwrap(),
        ]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {out} {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: want one line: {err}");
        let want = format!(
            "certrot: import orders: {}",
            expect.replace("{FILE}", file.to_str().unwrap())
        );
        assert!(
            err.starts_with(&want),
            "{name}:\n want: {want}\n  got: {err}"
        );
        assert!(
            !err.contains("PRIVATE KEY-----\nMI"),
            "{name}: key material in error"
        );
        assert_eq!(snapshot(&target), before, "{name}: target changed");
    }
}
