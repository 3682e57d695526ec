//! Writes the fuzzers' seed corpus: one directory per entry of `certrot::inputs::ALL`,
//! holding the valid inputs the property tests start from.
//!
//! Usage: `cargo run --example fuzz_seeds -- DIR`

#[allow(dead_code)]
#[path = "../tests/common/seeds.rs"]
mod seeds;

fn main() -> Result<(), String> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?);
    for (name, _) in certrot::inputs::ALL {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        for (i, seed) in seeds::for_input(name).into_iter().enumerate() {
            let p = sub.join(format!("seed-{i}"));
            std::fs::write(&p, seed).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(())
}
