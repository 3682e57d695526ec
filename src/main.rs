//! The `certrot` binary: parse arguments, run, exit with the command's code.

fn main() {
    // `certrot status | head -1`: a reader that stopped reading ends the process quietly, as
    // SIGPIPE ends other tools (status 141), instead of a panic report.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info)
    }));
    // One crypto provider for every TLS client and server in the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = certrot::cli::parse_args();
    std::process::exit(certrot::cli::run(cli));
}
