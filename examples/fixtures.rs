//! Writes a benchmark workspace: N credentials (7-day ECDSA certificates from a local CA)
//! already committed to directory targets, and the matching `certrot.toml`.
//!
//! Usage: `fixtures DIR N` — prints the config path.

use certrot::config::Config;
use certrot_sandbox::ca::KeyAlg;
use certrot_sandbox::fixtures::{Spec, write_workspace};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: fixtures DIR N")?);
    let n: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("usage: fixtures DIR N")?;
    let specs: Vec<Spec> = (0..n)
        .map(|i| Spec {
            name: format!("cred{i:04}"),
            alg: KeyAlg::EcdsaP256,
            age: time::Duration::hours((i % 150) as i64),
            lifetime: time::Duration::days(7),
        })
        .collect();
    let cfg = write_workspace(&dir, &specs)?;
    let config = Config::load(&cfg).map_err(|e| e.to_string())?;
    let rt = certrot::rt::runtime()?;
    for cred in &config.credentials {
        let key = dir.join("keys").join(format!("{}.json", cred.name));
        rt.block_on(async {
            let backend = certrot::store::Backend::open(cred, &config.state_dir)
                .await
                .map_err(|e| e.to_string())?;
            certrot::manual::import(cred, &backend, &key, None, false).await
        })?;
    }
    println!("{}", cfg.display());
    Ok(())
}
