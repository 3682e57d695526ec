//! `certrot run`: the long-running service. One tokio runtime; a loop that sleeps until the
//! earliest event — a credential's renewal (with jitter and windows, via the policy), a retry
//! after backoff, a retirement deadline, the `check_schedule` and `probe_schedule` cron ticks,
//! or, with systemd's watchdog, the heartbeat — and hands rotations to the same pipeline (and locks) as
//! `certrot rotate`, at most `max_parallel` at once.
//!
//! Signals: SIGHUP reloads the configuration (a bad one is reported, the old stays);
//! SIGTERM/SIGINT stop: nothing new starts, in-flight rotations get a grace period and are
//! then abandoned at an await point — before their commit or after it, never inside it (a
//! commit holds the rotators' commit gate until the state write that records it, and the
//! stop takes the gate before it abandons anything). systemd: `READY=1` after the
//! first inspection, `STATUS=`, `RELOADING=1`/`READY=1` around reloads, `STOPPING=1`, and
//! `WATCHDOG=1` from the loop itself, so a stuck loop lets the watchdog fire.
//!
//! Wall-clock steps (set by hand, by NTP, a resume from suspend): each iteration compares how
//! far the wall clock and the monotonic clock advanced; a difference of 5 s or more re-plans
//! every credential from its certificate and state, shifts rests by the step, and runs the
//! checks and probes at once. The clock says when it is set ([`crate::clock::WatchedClock`],
//! a timerfd), which wakes the loop at once; only a clock that cannot tell makes the loop
//! wake every heartbeat to look. Between events the loop does not wake at all (`/healthz`
//! follows its plan: [`liveness`]).
//!
//! The loop ([`Scheduler`]) talks to the world through [`Executor`] and [`Clock`], so tests
//! drive it with a paused tokio clock and a recording executor.

mod http;
pub mod liveness;
pub(crate) mod memory;
pub mod schedule;

use crate::config::Config;
use crate::health::Metrics;
use crate::rotate::{Options, Rotator};
use schedule::{CredTimes, clock_step, cron_after, due, next_wake, times_for};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

/// A future the scheduler can spawn.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A re-inspection of every credential, giving their times.
pub type Inspection = Pin<Box<dyn Future<Output = Vec<CredTimes>> + Send>>;

pub use crate::clock::{Clock, SystemClock, TokioClock};

/// What the loop asks of the world.
pub trait Executor: Send + Sync + 'static {
    /// Re-inspects every credential (refreshing metrics) and returns their times.
    fn inspect_all(&self, now: OffsetDateTime) -> Inspection;
    /// Runs the pipeline (if due) for these credentials.
    fn rotate(&self, names: Vec<String>) -> Task;
    /// Token-checks every current generation.
    fn probe(&self) -> Task;
    /// `(check_schedule, probe_schedule)`.
    fn schedules(&self) -> (cron::Schedule, cron::Schedule);
    /// Re-reads the configuration; `Err` keeps the old one.
    fn reload(&self) -> Result<(), String>;
    /// One line for systemd's `STATUS=`.
    fn status_line(&self, times: &[CredTimes], now: OffsetDateTime) -> String;
    /// The credential `name` must wait for (its Service Manager access), if any.
    fn waits_for(&self, _name: &str) -> Option<String> {
        None
    }
    /// The gate a commit holds until the state write that records it
    /// ([`crate::rotate::CommitGate`]); a stop takes it before abandoning rotations.
    fn commit_gate(&self) -> Option<crate::rotate::CommitGate> {
        None
    }
}

/// Requests from outside the loop (signals, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Reload,
    Stop,
}

/// Logs when each credential runs next: every one named in `only` (just handled), or at
/// start the earliest [`schedule::NAMED_AT_START`] and a count of the rest.
fn log_next_runs(times: &[CredTimes], only: Option<&[String]>, now: OffsetDateTime) {
    let mut shown: Vec<&CredTimes> = times
        .iter()
        .filter(|t| only.is_none_or(|names| names.contains(&t.name)))
        .collect();
    // Soonest first; credentials that never run last.
    shown.sort_by_key(|t| (t.due_at().is_none(), t.due_at()));
    let limit = if only.is_some() {
        usize::MAX
    } else {
        schedule::NAMED_AT_START
    };
    for t in shown.iter().take(limit) {
        tracing::info!(credential = %t.name, "{} {}", t.name, schedule::next_run_words(t, now));
    }
    if shown.len() > limit {
        tracing::info!(
            "… and {} more credentials (`certrot status` lists them all)",
            shown.len() - limit
        );
    }
}

/// Messages to systemd (a no-op without `NOTIFY_SOCKET`).
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Loop settings.
#[derive(Clone, Copy, Debug)]
pub struct LoopSettings {
    /// With a watchdog (or a clock that cannot say when it is set) the loop wakes at least
    /// this often; otherwise only for its events.
    pub heartbeat: std::time::Duration,
    /// systemd's watchdog interval, if enabled.
    pub watchdog: Option<std::time::Duration>,
    /// A credential just handled is not handled again before this.
    pub rest: std::time::Duration,
    /// How long in-flight rotations may finish after a stop request.
    pub stop_grace: std::time::Duration,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            heartbeat: std::time::Duration::from_secs(30),
            watchdog: None,
            rest: std::time::Duration::from_secs(5),
            stop_grace: std::time::Duration::from_secs(3),
        }
    }
}

/// The scheduler loop.
pub struct Scheduler<E: Executor, C: Clock> {
    pub exec: Arc<E>,
    pub clock: Arc<C>,
    pub settings: LoopSettings,
    /// By when the loop must have run again, and how often it woke (for `/healthz`).
    pub liveness: Arc<liveness::Liveness>,
}

impl<E: Executor, C: Clock> Scheduler<E, C> {
    /// Runs until [`Control::Stop`] (or the control channel closes).
    pub async fn run(self, mut control: tokio::sync::mpsc::Receiver<Control>) {
        let exec = self.exec.clone();
        let mut times = exec.inspect_all(self.clock.now()).await;
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&exec.status_line(&times, self.clock.now())),
        ]);
        tracing::info!(credentials = times.len(), "certrot run: ready");
        log_next_runs(&times, None, self.clock.now());
        let (mut check_s, mut probe_s) = exec.schedules();
        let now = self.clock.now();
        let mut next_check = cron_after(&check_s, now);
        // A first probe right away, so readiness is known.
        let mut next_probe = Some(now);
        let mut busy: HashSet<String> = HashSet::new();
        let mut rest: HashMap<String, OffsetDateTime> = HashMap::new();
        let mut tasks: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
        // Which credentials each task carries (also known when a task panics).
        let mut carried: HashMap<tokio::task::Id, Vec<String>> = HashMap::new();
        // How long each credential rests after being handled: doubles (to 10 min) while the
        // pipeline leaves it due — a lock held elsewhere, a state that cannot be saved —
        // so the loop never spins on it.
        let mut rest_for: HashMap<String, std::time::Duration> = HashMap::new();
        let mut probing: Option<tokio::task::JoinHandle<()>> = None;
        let mut last_ping = tokio::time::Instant::now();
        // Told when the clock is set, the loop needs no heartbeat except for a watchdog.
        // (Asked at every iteration: a watch that ended brings the heartbeat back.)
        let heartbeat_for = |set_signal: &Option<Arc<tokio::sync::Notify>>| match (
            self.settings.watchdog,
            set_signal,
        ) {
            (Some(w), _) => Some(self.settings.heartbeat.min(w / 2)),
            (None, None) => Some(self.settings.heartbeat),
            (None, Some(_)) => None,
        };
        // The wall clock and tokio's (monotonic) clock at the previous iteration: a
        // difference between their advances is a step of the wall clock.
        let mut mark = (self.clock.now(), tokio::time::Instant::now());
        loop {
            let now = self.clock.now();
            // Awake and at work: the work grace, from before anything of this wake-up runs.
            self.liveness.woke(now);
            let monotonic = tokio::time::Instant::now();
            if let Some(step) = clock_step(mark.0, monotonic - mark.1, now) {
                // Every instant the loop holds was planned on the old wall clock: plan again
                // from the credentials themselves, keep rests as long as they were meant to be,
                // and run the checks and probes now rather than on a schedule from the old
                // clock (a step back would otherwise postpone them by the step).
                let (direction, by) = if step.is_negative() {
                    ("back", -step)
                } else {
                    ("forward", step)
                };
                tracing::warn!(
                    "the wall clock was set {direction} by {}; every credential is planned again",
                    crate::policy::human(by)
                );
                times = exec.inspect_all(now).await;
                for until in rest.values_mut() {
                    *until += step;
                }
                next_check = Some(now);
                next_probe = Some(now);
            }
            mark = (now, monotonic);
            if let Some(w) = self.settings.watchdog
                && last_ping.elapsed() >= w / 4
            {
                notify(&[sd_notify::NotifyState::Watchdog]);
                last_ping = tokio::time::Instant::now();
            }
            // Rotations (and retirements) that are due.
            // A credential waits while its Service Manager access is being rotated.
            let blocked =
                |n: &str| busy.contains(n) || exec.waits_for(n).is_some_and(|d| busy.contains(&d));
            let batch: Vec<String> = due(&times, now, blocked, |n| rest.get(n).copied())
                .into_iter()
                .map(str::to_string)
                .collect();
            if !batch.is_empty() {
                tracing::info!(credentials = ?batch, "pipeline due");
                busy.extend(batch.iter().cloned());
                let handle = tasks.spawn(exec.rotate(batch.clone()));
                carried.insert(handle.id(), batch);
            }
            if next_check.is_some_and(|t| t <= now) {
                times = exec.inspect_all(now).await;
                notify(&[sd_notify::NotifyState::Status(
                    &exec.status_line(&times, now),
                )]);
                next_check = cron_after(&check_s, now);
            }
            if next_probe.is_some_and(|t| t <= now) {
                if probing.as_ref().is_none_or(|p| p.is_finished()) {
                    probing = Some(tokio::spawn(exec.probe()));
                }
                next_probe = cron_after(&probe_s, now);
            }
            let ticks: Vec<OffsetDateTime> = next_check.into_iter().chain(next_probe).collect();
            let set_signal = self.clock.set_signal();
            let heartbeat = heartbeat_for(&set_signal);
            let wake = next_wake(
                &times,
                |n| busy.contains(n) || exec.waits_for(n).is_some_and(|d| busy.contains(&d)),
                |n| rest.get(n).copied(),
                &ticks,
                heartbeat.map(|h| now + h),
            );
            self.liveness.sleeps_until(wake);
            let sleep = async {
                match wake {
                    Some(wake) => {
                        let d = (wake - now).max(time::Duration::ZERO);
                        tokio::time::sleep(d.try_into().unwrap_or_default()).await
                    }
                    None => std::future::pending().await,
                }
            };
            let clock_set = async {
                match &set_signal {
                    Some(s) => s.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                // The top of the loop sees the step and plans again.
                _ = clock_set => {}
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.liveness.working(self.clock.now());
                    let id = match &done {
                        Ok((id, ())) => *id,
                        Err(e) => {
                            tracing::error!("a rotation task ended abnormally: {e}");
                            e.id()
                        }
                    };
                    let names = carried.remove(&id).unwrap_or_default();
                    let now = self.clock.now();
                    times = exec.inspect_all(now).await;
                    log_next_runs(&times, Some(&names), now);
                    for n in &names {
                        busy.remove(n);
                        let still_due = times
                            .iter()
                            .find(|t| &t.name == n)
                            .and_then(CredTimes::due_at)
                            .is_some_and(|t| t <= now);
                        let r = match rest_for.get(n) {
                            Some(r) if still_due => (*r * 2).min(std::time::Duration::from_secs(600)),
                            _ => self.settings.rest,
                        };
                        rest_for.insert(n.clone(), r);
                        rest.insert(n.clone(), now + r);
                    }
                    notify(&[sd_notify::NotifyState::Status(&exec.status_line(&times, now))]);
                }
                c = control.recv() => match c {
                    Some(Control::Reload) => {
                        self.liveness.working(self.clock.now());
                        let usec = sd_notify::NotifyState::monotonic_usec_now().ok();
                        let mut msg = vec![sd_notify::NotifyState::Reloading];
                        msg.extend(usec);
                        notify(&msg);
                        match exec.reload() {
                            Ok(()) => {
                                tracing::info!("configuration reloaded");
                                (check_s, probe_s) = exec.schedules();
                                let now = self.clock.now();
                                next_check = cron_after(&check_s, now);
                                next_probe = Some(now);
                                times = exec.inspect_all(now).await;
                                rest.clear();
                            }
                            Err(e) => tracing::error!("configuration not reloaded, the previous one stays in force: {e}"),
                        }
                        let line = exec.status_line(&times, self.clock.now());
                        notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&line)]);
                    }
                    Some(Control::Stop) | None => break,
                },
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(in_flight = tasks.len(), "stopping");
        let grace = tokio::time::sleep(self.settings.stop_grace);
        tokio::pin!(grace);
        while !tasks.is_empty() {
            tokio::select! {
                _ = &mut grace => {
                    // A commit under way finishes with the state write that records it, and
                    // no other begins: then the rest are abandoned.
                    let _closed = match exec.commit_gate() {
                        Some(g) => Some(g.write_owned().await),
                        None => None,
                    };
                    tracing::warn!(abandoned = tasks.len(), "in-flight rotations abandoned (a write already under way is finished first, under the credential's lock); the next start reconciles them");
                    tasks.abort_all();
                    break;
                }
                _ = tasks.join_next() => {}
            }
        }
        if let Some(p) = probing {
            p.abort();
        }
    }
}

/// The real world: configuration, rotator and metrics, swappable on reload.
pub struct Live {
    config_path: PathBuf,
    inner: RwLock<(Arc<Config>, Arc<Rotator>)>,
    /// Every rotator's commit gate, the same across reloads.
    commits: crate::rotate::CommitGate,
    pub metrics: Arc<Metrics>,
    /// Rotation summaries are printed to stdout, one line each (the daemon's event log).
    pub print_events: bool,
}

impl Live {
    pub fn new(config_path: &Path, config: Config) -> Live {
        let names: Vec<&str> = config.credentials.iter().map(|c| c.name.as_str()).collect();
        let metrics = Arc::new(Metrics::new(&names));
        let config = Arc::new(config);
        let commits = crate::rotate::CommitGate::default();
        Live {
            config_path: config_path.to_path_buf(),
            inner: RwLock::new((
                config.clone(),
                Arc::new(Rotator::new(config).with_commit_gate(commits.clone())),
            )),
            commits,
            metrics,
            print_events: true,
        }
    }

    fn current(&self) -> (Arc<Config>, Arc<Rotator>) {
        let g = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (g.0.clone(), g.1.clone())
    }
}

impl Executor for Live {
    fn inspect_all(&self, now: OffsetDateTime) -> Inspection {
        let (config, _) = self.current();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut times = Vec::with_capacity(config.credentials.len());
            for c in &config.credentials {
                let (report, state) = crate::status::inspect(c, &config.state_dir, now).await;
                metrics.observe_report(&report, now, state.as_ref());
                times.push(times_for(&report, state.as_ref(), c.issuer.is_some(), now));
            }
            memory::release_freed();
            times
        })
    }

    fn rotate(&self, names: Vec<String>) -> Task {
        let (config, rotator) = self.current();
        let metrics = self.metrics.clone();
        let print = self.print_events;
        Box::pin(async move {
            let creds: Vec<_> = config
                .credentials
                .iter()
                .filter(|c| names.contains(&c.name))
                .cloned()
                .collect();
            let parallel = config.daemon.max_parallel as usize;
            rotator
                .rotate_each(creds, Options::default(), parallel, |s| {
                    metrics.observe_rotation(&s, OffsetDateTime::now_utc());
                    let quiet = matches!(
                        s.outcome,
                        crate::rotate::Outcome::NotDue { .. }
                            | crate::rotate::Outcome::BackingOff { .. }
                    ) && s.retired.is_empty()
                        && s.reconciled.is_empty();
                    if print && !quiet {
                        // A closed standard output costs the event line, not the pass.
                        use std::io::Write;
                        let _ = writeln!(std::io::stdout().lock(), "{}", s.line());
                    }
                })
                .await;
            memory::release_freed();
        })
    }

    fn probe(&self) -> Task {
        let (config, _) = self.current();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let parallel = config.daemon.max_parallel as usize;
            let results = crate::status::check_current(
                config.credentials.clone(),
                &config.state_dir,
                parallel,
            )
            .await;
            for (name, r) in results {
                if let Err(e) = &r {
                    tracing::warn!(credential = %name, label = e.kind.label(), "probe: the current generation failed its token check: {e}");
                }
                metrics.observe_check(&name, &r, OffsetDateTime::now_utc());
            }
            memory::release_freed();
        })
    }

    fn schedules(&self) -> (cron::Schedule, cron::Schedule) {
        let (config, _) = self.current();
        (
            config.daemon.check_schedule.schedule().clone(),
            config.daemon.probe_schedule.schedule().clone(),
        )
    }

    fn reload(&self) -> Result<(), String> {
        let new = Config::load(&self.config_path).map_err(|e| e.to_string())?;
        let (old, _) = self.current();
        for c in &old.credentials {
            if !new.credentials.iter().any(|n| n.name == c.name) {
                self.metrics.remove_credential(&c.name);
            }
        }
        for c in &new.credentials {
            self.metrics.add_credential(&c.name);
        }
        let new = Arc::new(new);
        let mut g = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g = (
            new.clone(),
            Arc::new(Rotator::new(new).with_commit_gate(self.commits.clone())),
        );
        Ok(())
    }

    fn commit_gate(&self) -> Option<crate::rotate::CommitGate> {
        Some(self.commits.clone())
    }

    fn waits_for(&self, name: &str) -> Option<String> {
        let (config, _) = self.current();
        let cred = config.credentials.iter().find(|c| c.name == name)?;
        let Some(crate::config::Issuer::ServiceManager(iss)) = &cred.issuer else {
            return None;
        };
        config
            .service_managers
            .get(&iss.service_manager)?
            .access_credential()
            .filter(|access| *access != name)
            .map(str::to_string)
    }

    fn status_line(&self, times: &[CredTimes], now: OffsetDateTime) -> String {
        let (ready, total) = self.metrics.counts();
        let next = times
            .iter()
            .filter_map(|t| t.due_at().map(|d| (d, &t.name)))
            .min();
        let mut s = format!("{ready} of {total} credentials ready");
        if let Some((at, name)) = next {
            let d = at - now;
            if d.is_positive() {
                s.push_str(&format!("; next: {name} in {}", crate::policy::human(d)));
            } else {
                s.push_str(&format!("; next: {name} now"));
            }
        }
        s
    }
}

/// Runs `certrot run` with `config` (loaded from `config_path`, re-read on SIGHUP) until
/// SIGTERM or SIGINT; `Err` when it cannot start.
pub fn run(config_path: &Path, config: Config) -> Result<(), String> {
    crate::rt::runtime()?.block_on(serve(config_path, config))
}

async fn serve(config_path: &Path, config: Config) -> Result<(), String> {
    let listen = config.daemon.listen.clone();
    let live = Arc::new(Live::new(config_path, config));
    let liveness = Arc::new(liveness::Liveness::starting(OffsetDateTime::now_utc()));
    let settings = LoopSettings {
        watchdog: sd_notify::watchdog_enabled(),
        ..LoopSettings::default()
    };
    let _http = if listen.is_empty() {
        None
    } else {
        match http::serve(&listen, live.metrics.clone(), liveness.clone()).await {
            Ok((addr, task)) => {
                println!("certrot run: metrics at http://{addr}/metrics");
                Some(task)
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    // Orphans of a crash are deleted at start, before anything else rotates.
    reconcile_at_start(&live).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(forward_signals(tx));
    Scheduler {
        exec: live,
        clock: Arc::new(crate::clock::WatchedClock::start()),
        settings,
        liveness,
    }
    .run(rx)
    .await;
    Ok(())
}

async fn reconcile_at_start(live: &Live) {
    let (config, rotator) = live.current();
    for c in config.credentials.iter().filter(|c| c.issuer.is_some()) {
        match rotator.reconcile_only(c).await {
            Ok(deleted) if !deleted.is_empty() => {
                println!(
                    "{}: deleted orphan binding(s) {}",
                    c.name,
                    deleted.join(", ")
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(credential = %c.name, "reconcile at start: {e}"),
        }
    }
}

async fn forward_signals(tx: tokio::sync::mpsc::Sender<Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        let c = tokio::select! {
            _ = hup.recv() => Control::Reload,
            _ = term.recv() => Control::Stop,
            _ = int.recv() => Control::Stop,
        };
        if tx.send(c).await.is_err() || c == Control::Stop {
            return;
        }
    }
}
