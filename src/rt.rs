//! The tokio runtime of the commands that need one (`run`, `rotate`, `sandbox`, `demo`):
//! multi-threaded with two workers — certrot's work is network waits and small bursts of
//! crypto, and the machines it runs on are often small — and the blocking pool where their
//! disk work (writes and their sync calls) runs, off those two workers.

/// A runtime, or a message for the user.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Runs `work`, which blocks on the disk (writes and their sync calls), on the runtime's
/// blocking pool, in the caller's tracing span: the two workers go on with the other
/// pipelines in flight (their network and crypto) while this one waits for the disk. A
/// panic in `work` is the caller's panic, as if it had run inline (a commit that panicked
/// is never taken for one that failed cleanly); `Err` only when the runtime shut down
/// before `work` ran.
pub async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, std::io::Error> {
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(work)).await {
        Ok(t) => Ok(t),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(std::io::Error::other(format!("the disk work stopped: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// With one worker, disk work that waits for another task must not wait for ever: it
    /// runs off the worker, which goes on with that task.
    #[test]
    fn disk_work_leaves_the_worker_to_the_other_pipelines() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let outcome: bool = rt.block_on(async {
            let (tx, rx) = mpsc::channel::<()>();
            let blocked = tokio::spawn(on_blocking_pool(move || {
                rx.recv_timeout(Duration::from_secs(10)).is_ok()
            }));
            // Another pipeline's step, on the one worker.
            tokio::spawn(async move { tx.send(()).expect("send") })
                .await
                .expect("the other task ran");
            blocked.await.expect("join").expect("no panic")
        });
        assert!(outcome, "the disk work held the only worker");
    }

    /// A panic in disk work ends the calling task as a panic of its own would (the daemon
    /// and `rotate` count it as a pipeline that panicked), never as a clean error.
    #[test]
    fn a_panic_in_disk_work_is_the_callers_panic() {
        let rt = runtime().expect("runtime");
        let joined = rt
            .block_on(async { tokio::spawn(on_blocking_pool(|| -> u8 { panic!("disk") })).await });
        let e = joined.expect_err("the calling task panicked");
        assert!(e.is_panic(), "{e}");
    }
}
