//! Test helper for `tests/crash_consistency.rs`: commits the generations `g0..g3` found in
//! DIR to the directory target `DIR/target`, round-robin, until killed. Prints one line to
//! stdout after each completed commit, so the test can time its kills to this machine.
//!
//! Usage: `commit_loop DIR`

use certrot::config::{DirectoryTarget as DirCfg, Layout};
use certrot::generation::Generation;
use certrot::store::DirectoryTarget;
use certrot::units::FileMode;
use std::path::PathBuf;

fn main() -> Result<(), String> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: commit_loop DIR")?);
    let mut gens = Vec::new();
    for i in 0..4 {
        let read = |ext: &str| {
            let p = dir.join(format!("g{i}.{ext}"));
            std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let (chain, key) = (read("crt")?, read("key")?);
        gens.push(Generation::from_pem(&chain, "crt", &key, "key").map_err(|e| e.to_string())?);
    }
    let target = DirectoryTarget::new(
        DirCfg {
            path: dir.join("target"),
            mode: FileMode(0o600),
            owner: None,
            group: None,
            layout: Layout::Files,
            binding: Default::default(),
            keystore: None,
        },
        2,
    );
    for i in 0.. {
        target
            .commit(&gens[i % gens.len()], time::OffsetDateTime::now_utc())
            .map_err(|e| e.to_string())?;
        // Line-buffered: the test sees each line as soon as the commit has returned.
        println!("{i}");
    }
    Ok(())
}
