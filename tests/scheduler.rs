//! The scheduler loop (`certrot::daemon::Scheduler`) with a paused tokio clock and a
//! recording executor: renewals fire at their instants, a failing credential backs off
//! exponentially and within its cap, retirements fire at their deadline, cron ticks land on
//! their schedule, reloads and stops are obeyed, and the loop never spins.

use certrot::daemon::schedule::CredTimes;
use certrot::daemon::{
    Clock, Control, Executor, Inspection, LoopSettings, Scheduler, Task, TokioClock,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-23 12:00:10 UTC);

#[derive(Default)]
struct Model {
    times: Vec<CredTimes>,
    rotations: Vec<(OffsetDateTime, String)>,
    probes: Vec<OffsetDateTime>,
    inspections: usize,
    reloads: usize,
    failures: u32,
}

struct Fake {
    clock: Arc<TokioClock>,
    model: Arc<Mutex<Model>>,
}

impl Executor for Fake {
    fn inspect_all(&self, _now: OffsetDateTime) -> Inspection {
        let mut m = self.model.lock().unwrap();
        m.inspections += 1;
        Box::pin(std::future::ready(m.times.clone()))
    }
    fn rotate(&self, names: Vec<String>) -> Task {
        let (clock, model) = (self.clock.clone(), self.model.clone());
        Box::pin(async move {
            // A rotation takes a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = clock.now();
            let mut m = model.lock().unwrap();
            for n in names {
                m.rotations.push((now, n.clone()));
                let failures = if n == "flaky" {
                    m.failures += 1;
                    m.failures
                } else {
                    0
                };
                let t = m.times.iter_mut().find(|t| t.name == n).unwrap();
                match n.as_str() {
                    // A 10-minute certificate renewed at 2/3 of its life.
                    "steady" => t.rotate_at = Some(now + time::Duration::seconds(400)),
                    // Fails every time: the policy's backoff decides the next attempt.
                    "flaky" => {
                        let critical = T0 + time::Duration::days(30);
                        t.rotate_at = Some(certrot::policy::backoff(failures, now, Some(critical)))
                    }
                    // Only a retirement was due.
                    _ => t.retire_at = None,
                }
            }
        })
    }
    fn probe(&self) -> Task {
        let (clock, model) = (self.clock.clone(), self.model.clone());
        Box::pin(async move {
            model.lock().unwrap().probes.push(clock.now());
        })
    }
    fn schedules(&self) -> (cron::Schedule, cron::Schedule) {
        (
            "0 */5 * * * *".parse().unwrap(),
            "0 0 * * * *".parse().unwrap(),
        )
    }
    fn reload(&self) -> Result<(), String> {
        let mut m = self.model.lock().unwrap();
        m.reloads += 1;
        if m.reloads == 1 {
            Err("bad config".into())
        } else {
            Ok(())
        }
    }
    fn status_line(&self, _: &[CredTimes], _: OffsetDateTime) -> String {
        "fake".into()
    }
}

/// The loop over `exec` with the default settings, and the channel that steers it.
fn start<E: Executor>(
    exec: Arc<E>,
    clock: &Arc<TokioClock>,
) -> (
    tokio::sync::mpsc::Sender<Control>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sched = Scheduler {
        exec,
        clock: clock.clone(),
        settings: LoopSettings::default(),
        liveness: Arc::new(certrot::daemon::liveness::Liveness::starting(T0)),
    };
    (tx, tokio::spawn(sched.run(rx)))
}

/// Check and probe schedules that tick once a day, at midnight (out of the way of a test).
fn midnight_only() -> (cron::Schedule, cron::Schedule) {
    (
        "0 0 0 * * *".parse().unwrap(),
        "0 0 0 * * *".parse().unwrap(),
    )
}

fn secs(t: OffsetDateTime) -> f64 {
    (t - T0).as_seconds_f64()
}

#[tokio::test(start_paused = true)]
async fn renewals_backoff_retirements_and_ticks_fire_on_time() {
    let clock = Arc::new(TokioClock::starting_at(T0));
    let model = Arc::new(Mutex::new(Model {
        times: vec![
            CredTimes {
                name: "steady".into(),
                rotate_at: Some(T0 + time::Duration::seconds(100)),
                retire_at: None,
                sync_at: None,
            },
            CredTimes {
                name: "flaky".into(),
                rotate_at: Some(T0 + time::Duration::seconds(10)),
                retire_at: None,
                sync_at: None,
            },
            CredTimes {
                name: "retiring".into(),
                rotate_at: Some(T0 + time::Duration::days(3)),
                retire_at: Some(T0 + time::Duration::seconds(3600)),
                sync_at: None,
            },
            CredTimes {
                name: "import-only".into(),
                rotate_at: None,
                retire_at: None,
                sync_at: None,
            },
        ],
        ..Model::default()
    }));
    let exec = Arc::new(Fake {
        clock: clock.clone(),
        model: model.clone(),
    });
    let (tx, run) = start(exec, &clock);
    // Eight virtual hours.
    tokio::time::sleep(Duration::from_secs(8 * 3600)).await;
    tx.send(Control::Reload).await.unwrap(); // refused: the old one stays
    tx.send(Control::Reload).await.unwrap(); // accepted
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send(Control::Stop).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops promptly")
        .unwrap();

    let m = model.lock().unwrap();
    let at = |name: &str| -> Vec<f64> {
        m.rotations
            .iter()
            .filter(|(_, n)| n == name)
            .map(|(t, _)| secs(*t))
            .collect()
    };
    // steady: at 100 s (+0.2 s of work), then every 400 s + the 5 s rest is not needed.
    let steady = at("steady");
    assert!((steady[0] - 100.2).abs() < 0.01, "{steady:?}");
    for w in steady.windows(2) {
        assert!((w[1] - w[0] - 400.0).abs() < 0.5, "{steady:?}");
    }
    assert_eq!(steady.len(), 72, "{steady:?}");
    // flaky: backoff 1, 2, 4, 8, 16, 32 min, then capped at 1 h.
    let flaky = at("flaky");
    let gaps: Vec<f64> = flaky.windows(2).map(|w| (w[1] - w[0]).round()).collect();
    assert_eq!(
        &gaps[..7],
        &[60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0],
        "{gaps:?}"
    );
    assert!(gaps[7..].iter().all(|g| *g == 3600.0), "{gaps:?}");
    // retiring: once, at its deadline, and not again.
    let retiring = at("retiring");
    assert_eq!(retiring.len(), 1);
    assert!((retiring[0] - 3600.2).abs() < 0.01, "{retiring:?}");
    assert!(at("import-only").is_empty());
    // Probes: at start, at every full hour of wall time, and right after the reload.
    assert!(secs(m.probes[0]).abs() < 0.01);
    let (last, hourly) = m.probes[1..].split_last().unwrap();
    for p in hourly {
        assert_eq!((p.minute(), p.second()), (0, 0), "{p}");
    }
    assert_eq!(hourly.len(), 8);
    assert!((secs(*last) - 8.0 * 3600.0).abs() < 0.01, "{last}");
    // Inspections: start, each 5-minute tick (96 in 8 h), after each rotation batch, reload.
    assert!(m.inspections >= 96 + 72, "{}", m.inspections);
    assert_eq!(m.reloads, 2);
}

/// A credential whose Service Manager access is being rotated waits for it.
struct Dependent {
    clock: Arc<TokioClock>,
    log: Arc<Mutex<Vec<(String, f64, f64)>>>,
    times: Arc<Mutex<Vec<CredTimes>>>,
}

impl Executor for Dependent {
    fn inspect_all(&self, _: OffsetDateTime) -> Inspection {
        Box::pin(std::future::ready(self.times.lock().unwrap().clone()))
    }
    fn rotate(&self, names: Vec<String>) -> Task {
        let (clock, log, times) = (self.clock.clone(), self.log.clone(), self.times.clone());
        Box::pin(async move {
            let start = secs(clock.now());
            // Rotating the access takes 30 s (a slow asynchronous binding).
            let took = if names.iter().any(|n| n == "sm-access") {
                30
            } else {
                1
            };
            tokio::time::sleep(Duration::from_secs(took)).await;
            let end = secs(clock.now());
            let mut t = times.lock().unwrap();
            for n in names {
                log.lock().unwrap().push((n.clone(), start, end));
                let c = t.iter_mut().find(|c| c.name == n).unwrap();
                c.rotate_at = Some(clock.now() + time::Duration::days(1));
            }
        })
    }
    fn probe(&self) -> Task {
        Box::pin(async {})
    }
    fn schedules(&self) -> (cron::Schedule, cron::Schedule) {
        midnight_only()
    }
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
    fn status_line(&self, _: &[CredTimes], _: OffsetDateTime) -> String {
        String::new()
    }
    fn waits_for(&self, name: &str) -> Option<String> {
        (name == "orders").then(|| "sm-access".to_string())
    }
}

#[tokio::test(start_paused = true)]
async fn a_credential_waits_for_its_service_manager_access() {
    let clock = Arc::new(TokioClock::starting_at(T0));
    let at = |s: i64| Some(T0 + time::Duration::seconds(s));
    let times = Arc::new(Mutex::new(vec![
        CredTimes {
            name: "sm-access".into(),
            rotate_at: at(10),
            retire_at: None,
            sync_at: None,
        },
        CredTimes {
            name: "orders".into(),
            rotate_at: at(20),
            retire_at: None,
            sync_at: None,
        },
        CredTimes {
            name: "other".into(),
            rotate_at: at(20),
            retire_at: None,
            sync_at: None,
        },
    ]));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(
        Scheduler {
            exec: Arc::new(Dependent {
                clock: clock.clone(),
                log: log.clone(),
                times,
            }),
            clock,
            settings: LoopSettings::default(),
            liveness: Arc::new(certrot::daemon::liveness::Liveness::starting(T0)),
        }
        .run(rx),
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    tx.send(Control::Stop).await.unwrap();
    run.await.unwrap();
    let log = log.lock().unwrap();
    let started = |n: &str| {
        log.iter()
            .find(|(m, _, _)| m == n)
            .map(|(_, s, _)| *s)
            .unwrap()
    };
    let ended = |n: &str| {
        log.iter()
            .find(|(m, _, _)| m == n)
            .map(|(_, _, e)| *e)
            .unwrap()
    };
    assert!((started("sm-access") - 10.0).abs() < 0.01);
    assert!(
        (started("other") - 20.0).abs() < 0.01,
        "unrelated credentials do not wait"
    );
    assert!(started("orders") >= ended("sm-access"), "{log:?}");
    assert!((started("orders") - 40.0).abs() < 0.01, "{log:?}");
}

/// A credential the pipeline leaves due (e.g. locked elsewhere) is retried with a rest that
/// doubles up to 10 minutes — the loop never spins; a task that panics frees its credential.
struct Stubborn {
    clock: Arc<TokioClock>,
    log: Arc<Mutex<Vec<(String, f64)>>>,
    times: Arc<Mutex<Vec<CredTimes>>>,
    panicked: Arc<std::sync::atomic::AtomicBool>,
}

impl Executor for Stubborn {
    fn inspect_all(&self, _: OffsetDateTime) -> Inspection {
        Box::pin(std::future::ready(self.times.lock().unwrap().clone()))
    }
    fn rotate(&self, names: Vec<String>) -> Task {
        let (clock, log, times, panicked) = (
            self.clock.clone(),
            self.log.clone(),
            self.times.clone(),
            self.panicked.clone(),
        );
        Box::pin(async move {
            for n in &names {
                log.lock().unwrap().push((n.clone(), secs(clock.now())));
            }
            if names.iter().any(|n| n == "crashy")
                && !panicked.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("a bug in a rotation task");
            }
            let mut t = times.lock().unwrap();
            for n in names.iter().filter(|n| *n != "stuck") {
                t.iter_mut().find(|c| &c.name == n).unwrap().rotate_at =
                    Some(clock.now() + time::Duration::days(1));
            }
        })
    }
    fn probe(&self) -> Task {
        Box::pin(async {})
    }
    fn schedules(&self) -> (cron::Schedule, cron::Schedule) {
        midnight_only()
    }
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
    fn status_line(&self, _: &[CredTimes], _: OffsetDateTime) -> String {
        String::new()
    }
}

#[tokio::test(start_paused = true)]
async fn no_spinning_on_a_stuck_credential_and_panics_free_their_credential() {
    let clock = Arc::new(TokioClock::starting_at(T0));
    let times = Arc::new(Mutex::new(vec![
        CredTimes {
            name: "stuck".into(),
            rotate_at: Some(T0),
            retire_at: None,
            sync_at: None,
        },
        CredTimes {
            name: "crashy".into(),
            rotate_at: Some(T0 + time::Duration::seconds(1)),
            retire_at: None,
            sync_at: None,
        },
    ]));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let run = tokio::spawn(
        Scheduler {
            exec: Arc::new(Stubborn {
                clock: clock.clone(),
                log: log.clone(),
                times,
                panicked: Arc::default(),
            }),
            clock,
            settings: LoopSettings::default(),
            liveness: Arc::new(certrot::daemon::liveness::Liveness::starting(T0)),
        }
        .run(rx),
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    tx.send(Control::Stop).await.unwrap();
    run.await.unwrap();
    let log = log.lock().unwrap();
    let stuck: Vec<f64> = log
        .iter()
        .filter(|(n, _)| n == "stuck")
        .map(|(_, t)| t.round())
        .collect();
    // 0, then rests of 5, 10, 20, … 600 s.
    assert_eq!(
        &stuck[..8],
        &[0.0, 5.0, 15.0, 35.0, 75.0, 155.0, 315.0, 635.0],
        "{stuck:?}"
    );
    let gaps: Vec<f64> = stuck.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[7..].iter().all(|g| *g == 600.0), "{gaps:?}");
    assert!(stuck.len() < 15, "{} runs in an hour", stuck.len());
    // crashy: panicked on its first run, ran again after its rest and then succeeded.
    let crashy: Vec<f64> = log
        .iter()
        .filter(|(n, _)| n == "crashy")
        .map(|(_, t)| t.round())
        .collect();
    assert_eq!(crashy, vec![1.0, 6.0], "{crashy:?}");
}

/// One credential whose certificates come from an issuer with a right clock: each rotation
/// makes the next renewal 400 s after the issuer's now, whatever the daemon's clock says.
struct Issued {
    issuer: Arc<TokioClock>,
    daemon: Arc<TokioClock>,
    times: Arc<Mutex<Vec<CredTimes>>>,
    rotations: Arc<Mutex<Vec<f64>>>,
    probes: Arc<Mutex<Vec<f64>>>,
}

impl Executor for Issued {
    fn inspect_all(&self, _: OffsetDateTime) -> Inspection {
        Box::pin(std::future::ready(self.times.lock().unwrap().clone()))
    }
    fn rotate(&self, _names: Vec<String>) -> Task {
        let (issuer, daemon, times, rotations) = (
            self.issuer.clone(),
            self.daemon.clone(),
            self.times.clone(),
            self.rotations.clone(),
        );
        Box::pin(async move {
            rotations.lock().unwrap().push(secs(daemon.now()));
            times.lock().unwrap()[0].rotate_at = Some(issuer.now() + time::Duration::seconds(400));
        })
    }
    fn probe(&self) -> Task {
        let (daemon, probes) = (self.daemon.clone(), self.probes.clone());
        Box::pin(async move { probes.lock().unwrap().push(secs(daemon.now())) })
    }
    fn schedules(&self) -> (cron::Schedule, cron::Schedule) {
        (
            "0 0 0 * * *".parse().unwrap(),
            "0 0 * * * *".parse().unwrap(),
        )
    }
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
    fn status_line(&self, _: &[CredTimes], _: OffsetDateTime) -> String {
        String::new()
    }
}

/// A clock that cannot say when it is set (as where the kernel offers no timerfd): the loop
/// must look for steps itself, every heartbeat.
struct Blind(Arc<TokioClock>);

impl Clock for Blind {
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

/// Runs [`Issued`] with the daemon's clock starting `offset` away from the issuer's, steps it
/// by `step` after a minute, and returns (rotations, probes) in the daemon's seconds from T0.
async fn run_with_clock_step(
    offset: time::Duration,
    step: time::Duration,
    first_renewal: time::Duration,
    run_for: Duration,
) -> (Vec<f64>, Vec<f64>) {
    run_with_clock_step_seen(offset, step, first_renewal, run_for, true).await
}

/// As [`run_with_clock_step`]; `told`: whether the clock says when it is set.
async fn run_with_clock_step_seen(
    offset: time::Duration,
    step: time::Duration,
    first_renewal: time::Duration,
    run_for: Duration,
    told: bool,
) -> (Vec<f64>, Vec<f64>) {
    let issuer = Arc::new(TokioClock::starting_at(T0));
    let daemon = Arc::new(TokioClock::starting_at(T0 + offset));
    let exec = Issued {
        issuer,
        daemon: daemon.clone(),
        times: Arc::new(Mutex::new(vec![CredTimes {
            name: "orders".into(),
            rotate_at: Some(T0 + first_renewal),
            retire_at: None,
            sync_at: None,
        }])),
        rotations: Arc::default(),
        probes: Arc::default(),
    };
    let (rotations, probes) = (exec.rotations.clone(), exec.probes.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let liveness = Arc::new(certrot::daemon::liveness::Liveness::starting(T0));
    let run = if told {
        tokio::spawn(
            Scheduler {
                exec: Arc::new(exec),
                clock: daemon.clone(),
                settings: LoopSettings::default(),
                liveness,
            }
            .run(rx),
        )
    } else {
        tokio::spawn(
            Scheduler {
                exec: Arc::new(exec),
                clock: Arc::new(Blind(daemon.clone())),
                settings: LoopSettings::default(),
                liveness,
            }
            .run(rx),
        )
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    daemon.step(step);
    tokio::time::sleep(run_for).await;
    tx.send(Control::Stop).await.unwrap();
    run.await.unwrap();
    let r = rotations.lock().unwrap().clone();
    let p = probes.lock().unwrap().clone();
    (r, p)
}

/// A daemon started with its clock 30 days ahead sees every certificate as due and rests
/// between attempts; when the clock is set right, the rests and the probe schedule planned on
/// the wrong clock must not postpone the next renewal or probe by 30 days.
#[tokio::test(start_paused = true)]
async fn a_clock_set_back_is_noticed_and_renewal_and_probes_follow_the_right_time() {
    let month = time::Duration::days(30);
    let (rotations, probes) = run_with_clock_step(
        month,
        -month,
        time::Duration::seconds(100),
        Duration::from_secs(2 * 3600),
    )
    .await;
    let day = 86_400.0;
    assert!(
        rotations.iter().any(|&s| s > 30.0 * day),
        "the wrong clock made it due at once: {rotations:?}"
    );
    let after: Vec<f64> = rotations
        .iter()
        .copied()
        .filter(|&s| s < 30.0 * day)
        .collect();
    // The last certificate was issued within the first minute, so it renews 400 s after
    // that (plus at most the 10-minute rest the wrong clock built up).
    assert!(
        after
            .first()
            .is_some_and(|&s| (400.0..=1100.0).contains(&s)),
        "renewal on the corrected clock: {after:?} (all: {rotations:?})"
    );
    let later_probes: Vec<f64> = probes.iter().copied().filter(|&s| s < 30.0 * day).collect();
    assert!(
        later_probes.first().is_some_and(|&s| s < 120.0),
        "a probe right after the step: {later_probes:?}"
    );
    assert!(
        later_probes.iter().any(|&s| (3589.0..3591.0).contains(&s)),
        "the hourly probe on the corrected clock (13:00): {later_probes:?}"
    );
}

/// A resume from suspend: the wall clock jumps forward past a renewal while the monotonic
/// clock stood still. The clock says it was set, so the renewal runs at once, not a whole
/// planned sleep later; a clock that cannot say so is looked at every heartbeat (30 s).
#[tokio::test(start_paused = true)]
async fn a_clock_set_forward_past_a_renewal_renews_at_once_or_within_the_heartbeat() {
    let day = time::Duration::days(1);
    let jumped = 2.0 * 86_400.0 + 60.0;
    for (told, within) in [(true, 1.0), (false, 31.0)] {
        let (rotations, _) = run_with_clock_step_seen(
            time::Duration::ZERO,
            day * 2,
            day,
            Duration::from_secs(120),
            told,
        )
        .await;
        assert!(
            rotations
                .first()
                .is_some_and(|&s| (jumped..=jumped + within).contains(&s)),
            "told: {told}: {rotations:?}"
        );
    }
}

/// Without a watchdog, an idle loop wakes only for what it planned: over six hours with an
/// hourly probe, a daily check and a renewal days away, one wake-up per probe — not one every
/// 30 s — and `/healthz` finds it alive throughout. With a watchdog of 20 s it wakes at least
/// every 10 s to tell systemd it lives.
#[tokio::test(start_paused = true)]
async fn an_idle_loop_wakes_only_for_its_events_unless_a_watchdog_asks() {
    for watchdog in [None, Some(Duration::from_secs(20))] {
        let clock = Arc::new(TokioClock::starting_at(T0));
        let exec = Issued {
            issuer: clock.clone(),
            daemon: clock.clone(),
            times: Arc::new(Mutex::new(vec![CredTimes {
                name: "orders".into(),
                rotate_at: Some(T0 + time::Duration::days(3)),
                retire_at: None,
                sync_at: None,
            }])),
            rotations: Arc::default(),
            probes: Arc::default(),
        };
        let probes = exec.probes.clone();
        let liveness = Arc::new(certrot::daemon::liveness::Liveness::starting(T0));
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let run = tokio::spawn(
            Scheduler {
                exec: Arc::new(exec),
                clock: clock.clone(),
                settings: LoopSettings {
                    watchdog,
                    ..LoopSettings::default()
                },
                liveness: liveness.clone(),
            }
            .run(rx),
        );
        for _ in 0..36 {
            tokio::time::sleep(Duration::from_secs(600)).await;
            assert_eq!(liveness.overdue(clock.now()), None, "watchdog {watchdog:?}");
        }
        let wakeups = liveness.wakeups();
        tx.send(Control::Stop).await.unwrap();
        run.await.unwrap();
        // The first probe at start, then one each hour.
        assert_eq!(probes.lock().unwrap().len(), 7, "watchdog {watchdog:?}");
        match watchdog {
            None => assert!(wakeups <= 8, "{wakeups} wake-ups in 6 idle hours"),
            Some(_) => assert!(wakeups >= 2000, "{wakeups} wake-ups with a watchdog"),
        }
    }
}

/// A rotation whose commit is under way when the stop grace ends: the daemon waits for the
/// state write that records the commit before it abandons the rotation, and lets no other
/// commit begin meanwhile.
struct Committing {
    gate: certrot::rotate::CommitGate,
    events: Arc<Mutex<Vec<(&'static str, Duration)>>>,
    start: tokio::time::Instant,
}

impl Executor for Committing {
    fn inspect_all(&self, _now: OffsetDateTime) -> Inspection {
        Box::pin(std::future::ready(vec![CredTimes {
            name: "orders".into(),
            rotate_at: Some(T0 + time::Duration::seconds(1)),
            retire_at: None,
            sync_at: None,
        }]))
    }
    fn rotate(&self, _names: Vec<String>) -> Task {
        let (gate, events, start) = (self.gate.clone(), self.events.clone(), self.start);
        Box::pin(async move {
            let note = |what| events.lock().unwrap().push((what, start.elapsed()));
            // The commit and the state write that records it take 10 s (a slow disk).
            let section = gate.clone().read_owned().await;
            note("commit begun");
            tokio::time::sleep(Duration::from_secs(10)).await;
            note("commit recorded");
            drop(section);
            // Another commit (a second credential of the batch) would begin now.
            let _next = gate.read_owned().await;
            note("next commit begun");
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
    }
    fn probe(&self) -> Task {
        Box::pin(std::future::ready(()))
    }
    fn schedules(&self) -> (cron::Schedule, cron::Schedule) {
        midnight_only()
    }
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
    fn status_line(&self, _: &[CredTimes], _: OffsetDateTime) -> String {
        "committing".into()
    }
    fn commit_gate(&self) -> Option<certrot::rotate::CommitGate> {
        Some(self.gate.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_abandons_no_rotation_between_its_commit_and_the_state_write_that_records_it() {
    let clock = Arc::new(TokioClock::starting_at(T0));
    let events = Arc::new(Mutex::new(Vec::new()));
    let exec = Arc::new(Committing {
        gate: certrot::rotate::CommitGate::default(),
        events: events.clone(),
        start: tokio::time::Instant::now(),
    });
    let (tx, run) = start(exec, &clock);
    // The rotation starts at 1 s; the stop comes at 3 s, its grace (3 s) ends at 6 s, while
    // the commit is still being written (until about 11 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send(Control::Stop).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("stops once the commit is recorded")
        .unwrap();
    let seen: Vec<&str> = events.lock().unwrap().iter().map(|(w, _)| *w).collect();
    assert_eq!(seen, ["commit begun", "commit recorded"], "{events:?}");
}
