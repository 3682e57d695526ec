//! The directory target on a real filesystem: layout, permissions, refusal of unsafe
//! directories and planted links, rollback, pruning, staging clean-up, servicebinding layout.

mod common;
use certrot::config::Layout;
use certrot::store::{DirectoryTarget, TargetError};
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use time::{Duration, OffsetDateTime};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn layout_and_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("orders");
    let t = dir_target(&path, 3, Layout::Files);
    let ca = certrot_sandbox::ca::LocalCa::with_intermediate("perm CA").unwrap();
    let g = generation(&issue(&ca, "orders", Duration::hours(1), Duration::days(7)));
    let name = t.commit(&g, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(mode(&path), 0o700);
    assert_eq!(mode(&path.join(&name)), 0o700);
    assert_eq!(
        std::fs::read_link(path.join("..data")).unwrap().to_str(),
        Some(name.as_str())
    );
    for f in certrot::store::binding::OWN_FILES {
        assert_eq!(mode(&path.join(&name).join(f)), 0o600, "{f}");
        assert_eq!(
            std::fs::read_link(path.join(f)).unwrap(),
            std::path::Path::new("..data").join(f)
        );
    }
    // cert.pem holds the 3-certificate chain leaf first; key.pem is PKCS#8.
    let cert = std::fs::read_to_string(path.join("cert.pem")).unwrap();
    assert_eq!(cert.matches("BEGIN CERTIFICATE").count(), 3);
    assert!(
        std::fs::read_to_string(path.join("key.pem"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let back = t.read_current().unwrap().unwrap();
    assert_eq!(
        back.generation.leaf().fingerprint_sha256,
        g.leaf().fingerprint_sha256
    );
    // bundle.pem alone is a consistent pair.
    let bundle = std::fs::read(path.join("bundle.pem")).unwrap();
    let b =
        certrot::generation::Generation::from_pem(&bundle, "bundle", &bundle, "bundle").unwrap();
    assert_eq!(b.leaf().serial, g.leaf().serial);
}

#[test]
fn group_readable_mode_gives_group_search_on_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("orders");
    let mut cfg = certrot::config::DirectoryTarget {
        path: path.clone(),
        mode: certrot::units::FileMode(0o640),
        owner: None,
        group: None,
        layout: Layout::Files,
        binding: Default::default(),
        keystore: None,
    };
    cfg.mode = certrot::units::FileMode(0o640);
    let t = certrot::store::DirectoryTarget::new(cfg, 3);
    let ca = certrot_sandbox::ca::LocalCa::new("m").unwrap();
    let name = t
        .commit(
            &generation(&issue(&ca, "o", Duration::hours(1), Duration::days(7))),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert_eq!(mode(&path), 0o750);
    assert_eq!(mode(&path.join(&name).join("key.pem")), 0o640);
}

#[test]
fn unsafe_directories_are_refused_and_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = certrot_sandbox::ca::LocalCa::new("unsafe CA").unwrap();
    let g = generation(&issue(&ca, "orders", Duration::hours(1), Duration::days(7)));

    // World-writable directory.
    let ww = tmp.path().join("ww");
    std::fs::create_dir(&ww).unwrap();
    std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = dir_target(&ww, 3, Layout::Files)
        .commit(&g, OffsetDateTime::now_utc())
        .unwrap_err();
    assert!(matches!(e, TargetError::Unsafe { .. }));
    assert!(
        e.to_string()
            .contains("writable by group or others (mode 0777)"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&ww).unwrap().count(), 0);

    // The target path is a symlink.
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = dir_target(&link, 3, Layout::Files)
        .commit(&g, OffsetDateTime::now_utc())
        .unwrap_err();
    assert!(e.to_string().contains("it is a symlink"), "{e}");
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);

    // Owned by another, non-root user (only root can arrange that).
    if rustix::process::geteuid().is_root() {
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::chown(&other, Some(4242), Some(4242)).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = dir_target(&other, 3, Layout::Files)
            .commit(&g, OffsetDateTime::now_utc())
            .unwrap_err();
        assert!(e.to_string().contains("owned by uid 4242"), "{e}");
        assert_eq!(std::fs::metadata(&other).unwrap().uid(), 4242);
    }

    // A planted `..data` directory stops the commit before anything is written.
    let planted = tmp.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(planted.join("..data")).unwrap();
    let e = dir_target(&planted, 3, Layout::Files)
        .commit(&g, OffsetDateTime::now_utc())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("..data: refusing to use this target: it is not a symlink"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 1);

    // A real file where certrot keeps a visible link is not overwritten.
    let adopt = tmp.path().join("adopt");
    std::fs::create_dir(&adopt).unwrap();
    std::fs::set_permissions(&adopt, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(adopt.join("cert.pem"), "operator's own file").unwrap();
    let e = dir_target(&adopt, 3, Layout::Files)
        .commit(&g, OffsetDateTime::now_utc())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cert.pem: refusing to use this target: it is a real file"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(adopt.join("cert.pem")).unwrap(),
        "operator's own file"
    );
}

#[test]
fn planted_symlinks_are_replaced_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("orders");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "do not touch").unwrap();
    std::os::unix::fs::symlink(&victim, path.join("key.pem")).unwrap();
    std::os::unix::fs::symlink(&victim, path.join("..data")).unwrap();
    let ca = certrot_sandbox::ca::LocalCa::new("plant CA").unwrap();
    let g = generation(&issue(&ca, "orders", Duration::hours(1), Duration::days(7)));
    // `..data` pointing outside the target is refused…
    let t = dir_target(&path, 3, Layout::Files);
    let e = t.commit(&g, OffsetDateTime::now_utc()).unwrap_err();
    assert!(
        e.to_string().contains("not at a generation directory"),
        "{e}"
    );
    // …and once it is gone, the planted key.pem link is replaced, not written through.
    std::fs::remove_file(path.join("..data")).unwrap();
    t.commit(&g, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
    assert_eq!(
        std::fs::read_link(path.join("key.pem")).unwrap(),
        std::path::Path::new("..data/key.pem")
    );
}

#[test]
fn keep_generations_prunes_and_rollback_switches_back() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("orders");
    let t = dir_target(&path, 2, Layout::Files);
    let ca = certrot_sandbox::ca::LocalCa::new("prune CA").unwrap();
    let mut serials = Vec::new();
    let mut names = Vec::new();
    let start = OffsetDateTime::now_utc();
    for i in 0..5 {
        let g = generation(&issue(&ca, "orders", Duration::hours(1), Duration::days(7)));
        serials.push(g.leaf().serial.clone());
        names.push(t.commit(&g, start + Duration::seconds(i)).unwrap());
    }
    // current + 2 kept
    assert_eq!(t.generations().unwrap(), names[2..].to_vec());
    let fp = |t: &DirectoryTarget| t.previous().unwrap().2.leaf().fingerprint_sha256.clone();
    // The generation switched to must be the one checked.
    let e = t.rollback("another fingerprint").unwrap_err();
    assert!(
        e.to_string().contains("changed since it was checked"),
        "{e}"
    );
    assert_eq!(t.current_dir_name().unwrap().as_ref(), Some(&names[4]));
    let (from, to, g) = t.rollback(&fp(&t)).unwrap();
    assert_eq!(
        (from.as_str(), to.as_str()),
        (names[4].as_str(), names[3].as_str())
    );
    assert_eq!(g.leaf().serial, serials[3]);
    assert_eq!(
        t.read_current().unwrap().unwrap().generation.leaf().serial,
        serials[3]
    );
    let (_, to, _) = t.rollback(&fp(&t)).unwrap();
    assert_eq!(to, names[2]);
    let e = t.rollback("any").unwrap_err();
    assert!(e.to_string().contains("no generation older than"), "{e}");
    // A damaged previous generation is not switched to.
    let t2 = dir_target(&tmp.path().join("dmg"), 3, Layout::Files);
    let a = t2
        .commit(
            &generation(&issue(&ca, "a", Duration::hours(1), Duration::days(7))),
            start,
        )
        .unwrap();
    t2.commit(
        &generation(&issue(&ca, "b", Duration::hours(1), Duration::days(7))),
        start + Duration::seconds(1),
    )
    .unwrap();
    std::fs::write(tmp.path().join("dmg").join(&a).join("key.pem"), "garbage").unwrap();
    let before = t2.current_dir_name().unwrap();
    let e = t2.previous().unwrap_err();
    assert!(e.to_string().contains("key.pem"), "{e}");
    assert_eq!(t2.current_dir_name().unwrap(), before);
}

#[test]
fn half_written_generations_are_removed_on_next_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("orders");
    let t = dir_target(&path, 3, Layout::Files);
    let ca = certrot_sandbox::ca::LocalCa::new("staging CA").unwrap();
    t.commit(
        &generation(&issue(&ca, "a", Duration::hours(1), Duration::days(7))),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    std::fs::create_dir(path.join("..staging.2026_01_01_00_00_00.000000000")).unwrap();
    std::fs::write(
        path.join("..staging.2026_01_01_00_00_00.000000000/cert.pem"),
        "half",
    )
    .unwrap();
    t.commit(
        &generation(&issue(&ca, "b", Duration::hours(1), Duration::days(7))),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert!(
        !path
            .join("..staging.2026_01_01_00_00_00.000000000")
            .exists()
    );
}

#[test]
fn servicebinding_layout_writes_one_file_per_field() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sb");
    let t = dir_target(&path, 3, Layout::Servicebinding);
    let ca = certrot_sandbox::ca::LocalCa::new("sb CA").unwrap();
    let i = issue(&ca, "sb", Duration::hours(1), Duration::days(7));
    let sk = service_key(&i, "sb-client");
    let g = certrot::servicekey::parse_service_key(
        sk.to_string().as_bytes(),
        "sk",
        &Default::default(),
    )
    .unwrap();
    t.commit(&g, OffsetDateTime::now_utc()).unwrap();
    assert_eq!(
        std::fs::read_to_string(path.join("clientid")).unwrap(),
        "sb-client"
    );
    assert_eq!(
        std::fs::read_to_string(path.join("certurl")).unwrap(),
        "https://t.authentication.cert.example.invalid"
    );
    assert_eq!(std::fs::read_to_string(path.join("type")).unwrap(), "xsuaa");
    assert_eq!(
        std::fs::read_to_string(path.join("certificate")).unwrap(),
        i.chain_pem
    );
    assert_eq!(mode(&path.join("..data/key")), 0o600);
}

#[test]
fn owner_and_group_applied_when_root() {
    if !rustix::process::geteuid().is_root() {
        // chown needs root; CI runs as root, where the assertions below apply.
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("owned");
    let cfg = certrot::config::DirectoryTarget {
        path: path.clone(),
        mode: certrot::units::FileMode(0o640),
        owner: Some(4243),
        group: Some(4244),
        layout: Layout::Files,
        binding: Default::default(),
        keystore: None,
    };
    let t = certrot::store::DirectoryTarget::new(cfg, 3);
    let ca = certrot_sandbox::ca::LocalCa::new("own").unwrap();
    for _ in 0..2 {
        let g = generation(&issue(&ca, "o", Duration::hours(1), Duration::days(7)));
        let name = t.commit(&g, OffsetDateTime::now_utc()).unwrap();
        for p in [
            path.clone(),
            path.join(&name),
            path.join(&name).join("key.pem"),
        ] {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (4243, 4244), "{}", p.display());
        }
    }
}

/// No visible link dangles, and each names a file of the current generation.
fn assert_no_dangling_links(path: &std::path::Path) {
    for e in std::fs::read_dir(path).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_symlink() {
            assert!(std::fs::metadata(&p).is_ok(), "{} dangles", p.display());
        }
    }
}

#[test]
fn servicebinding_layout_shows_exactly_the_current_generations_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sb");
    let t = dir_target(&path, 3, Layout::Servicebinding);
    let ca = certrot_sandbox::ca::LocalCa::new("sb CA").unwrap();
    let with_field = |extra: Option<&str>| {
        let i = issue(&ca, "sb", Duration::hours(1), Duration::days(7));
        let mut sk = service_key(&i, "sb-client");
        if let Some(f) = extra {
            sk["credentials"][f] = serde_json::json!("https://sb.example.invalid");
        }
        certrot::servicekey::parse_service_key(sk.to_string().as_bytes(), "sk", &Default::default())
            .unwrap()
    };
    t.commit(&with_field(Some("sburl")), OffsetDateTime::now_utc())
        .unwrap();
    assert!(path.join("sburl").exists());
    // certrot's own files stay inside the generation, not among the binding's fields.
    for own in certrot::store::binding::OWN_FILES {
        assert!(
            std::fs::symlink_metadata(path.join(own)).is_err(),
            "{own} is shown"
        );
        assert!(path.join("..data").join(own).exists(), "{own} missing");
    }
    assert!(path.join(".metadata").exists());
    t.commit(&with_field(None), OffsetDateTime::now_utc())
        .unwrap();
    assert!(
        std::fs::symlink_metadata(path.join("sburl")).is_err(),
        "the link of a field the new generation lacks is left behind"
    );
    assert_no_dangling_links(&path);
    // An operator's own link or file beside the fields is left alone.
    std::os::unix::fs::symlink("/etc/hostname", path.join("mine")).unwrap();
    let (_, _, back) = {
        let (_, _, g) = t.previous().unwrap();
        t.rollback(&g.leaf().fingerprint_sha256.clone()).unwrap()
    };
    assert_eq!(back.field("sburl"), Some("https://sb.example.invalid"));
    assert_eq!(
        std::fs::read_to_string(path.join("sburl")).unwrap(),
        "https://sb.example.invalid",
        "rollback shows the restored generation's fields"
    );
    assert!(std::fs::symlink_metadata(path.join("mine")).is_ok());
    assert_no_dangling_links(&path);
    // A target an earlier version wrote (own files linked): those links stay.
    std::os::unix::fs::symlink("..data/cert.pem", path.join("cert.pem")).unwrap();
    t.commit(&with_field(None), OffsetDateTime::now_utc())
        .unwrap();
    assert!(
        std::fs::metadata(path.join("cert.pem")).is_ok(),
        "an upgrade took cert.pem away from its consumers"
    );
    assert_no_dangling_links(&path);
}
