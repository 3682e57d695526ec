//! SAP's own Node libraries read what certrot writes: `@sap/xsenv` 6 finds the binding (the
//! `servicebinding` layout under `SERVICE_BINDING_ROOT`) or the application reads
//! `credentials.json`, and `@sap/xssec` 4 fetches a client-credentials token with it from
//! the sandbox's token hosts, which check the client certificate. After an import, after
//! Service Manager rotations and after `csr` rotations, in both layouts, with the files
//! exactly as certrot wrote them. scripts/test-deps.sh installs the libraries into
//! target/test-deps/node; `tests/sap-libraries/fetch-token.js` is the application.

mod common;
use certrot_sandbox::sm::{InstanceKind, SmOptions};
use common::world::World;
use serde_json::{Value, json};
use std::path::Path;

/// Runs the application; its JSON answer. Fails the test when Node or the libraries are
/// missing (scripts/test-deps.sh installs them).
fn app(w: &World, args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("target/test-deps/node/node_modules");
    assert!(
        modules.join("@sap/xssec/package.json").exists(),
        "{} has no @sap/xssec: run scripts/test-deps.sh",
        modules.display()
    );
    let o = std::process::Command::new("node")
        .arg(root.join("tests/sap-libraries/fetch-token.js"))
        .args(args)
        .env("NODE_PATH", &modules)
        .env("NODE_EXTRA_CA_CERTS", &w.ca_file)
        .env_remove("VCAP_SERVICES")
        .env_remove("SERVICE_BINDING_ROOT")
        .output()
        .expect("node (scripts/test-deps.sh needs Node.js)");
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(out.trim()).unwrap_or_else(|_| {
        panic!(
            "no answer from the application: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// The application gets a token as `client` with credential `name` in its layout.
fn assert_token(w: &World, name: &str, kind: &str, layout: &str, client: &str, when: &str) {
    let target = w.target(name);
    let r = if layout == "servicebinding" {
        let root = target.parent().unwrap().to_str().unwrap().to_string();
        app(w, &["servicebinding", &root, name, kind])
    } else {
        app(w, &["files", target.to_str().unwrap(), kind])
    };
    assert_eq!(r["ok"], true, "{when}: {name} ({layout}): {r}");
    assert_eq!(r["client"], client, "{when}: {name} ({layout}): {r}");
    for own in ["cert.pem", "bundle.pem", "credentials.json", "token_url"] {
        assert!(
            !r["fields"].as_array().unwrap().contains(&json!(own)),
            "{when}: {name} ({layout}) shows {own} as a credential field: {r}"
        );
    }
}

fn rotate(w: &World, cfg: &Path, args: &[&str]) {
    let mut all = vec!["rotate"];
    all.extend_from_slice(args);
    let (code, out, err) = w.certrot(cfg, &all);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn service_manager_rotations_and_import_are_read_by_xssec_in_both_layouts() {
    let w = World::new(SmOptions {
        seconds_per_day: 14_400,
        ..SmOptions::default()
    });
    let mut creds = Vec::new();
    let mut expect = Vec::new();
    for (kind, instance_kind) in [
        ("xsuaa", InstanceKind::Xsuaa),
        ("identity", InstanceKind::Identity),
    ] {
        for layout in ["files", "servicebinding"] {
            let name = format!("{kind}-{}", &layout[..5]);
            let client = format!("sb-{name}");
            let instance = w.stack.sm.add_instance(instance_kind, &client);
            let mut extra = if kind == "identity" {
                format!("issuer.app_identifier = {name:?}\ncheck.app_tid = \"sandbox-tenant\"\n")
            } else {
                String::new()
            };
            // The servicebinding ones check through discovery: Identity Authentication's
            // document names its one token endpoint; XSUAA's (below, without the mTLS
            // alias) names the secrets host, so certrot must use certurl.
            if layout == "servicebinding" {
                let base = if kind == "identity" {
                    w.stack.tokens.ias_base.clone()
                } else {
                    w.stack.tokens.plain_base.clone()
                };
                extra.push_str(&format!(
                    "check.discovery_url = \"{base}/.well-known/openid-configuration\"\n"
                ));
            }
            creds.push(w.credential(
                &name,
                kind,
                &instance,
                &format!("target.layout = {layout:?}\n{extra}"),
            ));
            expect.push((name, kind, layout, client));
        }
    }
    // Import-only credentials take generations of the others as service keys.
    let imports = [
        ("imported-files", "xsuaa", "files", "xsuaa-files"),
        (
            "imported-servicebinding",
            "xsuaa",
            "servicebinding",
            "xsuaa-files",
        ),
        (
            "imported-ias",
            "identity",
            "servicebinding",
            "identity-files",
        ),
    ];
    for (name, kind, layout, _) in imports {
        creds.push(format!(
            "[[credential]]\nname = {name:?}\nkind = {kind:?}\ntarget.path = {:?}\ntarget.layout = {layout:?}\n\
             check.ca_file = {:?}\ncheck.system_roots = false\ncheck.app_tid = \"sandbox-tenant\"\n",
            w.target(name).display().to_string(),
            w.ca_file.display().to_string(),
        ));
    }
    w.stack.tokens.discovery_without_mtls_alias(true);
    let cfg = w.config(None, &creds);
    let issued: Vec<&str> = expect.iter().map(|(n, ..)| n.as_str()).collect();
    rotate(&w, &cfg, &[&["--if-due"], &issued[..]].concat());
    for (name, kind, layout, client) in &expect {
        assert_token(&w, name, kind, layout, client, "first binding");
    }
    // Rotations: the Identity tokens without, then with azp.
    for (round, azp) in [("second binding", false), ("third binding", true)] {
        w.stack.tokens.ias_tokens_with_azp(azp);
        rotate(&w, &cfg, &[&["--now"], &issued[..]].concat());
        for (name, kind, layout, client) in &expect {
            assert_token(&w, name, kind, layout, client, round);
        }
    }
    // Import (of a service key shaped like the binding's credentials).
    for (name, kind, layout, from) in imports {
        let key = w.root().join(format!("key-{name}.json"));
        let fields = std::fs::read(w.target(from).join("..data/credentials.json")).unwrap();
        std::fs::write(&key, fields).unwrap();
        let (code, out, err) = w.certrot(
            &cfg,
            &["import", name, "--service-key", key.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{out}{err}");
        assert_token(
            &w,
            name,
            kind,
            layout,
            &format!("sb-{from}"),
            "after import",
        );
    }
}

#[test]
fn csr_rotations_keep_every_service_key_field_and_are_read_by_xssec() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = common::DiskCa::new(tmp.path(), "Apps Issuing CA");
    let w = World::trusting(SmOptions::default(), std::slice::from_ref(&ca.pem));
    let signer = format!(
        "{{ type = \"local-ca\", ca_cert = {:?}, ca_key = {:?}, validity = \"1d\" }}",
        ca.cert_file.display().to_string(),
        ca.key_file.display().to_string()
    );
    let csr = |name: &str, layout: &str, extra: &str| {
        w.stack.tokens.register_dn(
            &format!("sb-{name}"),
            &format!("CN={name}"),
            "CN=Apps Issuing CA",
        );
        format!(
            "[[credential]]\nname = {name:?}\ntarget.path = {:?}\ntarget.layout = {layout:?}\n\
             check.ca_file = {:?}\ncheck.system_roots = false\ncheck.client_id = \"sb-{name}\"\n\
             check.token_url = {:?}\ncheck.attempts = 1\nissuer.type = \"csr\"\n\
             issuer.subject = \"CN={name}\"\nissuer.signer = {signer}\n{extra}\n",
            w.target(name).display().to_string(),
            w.ca_file.display().to_string(),
            w.stack.tokens.url,
        )
    };
    let cert_base = w.stack.tokens.cert_base.clone();
    let plain_base = w.stack.tokens.plain_base.clone();
    let fields = format!(
        "fields.certurl = {cert_base:?}\nfields.url = {plain_base:?}\nfields.xsappname = \"fresh!t1\"\n"
    );
    let mut creds = Vec::new();
    for layout in ["files", "servicebinding"] {
        creds.push(csr(&format!("carried-{layout}"), layout, ""));
        creds.push(csr(&format!("fresh-{layout}"), layout, &fields));
    }
    creds.push(csr("bare", "files", ""));
    let cfg = w.config(None, &creds);
    // config check: the csr credentials without [credential.fields] certurl are named.
    let (code, out, err) = w.certrot(&cfg, &["config", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    let warned: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("warning:") && l.contains("certurl"))
        .collect();
    assert_eq!(warned.len(), 3, "{out}");
    assert!(!out.contains("\"fresh-files\": its csr"), "{out}");

    // carried-*: imported from a service key, then rotated by the csr issuer.
    for layout in ["files", "servicebinding"] {
        let name = format!("carried-{layout}");
        let (chain, key) = ca.leaf(&name);
        let sk = json!({"credentials": {
            "clientid": format!("sb-{name}"), "certificate": chain, "key": key,
            "certurl": cert_base, "url": plain_base, "uaadomain": "127.0.0.1",
            "xsappname": "carried!t1", "identityzone": "sandbox", "tenantid": "t-1",
            "credential-type": "x509", "domains": ["127.0.0.1"],
            // Written by earlier certrot versions; not a service-key field.
            "token_url": w.stack.tokens.url,
        }});
        let file = w.root().join(format!("{name}.json"));
        std::fs::write(&file, sk.to_string()).unwrap();
        let (code, out, err) = w.certrot(
            &cfg,
            &["import", &name, "--service-key", file.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{out}{err}");
        assert_token(
            &w,
            &name,
            "xsuaa",
            layout,
            &format!("sb-{name}"),
            "after import",
        );
    }
    for round in ["first csr rotation", "second csr rotation"] {
        for layout in ["files", "servicebinding"] {
            for name in [format!("carried-{layout}"), format!("fresh-{layout}")] {
                let before = std::fs::read(w.target(&name).join("..data/cert.pem")).ok();
                rotate(&w, &cfg, &["--now", &name]);
                let after = std::fs::read(w.target(&name).join("..data/cert.pem")).unwrap();
                assert_ne!(before, Some(after), "{round}: {name} not rotated");
                assert_token(&w, &name, "xsuaa", layout, &format!("sb-{name}"), round);
            }
        }
        let written: Value = serde_json::from_slice(
            &std::fs::read(w.target("carried-files").join("credentials.json")).unwrap(),
        )
        .unwrap();
        for (field, value) in [
            ("certurl", json!(cert_base)),
            ("url", json!(plain_base)),
            ("uaadomain", json!("127.0.0.1")),
            ("xsappname", json!("carried!t1")),
            ("identityzone", json!("sandbox")),
            ("tenantid", json!("t-1")),
            ("domains", json!(["127.0.0.1"])),
            ("clientid", json!("sb-carried-files")),
        ] {
            assert_eq!(written[field], value, "{round}: {field}: {written}");
        }
        assert!(written.get("token_url").is_none(), "{written}");
        let fresh: Value = serde_json::from_slice(
            &std::fs::read(w.target("fresh-files").join("credentials.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(fresh["xsappname"], "fresh!t1", "{fresh}");
        assert_eq!(fresh["certurl"], json!(cert_base), "{fresh}");
    }
    // A generation without certurl works for certrot's own check, but `check` says what SAP's
    // libraries would miss.
    rotate(&w, &cfg, &["--now", "bare"]);
    let (_, out, _) = w.certrot(&cfg, &["check", "bare", "carried-files"]);
    let bare: Vec<&str> = out.lines().filter(|l| l.contains("no certurl")).collect();
    assert_eq!(bare.len(), 1, "{out}");
    // In the servicebinding layout the domains array keeps its type through .metadata.
    let meta: Value = serde_json::from_slice(
        &std::fs::read(w.target("carried-servicebinding").join(".metadata")).unwrap(),
    )
    .unwrap();
    assert!(
        meta["credentialProperties"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "domains", "format": "json"})),
        "{meta}"
    );
}
