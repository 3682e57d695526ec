//! The `certrot` binary: parse arguments, run, exit with the command's code.

use clap::Parser;

fn main() {
    // One crypto provider for every TLS client and server in the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = certrot::cli::Cli::parse();
    std::process::exit(certrot::cli::run(cli));
}
