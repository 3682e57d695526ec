//! What the CLI tells about itself: its version with the commit it was built from, shell
//! completions and the man page, all generated from the clap definitions.

use super::Cli;
use clap::CommandFactory;

/// `certrot --version`: the release and the commit (see `build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CERTROT_COMMIT"), ")");

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> i32 {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "certrot",
        &mut std::io::stdout(),
    );
    0
}

/// Writes the man page (roff) to stdout: `certrot man > certrot.1`.
pub fn man() -> i32 {
    let mut out = std::io::stdout().lock();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => 0,
        // `certrot man | head`: the reader had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("certrot man: {e}");
            1
        }
    }
}
