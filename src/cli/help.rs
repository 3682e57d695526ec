//! What the CLI tells about itself: its version with the commit it was built from, shell
//! completions and the man page, all generated from the clap definitions.

use super::Cli;
use clap::CommandFactory;

/// `certrot --version`: the release and the commit (see `build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CERTROT_COMMIT"), ")");

/// Commands that read no configuration file: `--config` is hidden from their help.
const WITHOUT_CONFIG: [&str; 4] = ["demo", "sandbox", "completions", "man"];

/// The command line as clap sees it, with `--config` hidden where it means nothing.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let Some(config) = cmd
        .get_arguments()
        .find(|a| a.get_id() == "config")
        .cloned()
    else {
        return cmd;
    };
    // A subcommand that has an argument of its own by that name does not get the global one.
    let hidden = config.global(false).hide(true);
    for name in WITHOUT_CONFIG {
        if cmd.find_subcommand(name).is_some() {
            let arg = hidden.clone();
            cmd = cmd.mut_subcommand(name, move |sub| sub.arg(arg));
        }
    }
    cmd
}

/// Parses the process's arguments (exits with clap's message and code on a usage error).
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> i32 {
    clap_complete::generate(shell, &mut command(), "certrot", &mut std::io::stdout());
    0
}

/// Writes the man page (roff) to stdout: `certrot man > certrot.1`.
pub fn man() -> i32 {
    let mut out = std::io::stdout().lock();
    match clap_mangen::Man::new(command()).render(&mut out) {
        Ok(()) => 0,
        // `certrot man | head`: the reader had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("certrot man: {e}");
            1
        }
    }
}
