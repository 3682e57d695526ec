//! `certrot rotate`: runs the pipeline for the selected credentials on one runtime and
//! prints one summary line (or JSON object) per credential. Exit codes: 0 every credential
//! fine (rotated or not due), 1 at least one failed (its old generation kept), 2 usage or
//! configuration error, 75 locked by another process.

use crate::config::Config;
use crate::lock::EXIT_LOCKED;
use crate::rotate::{Options, Rotator};
use std::path::Path;
use std::sync::Arc;

/// Runs `certrot rotate`; returns the exit code.
pub fn run(
    config_path: &Path,
    names: &[String],
    opts: Options,
    json: bool,
    parallel: Option<usize>,
) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return super::fail_config(&e),
    };
    let selected: Vec<_> = match config.select(names) {
        Ok(v) => v.into_iter().cloned().collect(),
        Err(e) => {
            eprintln!("certrot: {e}");
            return super::EXIT_USAGE;
        }
    };
    let parallel = parallel
        .unwrap_or(config.daemon.max_parallel as usize)
        .max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certrot: cannot start the runtime: {e}");
            return 1;
        }
    };
    let rotator = Arc::new(Rotator::new(Arc::new(config)));
    let summaries = rt.block_on(rotator.rotate_all(selected, opts, parallel));
    for s in &summaries {
        if json {
            println!("{}", serde_json::to_string(s).unwrap_or_default());
        } else {
            println!("{}", s.line());
        }
    }
    // A failed hook is reported with exit code 1; the committed generation stays.
    if summaries.iter().any(|s| s.failed() || s.hooks_failed()) {
        1
    } else if summaries.iter().any(|s| s.locked()) {
        EXIT_LOCKED
    } else {
        0
    }
}
