//! Configurations for fleets through the real binary: `include = "conf.d/*.toml"` adds the
//! credentials of every matching drop-in file in name order; an error in a drop-in names
//! that file, its line and the credential's index there; a name or target used in two files
//! names both; a drop-in may hold credentials only; a drop-in directory that others could
//! write, or that is missing, is refused; and a 6,000-credential configuration (over the
//! old 1 MiB limit) loads.

mod common;
use common::{run, text};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn credential(name: &str, extra: &str) -> String {
    format!("[[credential]]\nname = \"{name}\"\ntarget.path = \"/srv/certrot/{name}\"\n{extra}\n")
}

fn fleet(dir: &Path) -> std::path::PathBuf {
    let conf_d = dir.join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::set_permissions(&conf_d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(conf_d.join("20-billing.toml"), credential("billing", "")).unwrap();
    std::fs::write(
        conf_d.join("10-orders.toml"),
        format!(
            "{}{}",
            credential("orders", ""),
            credential("orders-eu", "")
        ),
    )
    .unwrap();
    // Not drop-ins: an editor's swap file, a backup, another suffix.
    std::fs::write(conf_d.join(".10-orders.toml.swp"), "garbage").unwrap();
    std::fs::write(conf_d.join("10-orders.toml~"), "garbage").unwrap();
    std::fs::write(conf_d.join("README"), "not toml").unwrap();
    let main = dir.join("certrot.toml");
    std::fs::write(
        &main,
        format!(
            "state_dir = \"/var/lib/certrot\"\ninclude = \"conf.d/*.toml\"\n{}",
            credential("main", "")
        ),
    )
    .unwrap();
    main
}

fn config_check(cfg: &Path) -> (Option<i32>, String, String) {
    let o = run(&["--config", cfg.to_str().unwrap(), "config", "check"]);
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

#[test]
fn drop_in_files_add_credentials_in_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let main = fleet(tmp.path());
    let (code, out, err) = config_check(&main);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("4 credential(s) (3 from included files)"),
        "{out}"
    );
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(order, ["main", "orders", "orders-eu", "billing"], "{out}");
}

#[test]
fn errors_in_drop_ins_name_their_file_and_place() {
    let tmp = tempfile::tempdir().unwrap();
    let main = fleet(tmp.path());
    let conf_d = tmp.path().join("conf.d");
    let billing = conf_d.join("20-billing.toml");

    // A bad value in the second credential of a drop-in.
    std::fs::write(
        &billing,
        format!(
            "{}{}",
            credential("billing", ""),
            credential("billing-eu", "renew_before = \"soon\"")
        ),
    )
    .unwrap();
    let (code, _, err) = config_check(&main);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!("{}:", billing.display()))
            && err.contains("renew_before")
            && err.lines().count() == 1,
        "{err}"
    );

    // A rule broken in a drop-in, found after parsing: the file, its [[credential]] line.
    std::fs::write(
        &billing,
        format!(
            "{}\n{}",
            credential("billing", ""),
            credential("billing-eu", "retire_after = \"400d\"")
        ),
    )
    .unwrap();
    let (_, _, err) = config_check(&main);
    assert!(
        err.starts_with(&format!(
            "certrot: {}:6:1: credential[1].retire_after",
            billing.display()
        )),
        "{err}"
    );

    // The same name in two files: both are named.
    std::fs::write(&billing, credential("orders", "")).unwrap();
    let (_, _, err) = config_check(&main);
    assert!(
        err.contains(&billing.display().to_string())
            && err.contains("is already the name of credential[0] of")
            && err.contains("10-orders.toml"),
        "{err}"
    );

    // The same target in two files.
    std::fs::write(
        &billing,
        "[[credential]]\nname = \"billing\"\ntarget.path = \"/srv/certrot/orders\"\n",
    )
    .unwrap();
    let (_, _, err) = config_check(&main);
    assert!(
        err.contains(&billing.display().to_string())
            && err.contains("is already the target of credential \"orders\""),
        "{err}"
    );

    // Anything but credentials belongs in the main file.
    std::fs::write(&billing, "state_dir = \"/tmp/elsewhere\"\n").unwrap();
    let (_, _, err) = config_check(&main);
    assert!(
        err.contains(&billing.display().to_string())
            && err.contains("holds [[credential]] tables only"),
        "{err}"
    );
}

#[test]
fn a_drop_in_directory_others_could_write_or_a_missing_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let main = fleet(tmp.path());
    let conf_d = tmp.path().join("conf.d");
    std::fs::set_permissions(&conf_d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, _, err) = config_check(&main);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("include") && err.contains("writable by group or others"),
        "{err}"
    );
    std::fs::set_permissions(&conf_d, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::rename(&conf_d, tmp.path().join("conf.d.off")).unwrap();
    let (code, _, err) = config_check(&main);
    assert_eq!(code, Some(2));
    assert!(err.contains("include") && err.contains("conf.d"), "{err}");
    // Wildcards only in the file name.
    std::fs::write(&main, "include = \"*/x.toml\"\n").unwrap();
    let (_, _, err) = config_check(&main);
    assert!(
        err.contains("only the file name may hold a wildcard"),
        "{err}"
    );
}

#[test]
fn a_fleet_configuration_over_a_mebibyte_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "state_dir = \"/var/lib/certrot\"\n[service_manager.main]\nservice_key = \"/etc/certrot/sm-key.json\"\n",
    );
    for i in 0..6_000 {
        text.push_str(&credential(
            &format!("app-{i:05}"),
            "issuer.instance_id = \"00000000-0000-0000-0000-000000000000\"\n\
             # a comment as operators write them, to make the file realistic in size\n",
        ));
    }
    assert!(text.len() > 1 << 20, "{}", text.len());
    let main = tmp.path().join("certrot.toml");
    std::fs::write(&main, text).unwrap();
    let (code, out, err) = config_check(&main);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("6000 credential(s)"), "{out}");
}
