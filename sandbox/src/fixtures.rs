//! Ready-made workspaces: a local CA, service keys for credentials at chosen ages, and a
//! configuration pointing at directory targets. Used by `certrot demo`, tests and benches.

use super::ca::{KeyAlg, LocalCa};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// One credential to create: name, key algorithm, age of its certificate, lifetime.
pub struct Spec {
    pub name: String,
    pub alg: KeyAlg,
    pub age: Duration,
    pub lifetime: Duration,
}

/// Writes `ca.pem`, `keys/<name>.json` (service-key shaped) and `certrot.toml` under `root`,
/// with targets under `root/targets` and state under `root/state`. Returns the config path.
pub fn write_workspace(root: &Path, specs: &[Spec]) -> Result<PathBuf, String> {
    let e = |what: &str, err: &dyn std::fmt::Display| format!("{what}: {err}");
    std::fs::create_dir_all(root.join("keys")).map_err(|x| e(&root.display().to_string(), &x))?;
    let ca = LocalCa::new("certrot demo CA").map_err(|x| e("CA", &x))?;
    super::write_private(&root.join("ca.pem"), ca.root_pem().as_bytes())
        .map_err(|x| e("ca.pem", &x))?;
    let now = OffsetDateTime::now_utc();
    let mut toml = format!(
        "# Written by certrot's sandbox.\nstate_dir = {:?}\n\n[daemon]\nlisten = \"\"\n\n\
         [defaults]\nrenew_before = \"33%\"\ncritical_before = \"24h\"\njitter = \"0%\"\n",
        root.join("state").display().to_string()
    );
    for s in specs {
        let nb = now - s.age;
        let issued = ca
            .issue(&format!("{} client", s.name), s.alg, nb, nb + s.lifetime)
            .map_err(|x| e(&s.name, &x))?;
        let key = serde_json::json!({
            "credentials": {
                "clientid": format!("sb-{}!t1234", s.name),
                "certificate": issued.chain_pem,
                "key": issued.key_pem.as_str(),
                "certurl": "https://demo.authentication.cert.example.invalid",
                "url": "https://demo.authentication.example.invalid",
                "credential-type": "x509",
                "xsappname": format!("{}!t1234", s.name),
            }
        });
        let path = root.join("keys").join(format!("{}.json", s.name));
        super::write_private(&path, &serde_json::to_vec_pretty(&key).unwrap_or_default())
            .map_err(|x| e(&path.display().to_string(), &x))?;
        let _ = write!(
            toml,
            "\n[[credential]]\nname = {:?}\nkind = \"xsuaa\"\ntarget.path = {:?}\n",
            s.name,
            root.join("targets").join(&s.name).display().to_string()
        );
    }
    let cfg = root.join("certrot.toml");
    super::write_private(&cfg, toml.as_bytes()).map_err(|x| e(&cfg.display().to_string(), &x))?;
    Ok(cfg)
}
