//! The tokio runtime of the commands that need one (`run`, `rotate`, `sandbox`, `demo`):
//! multi-threaded with two workers — certrot's work is network waits and small bursts of
//! crypto, and the machines it runs on are often small.

/// A runtime, or a message for the user.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}
