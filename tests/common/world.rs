//! A sandbox world for rotation tests: the token endpoint and the Service Manager API on a
//! background runtime, a Service Manager service key and CA file on disk, config writers,
//! and helpers to run `certrot` against it.

use certrot::state::State;
use certrot_sandbox::sm::SmOptions;
use certrot_sandbox::stack::Stack;
use std::path::{Path, PathBuf};

pub struct World {
    pub stack: Stack,
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub sm_key: PathBuf,
    pub ca_file: PathBuf,
}

impl World {
    pub fn new(opts: SmOptions) -> World {
        World::trusting(opts, &[])
    }

    /// A world whose services also trust client certificates from `extra_roots`.
    pub fn trusting(opts: SmOptions, extra_roots: &[String]) -> World {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stack = rt
            .block_on(Stack::start_trusting(0, opts, extra_roots))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sm_key = dir.path().join("sm-key.json");
        std::fs::write(&sm_key, stack.sm_secret_key().to_string()).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &stack.ca_pem).unwrap();
        World {
            stack,
            rt,
            dir,
            sm_key,
            ca_file,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn target(&self, name: &str) -> PathBuf {
        self.root().join("targets").join(name)
    }

    /// `[[credential]]` TOML for a service-managed credential on `instance`.
    pub fn credential(&self, name: &str, kind: &str, instance: &str, extra: &str) -> String {
        format!(
            "[[credential]]\nname = {name:?}\nkind = {kind:?}\ntarget.path = {:?}\n\
             check.ca_file = {:?}\ncheck.system_roots = false\ncheck.attempts = 2\n\
             check.retry_for = \"200ms\"\nissuer.instance_id = {instance:?}\n{extra}\n",
            self.target(name).display().to_string(),
            self.ca_file.display().to_string(),
        )
    }

    /// Writes a configuration with `[service_manager.main]` (secret flavour unless
    /// `sm_section` replaces it) and the given credentials; returns its path.
    pub fn config(&self, sm_section: Option<&str>, credentials: &[String]) -> PathBuf {
        let sm = sm_section.map(str::to_string).unwrap_or_else(|| {
            format!(
                "[service_manager.main]\nservice_key = {:?}\nca_file = {:?}\nsystem_roots = false\nattempts = 3\n",
                self.sm_key.display().to_string(),
                self.ca_file.display().to_string()
            )
        });
        let text = format!(
            "state_dir = {:?}\n[daemon]\nlisten = \"\"\n\n{sm}\n{}",
            self.root().join("state").display().to_string(),
            credentials.join("\n")
        );
        let p = self.root().join("certrot.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs `certrot --config CFG ARGS…`: (exit code, stdout, stderr).
    pub fn certrot(&self, cfg: &Path, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        let o = super::run(&all);
        let (out, err) = super::text(&o);
        (o.status.code().unwrap_or(-1), out, err)
    }

    pub fn state(&self, name: &str) -> State {
        let p = self.root().join("state").join(format!("{name}.json"));
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    /// The current generation in the target of `name`, read through its visible files.
    pub fn generation(&self, name: &str) -> certrot::generation::Generation {
        let t = self.target(name);
        certrot::generation::Generation::from_pem(
            &std::fs::read(t.join("cert.pem")).unwrap(),
            "cert",
            &std::fs::read(t.join("key.pem")).unwrap(),
            "key",
        )
        .unwrap()
    }

    /// Rewrites the state file of `name` through `edit` (a test's forged or aged state).
    pub fn edit_state(&self, name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        let p = self.root().join("state").join(format!("{name}.json"));
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
    }

    /// A rotation of `name` caught at its token check after creating its binding, then
    /// killed: returns that binding's id. The intent it leaves names the binding (its id is
    /// written down only just before a commit).
    pub fn interrupted_rotation(&self, cfg: &Path, name: &str, bindings: usize) -> String {
        let before = self.binding_ids();
        let run = self.rotation_in_flight(cfg, bindings);
        run.wait_for_token_check();
        drop(run);
        let pending = self
            .state(name)
            .pending
            .expect("the intent of the killed run");
        let created: Vec<_> = self
            .stack
            .sm
            .bindings()
            .into_iter()
            .filter(|b| !before.contains(&b.id))
            .collect();
        assert_eq!(created.len(), 1, "one binding created by the killed run");
        assert_eq!(created[0].name, pending.binding_name);
        created[0].id.clone()
    }

    /// A rotation of `name` (on Service Manager instance `instance`) whose commit reached
    /// its targets while a power cut lost its state write, for a binding that keeps no record
    /// of binding and fingerprint before its commit: two real rotations, then the state of
    /// before the second, with the second's intent (its binding's name only). Returns the
    /// old binding (the state's current) and the new one (the one the targets serve).
    pub fn commit_with_lost_state_write(
        &self,
        cfg: &Path,
        name: &str,
        instance: &str,
    ) -> (String, String) {
        let ok = |(code, out, err): (i32, String, String)| assert_eq!(code, 0, "{out}{err}");
        ok(self.certrot(cfg, &["rotate", "--now"]));
        let state_file = self.root().join("state").join(format!("{name}.json"));
        let before: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
        let old = before["current"]["binding_id"]
            .as_str()
            .unwrap()
            .to_string();
        ok(self.certrot(cfg, &["rotate", "--now"]));
        let new = self.state(name).current.unwrap().binding_id.unwrap();
        let binding_name = self
            .stack
            .sm
            .bindings()
            .into_iter()
            .find(|b| b.id == new)
            .unwrap()
            .name;
        let mut crashed = before.clone();
        crashed["pending"] = serde_json::json!({
            "binding_name": binding_name, "service_manager": "main", "instance_id": instance,
            "started_at": before["current"]["committed_at"],
        });
        std::fs::write(&state_file, crashed.to_string()).unwrap();
        (old, new)
    }

    /// Asserts that the state of `name` queues each of `bindings` for retirement with its
    /// grace period still ahead (never due at once).
    pub fn assert_queued_with_grace(&self, name: &str, bindings: &[&String]) {
        let st = self.state(name);
        let now = time::OffsetDateTime::now_utc();
        for b in bindings {
            assert!(
                st.retiring
                    .iter()
                    .any(|r| &r.binding_id == *b && r.retire_at > now),
                "{b} not queued with a grace period: {:?}",
                st.retiring
            );
        }
    }

    /// Fingerprint of the current certificate in the target of `name`.
    pub fn current_fingerprint(&self, name: &str) -> String {
        self.generation(name).leaf().fingerprint_sha256.clone()
    }

    /// Starts `certrot rotate --now` in the background with its token check held until
    /// [`InFlight::finish`], and returns once its new binding exists (`bindings` in all): a
    /// run caught in the middle of a rotation, for as long as the test needs.
    pub fn rotation_in_flight(&self, cfg: &Path, bindings: usize) -> InFlight<'_> {
        // Its token request must meet the hold, not a fault left over from earlier.
        self.stack.tokens.clear_faults();
        let held_before = self.stack.tokens.held_requests();
        self.stack.tokens.hold_next();
        let child = self.start(cfg, &["rotate", "--now"]);
        let run = InFlight {
            child: Some(child),
            world: self,
            held_before,
        };
        super::wait_until("the first run's binding", || {
            self.binding_ids().len() == bindings
        });
        run
    }

    /// Starts `certrot --config CFG ARGS…` in the background, stdout and stderr piped.
    pub fn start(&self, cfg: &Path, args: &[&str]) -> std::process::Child {
        super::bin()
            .args(["--config", cfg.to_str().unwrap()])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Ids of the bindings the sandbox Service Manager holds.
    pub fn binding_ids(&self) -> Vec<String> {
        self.stack.sm.bindings().into_iter().map(|b| b.id).collect()
    }
}

/// A rotation held at its token check (see [`World::rotation_in_flight`]).
pub struct InFlight<'a> {
    child: Option<std::process::Child>,
    world: &'a World,
    /// Token requests held before this run started.
    held_before: usize,
}

impl InFlight<'_> {
    /// Waits until the run has reached its token check (its request is held).
    pub fn wait_for_token_check(&self) {
        super::wait_until("the run's token check", || {
            self.world.stack.tokens.held_requests() > self.held_before
        });
    }

    /// Lets the check answer and waits for the run to end.
    pub fn finish(mut self) -> std::process::Output {
        self.world.stack.tokens.release_held();
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Killed before the hold is released: the run never gets past its check.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.world.stack.tokens.release_held();
    }
}
