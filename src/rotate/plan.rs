//! Pure rules of the pipeline: what to do (`decide`), what to ask Service Manager for
//! (`binding_parameters`, `binding_name`), and the bookkeeping of a rollback and of a lost
//! state (`rolled_back`, `settle_tracking`). No clock, no I/O.

use super::*;

/// Whether certrot still lacks track of the credential's bindings after its state was
/// lost (`unknown_since`): until a generation committed since then has been current for
/// `retire_after`, an unknown binding may be the one a consumer still uses. Clears the mark
/// once that has passed.
pub fn settle_tracking(state: &mut State, cred: &Credential, now: OffsetDateTime) -> bool {
    let Some(since) = state.unknown_since else {
        return false;
    };
    // Only a generation certrot rotated in since: its binding is the one it knows for sure.
    let settled = state.current.as_ref().is_some_and(|c| {
        c.source.is_rotation()
            && c.binding_id.is_some() == matches!(cred.issuer, Some(Issuer::ServiceManager(_)))
            && c.committed_at >= since
            && c.committed_at
                .checked_add(cred.policy.retire_after.to_time())
                .is_some_and(|t| now >= t)
    });
    if settled {
        state.unknown_since = None;
    }
    !settled
}

/// What the target served just before a rollback switched it.
#[derive(Clone, Copy, Debug)]
pub enum ServedBefore<'a> {
    Nothing,
    /// The fingerprint of the certificate it served.
    Certificate(&'a str),
    /// Its generation could not be read.
    Unreadable,
}

/// The state after a rollback to `g`: its binding leaves the retirement queue and is current
/// again; the binding rolled away from is queued for retirement after `retire_after`.
/// `away` is what the target served before the switch.
pub fn rolled_back(
    state: &mut State,
    cred: &Credential,
    g: &Generation,
    generation: &str,
    away: ServedBefore<'_>,
    now: OffsetDateTime,
) {
    let fp = &g.leaf().fingerprint_sha256;
    let service_managed = matches!(cred.issuer, Some(Issuer::ServiceManager(_)));
    // A generation rolled away from that the state does not know (a commit whose state
    // write a crash lost, a hand-made generation): its binding is unknown, and its
    // certificate was served until now, so applications may still hold it. Nothing is an
    // orphan until a rotation has been current for `retire_after`: reconcile would
    // otherwise delete that binding at once, with no grace period.
    let known = |f: &str| {
        state
            .current
            .as_ref()
            .is_some_and(|c| c.fingerprint_sha256 == f)
            || state
                .pending
                .as_ref()
                .is_some_and(|p| p.fingerprint_sha256.as_deref() == Some(f))
            || state
                .retiring
                .iter()
                .any(|r| r.fingerprint_sha256.as_deref() == Some(f))
    };
    let unknown = match away {
        ServedBefore::Nothing => false,
        ServedBefore::Certificate(a) => a != fp.as_str() && !known(a),
        ServedBefore::Unreadable => true,
    };
    if service_managed && unknown {
        tracing::warn!(credential = %cred.name, "the generation rolled away from is not known to the state (a commit whose state write was lost?) or could not be read; reconcile deletes nothing until the next rotation has been current for retire_after");
        state.unknown_since = Some(now);
    }
    // A queued binding whose certificate was served until this switch (a state that missed
    // an earlier switch) gets its whole grace period from now, not the deadline it had;
    // away from a generation that could not be read, any queued binding may be that one.
    let grace = now + cred.policy.retire_after.to_time();
    for r in state.retiring.iter_mut() {
        let served_until_now = match away {
            ServedBefore::Certificate(a) => r.fingerprint_sha256.as_deref() == Some(a),
            ServedBefore::Unreadable => true,
            ServedBefore::Nothing => false,
        };
        if served_until_now {
            r.retire_at = r.retire_at.max(grace);
        }
    }
    // The state may name the generation switched to as current already (a commit it never
    // recorded): its binding stays current.
    let mut same = state
        .current
        .as_ref()
        .filter(|c| &c.fingerprint_sha256 == fp)
        .and_then(|c| c.binding_id.clone());
    let restored = state
        .retiring
        .iter()
        .position(|r| r.fingerprint_sha256.as_ref() == Some(fp))
        .map(|i| state.retiring.remove(i));
    // An intent with a binding (a commit the state never recorded, or an attempt): if it is
    // the generation switched to, that is its binding; otherwise its binding is retired
    // after the grace period like the one rolled away from, not reconciled away at once.
    if let Some(p) = state.pending.take_if(|p| p.binding_id.is_some())
        && let Some(id) = p.binding_id
    {
        if p.fingerprint_sha256.as_ref() == Some(fp) {
            same = same.or(Some(id));
        } else {
            *state = std::mem::take(state).queue(RetiringRecord {
                binding_id: id,
                service_manager: p.service_manager,
                fingerprint_sha256: p.fingerprint_sha256,
                retire_at: now + cred.policy.retire_after.to_time(),
                reason: RetireReason::RolledBack,
                attempts: 0,
            });
        }
    }
    if restored.is_none() && same.is_none() && service_managed {
        // Which binding this generation has is unknown: it may still exist and be used,
        // so nothing is deleted as an orphan until a rotation settles it.
        tracing::warn!(credential = %cred.name, "the binding of the generation rolled back to is not known; reconcile deletes nothing until the next rotation has been current for retire_after");
        state.unknown_since = Some(now);
    }
    let manager = match &cred.issuer {
        Some(Issuer::ServiceManager(i)) => Some(i.service_manager.clone()),
        _ => restored.as_ref().map(|r| r.service_manager.clone()),
    };
    let binding = restored.map(|r| r.binding_id).or(same);
    // The binding rolled away from (when it differs) is queued, by its Service Manager.
    let away = state
        .current
        .as_ref()
        .filter(|old| &old.fingerprint_sha256 != fp)
        .and_then(|old| old.binding_id.clone())
        .filter(|id| binding.as_ref() != Some(id));
    let retire = match (&away, manager) {
        (Some(_), Some(sm)) => Some(RetirePlan {
            service_manager: sm,
            at: now + cred.policy.retire_after.to_time(),
            reason: RetireReason::RolledBack,
        }),
        (Some(id), None) => {
            tracing::warn!(credential = %cred.name, binding = %id, "the binding rolled away from is not queued for retirement (no Service Manager is known for it); delete it by hand");
            None
        }
        (None, _) => None,
    };
    let current = CurrentRecord::of(
        g.leaf(),
        Some(generation.to_string()),
        binding,
        CommitSource::Rollback,
        now,
    );
    *state = std::mem::take(state).committed(current, retire);
}

/// Why a rotation happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Forced,
    Missing,
    Unusable,
    Expired,
    Due,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Forced => "forced",
            Reason::Missing => "missing",
            Reason::Unusable => "unusable",
            Reason::Expired => "expired",
            Reason::Due => "due",
        }
    }
}

/// The current generation as the decision sees it.
#[derive(Clone, Debug)]
pub enum CurrentView {
    Missing,
    Unusable(String),
    Valid {
        not_after: OffsetDateTime,
        renews_at: OffsetDateTime,
    },
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Rotate(Reason),
    NotDue { renews_at: OffsetDateTime },
    BackingOff { until: OffsetDateTime },
}

/// Decides from the current generation, the recorded next attempt and the clock. Pure.
pub fn decide(
    force: bool,
    current: &CurrentView,
    next_attempt: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Decision {
    if force {
        return Decision::Rotate(Reason::Forced);
    }
    let reason = match current {
        CurrentView::Missing => Reason::Missing,
        CurrentView::Unusable(_) => Reason::Unusable,
        CurrentView::Valid { not_after, .. } if *not_after <= now => Reason::Expired,
        CurrentView::Valid { renews_at, .. } if *renews_at <= now => Reason::Due,
        CurrentView::Valid { renews_at, .. } => {
            return Decision::NotDue {
                renews_at: *renews_at,
            };
        }
    };
    match next_attempt {
        Some(t) if t > now => Decision::BackingOff { until: t },
        _ => Decision::Rotate(reason),
    }
}

/// The binding parameters for a certificate of `kind`, with the configured extra parameters
/// merged over them (objects merge key by key; for `generic`, they are all there is). Pure.
pub fn binding_parameters(kind: Kind, iss: &SmIssuer, certificate: Option<&str>) -> Value {
    let base = match (kind, certificate) {
        (Kind::Xsuaa, None) => json!({
            "credential-type": "x509",
            "x509": {"key-length": iss.key_length, "validity": iss.validity_days, "validity-type": "DAYS"},
        }),
        (Kind::Xsuaa, Some(c)) => json!({
            "credential-type": "x509",
            "x509": {"certificate": c, "certificate-pinning": iss.certificate_pinning},
        }),
        (Kind::Identity, None) => {
            let mut v = json!({
                "credential-type": "X509_GENERATED", "key-length": iss.key_length,
                "validity": iss.validity_days, "validity-type": "DAYS",
            });
            if let Some(a) = &iss.app_identifier {
                v["app-identifier"] = json!(a);
            }
            v
        }
        (Kind::Identity, Some(c)) => json!({"credential-type": "X509_PROVIDED", "certificate": c}),
        // Each service documents its own parameters: `issuer.parameters` as written
        // (configuration refuses a self-managed certificate here).
        (Kind::Generic, _) => json!({}),
    };
    let mut out = base;
    merge(&mut out, &Value::Object(iss.parameters.clone()));
    out
}

pub(super) fn merge(into: &mut Value, extra: &Value) {
    match (into, extra) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// `<prefix>-<UTC yyyymmddThhmmss.mmmZ>`: milliseconds, so that rotations in quick
/// succession (a loop of `rotate --now`, a retry after a failed attempt) get names of their
/// own instead of meeting 409 and paying a second create.
pub fn binding_name(prefix: &str, now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{prefix}-{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sm_credential() -> Credential {
        let text = "[service_manager.main]\nservice_key = \"/k.json\"\n[[credential]]\nname = \"orders\"\n\
                    retire_after = \"1h\"\ntarget.path = \"/srv/orders\"\nissuer.instance_id = \"i\"\n";
        Config::parse(text, std::path::Path::new("t.toml"))
            .unwrap()
            .credentials
            .remove(0)
            .as_ref()
            .clone()
    }

    fn fp(g: &Generation) -> &str {
        &g.leaf().fingerprint_sha256
    }

    fn generation(cn: &str) -> Generation {
        let ca = certrot_sandbox::ca::LocalCa::new("rollback CA").unwrap();
        let now = OffsetDateTime::now_utc();
        let i = ca
            .issue(
                cn,
                certrot_sandbox::ca::KeyAlg::EcdsaP256,
                now - time::Duration::hours(1),
                now + time::Duration::days(7),
            )
            .unwrap();
        Generation::from_pem(i.chain_pem.as_bytes(), "c", i.key_pem.as_bytes(), "k").unwrap()
    }

    fn current(
        g: &Generation,
        binding: Option<&str>,
        at: OffsetDateTime,
        source: CommitSource,
    ) -> CurrentRecord {
        CurrentRecord::of(g.leaf(), None, binding.map(str::to_string), source, at)
    }

    fn queued(g: &Generation, binding: &str) -> RetiringRecord {
        RetiringRecord {
            binding_id: binding.into(),
            service_manager: "main".into(),
            fingerprint_sha256: Some(g.leaf().fingerprint_sha256.clone()),
            retire_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
            reason: RetireReason::Replaced,
            attempts: 0,
        }
    }

    #[test]
    fn rollback_bookkeeping() {
        let cred = sm_credential();
        let now = datetime!(2026-11-23 12:00 UTC);
        let (a, b) = (generation("a"), generation("b"));
        // Every case switches back to A.
        let back_to_a =
            |st: &mut State, away: ServedBefore<'_>| rolled_back(st, &cred, &a, "gen-a", away, now);
        // B current, A's binding waiting for retirement: back to A.
        let mut st = State {
            current: Some(current(&b, Some("bind-b"), now, CommitSource::Rotate)),
            retiring: vec![queued(&a, "bind-a")],
            ..State::default()
        };
        back_to_a(&mut st, ServedBefore::Certificate(fp(&b)));
        let cur = st.current.clone().unwrap();
        assert_eq!(cur.binding_id.as_deref(), Some("bind-a"));
        assert_eq!(cur.source, CommitSource::Rollback);
        assert_eq!(st.retiring.len(), 1);
        assert_eq!(st.retiring[0].binding_id, "bind-b");
        assert_eq!(st.retiring[0].reason, RetireReason::RolledBack);
        assert_eq!(st.retiring[0].retire_at, now + time::Duration::hours(1));
        assert!(st.unknown_since.is_none());
        // Back to the generation the state already names: A's binding stays current and
        // nothing is queued. Away from B, a commit the state never recorded (no record of
        // its binding), or from a generation that could not be read: that binding is
        // unknown and its certificate was served until now, so nothing is an orphan for a
        // while. Away from nothing, or from A itself: no doubt.
        let doubt = [
            (ServedBefore::Certificate(fp(&b)), Some(now)),
            (ServedBefore::Unreadable, Some(now)),
            (ServedBefore::Nothing, None),
            (ServedBefore::Certificate(fp(&a)), None),
        ];
        // Away from B while B's binding is queued with an earlier deadline (a state that
        // missed a switch to B): B's certificate was served until now, so its binding gets
        // the whole grace period from now.
        let mut early = queued(&b, "bind-b");
        early.retire_at = now - time::Duration::minutes(5);
        let mut st = State {
            current: Some(current(&a, Some("bind-a"), now, CommitSource::Rotate)),
            retiring: vec![early],
            ..State::default()
        };
        let mut unreadable = st.clone();
        back_to_a(&mut st, ServedBefore::Certificate(fp(&b)));
        assert_eq!(st.retiring.len(), 1);
        assert_eq!(st.retiring[0].retire_at, now + time::Duration::hours(1));
        assert!(st.unknown_since.is_none());
        // Away from a generation that could not be read: it may have been B's.
        back_to_a(&mut unreadable, ServedBefore::Unreadable);
        assert_eq!(
            unreadable.retiring[0].retire_at,
            now + time::Duration::hours(1)
        );
        assert_eq!(unreadable.unknown_since, Some(now));
        for (away, unknown_since) in doubt {
            let mut st = State {
                current: Some(current(&a, Some("bind-a"), now, CommitSource::Rotate)),
                ..State::default()
            };
            back_to_a(&mut st, away);
            assert_eq!(st.current.unwrap().binding_id.as_deref(), Some("bind-a"));
            assert!(st.retiring.is_empty());
            assert_eq!(st.unknown_since, unknown_since, "{away:?}");
        }
        // A commit of B the state never recorded (its intent still names B's binding), then
        // back to A: B's binding gets the grace period instead of being reconciled away.
        let intent = |g: &Generation, id: &str| PendingRecord {
            binding_name: "n".into(),
            binding_id: Some(id.into()),
            service_manager: "main".into(),
            instance_id: "i".into(),
            started_at: now,
            fingerprint_sha256: Some(g.leaf().fingerprint_sha256.clone()),
        };
        let mut st = State {
            current: Some(current(&a, Some("bind-a"), now, CommitSource::Rotate)),
            pending: Some(intent(&b, "bind-b")),
            ..State::default()
        };
        back_to_a(&mut st, ServedBefore::Certificate(fp(&b)));
        assert_eq!(
            st.current.clone().unwrap().binding_id.as_deref(),
            Some("bind-a")
        );
        assert!(st.pending.is_none());
        assert_eq!(st.retiring.len(), 1);
        assert_eq!(st.retiring[0].binding_id, "bind-b");
        assert!(st.unknown_since.is_none());
        // The intent's generation is the one switched to: its binding is current.
        let mut st = State {
            current: Some(current(&b, Some("bind-b"), now, CommitSource::Rotate)),
            pending: Some(intent(&a, "bind-a")),
            ..State::default()
        };
        back_to_a(&mut st, ServedBefore::Certificate(fp(&b)));
        assert_eq!(st.current.unwrap().binding_id.as_deref(), Some("bind-a"));
        assert_eq!(st.retiring.len(), 1);
        assert_eq!(st.retiring[0].binding_id, "bind-b");
        assert!(st.unknown_since.is_none());
        // A generation whose binding is unknown: reconcile must not take it for an orphan.
        let mut st = State {
            current: Some(current(&b, Some("bind-b"), now, CommitSource::Rotate)),
            ..State::default()
        };
        back_to_a(&mut st, ServedBefore::Certificate(fp(&b)));
        assert_eq!(st.current.unwrap().binding_id, None);
        assert_eq!(st.unknown_since, Some(now));
        assert_eq!(st.retiring[0].binding_id, "bind-b");
    }

    #[test]
    fn tracking_settles_only_after_a_rotation_has_been_current_for_retire_after() {
        let cred = sm_credential();
        let lost = datetime!(2026-11-23 12:00 UTC);
        let g = generation("a");
        let hour = time::Duration::hours(1);
        let mut st = State {
            unknown_since: Some(lost),
            ..State::default()
        };
        assert!(
            settle_tracking(&mut st, &cred, lost + hour * 5),
            "no current at all"
        );
        st.current = Some(current(&g, Some("b1"), lost - hour, CommitSource::Rotate));
        assert!(
            settle_tracking(&mut st, &cred, lost + hour * 5),
            "committed before the loss"
        );
        st.current = Some(current(&g, Some("b1"), lost + hour, CommitSource::Rollback));
        assert!(
            settle_tracking(&mut st, &cred, lost + hour * 5),
            "a rollback settles nothing"
        );
        st.current = Some(current(&g, Some("b1"), lost + hour, CommitSource::Rotate));
        assert!(
            settle_tracking(&mut st, &cred, lost + hour + hour / 2),
            "not yet retire_after"
        );
        assert!(st.unknown_since.is_some());
        assert!(!settle_tracking(&mut st, &cred, lost + hour * 2));
        assert!(st.unknown_since.is_none(), "the mark is cleared");
        // A date at the end of time cannot overflow.
        st.unknown_since = Some(lost);
        st.current = Some(current(
            &g,
            Some("b1"),
            datetime!(9999-12-31 23:59 UTC),
            CommitSource::Rotate,
        ));
        assert!(settle_tracking(&mut st, &cred, lost));
    }

    #[test]
    fn decisions() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let valid = |renew: OffsetDateTime, after: OffsetDateTime| CurrentView::Valid {
            not_after: after,
            renews_at: renew,
        };
        let later = now + time::Duration::days(2);
        let far = now + time::Duration::days(5);
        assert_eq!(
            decide(true, &valid(later, far), Some(far), now),
            Decision::Rotate(Reason::Forced)
        );
        assert_eq!(
            decide(false, &valid(later, far), None, now),
            Decision::NotDue { renews_at: later }
        );
        let past = now - time::Duration::hours(1);
        assert_eq!(
            decide(false, &valid(past, far), None, now),
            Decision::Rotate(Reason::Due)
        );
        assert_eq!(
            decide(false, &valid(past, past), None, now),
            Decision::Rotate(Reason::Expired)
        );
        assert_eq!(
            decide(false, &CurrentView::Missing, None, now),
            Decision::Rotate(Reason::Missing)
        );
        assert_eq!(
            decide(false, &CurrentView::Unusable("x".into()), Some(past), now),
            Decision::Rotate(Reason::Unusable)
        );
        assert_eq!(
            decide(false, &valid(past, far), Some(later), now),
            Decision::BackingOff { until: later }
        );
    }

    fn iss(params: Value) -> SmIssuer {
        SmIssuer {
            service_manager: "main".into(),
            instance_id: "i".into(),
            binding_prefix: "orders".into(),
            key_length: 4096,
            validity_days: 3,
            app_identifier: Some("orders".into()),
            certificate: crate::config::SmCertificate::ServiceManaged,
            key_type: crate::config::KeyType::EcdsaP256,
            certificate_pinning: false,
            parameters: params.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn parameters_per_kind_with_pass_through() {
        let p = binding_parameters(
            Kind::Xsuaa,
            &iss(json!({"x509": {"ensure-uniqueness": true}, "extra": 1})),
            None,
        );
        assert_eq!(
            p,
            json!({"credential-type": "x509", "extra": 1,
                   "x509": {"key-length": 4096, "validity": 3, "validity-type": "DAYS", "ensure-uniqueness": true}})
        );
        let p = binding_parameters(Kind::Identity, &iss(json!({})), None);
        assert_eq!(
            p,
            json!({"credential-type": "X509_GENERATED", "key-length": 4096, "validity": 3,
                   "validity-type": "DAYS", "app-identifier": "orders"})
        );
        let p = binding_parameters(Kind::Xsuaa, &iss(json!({})), Some("PEM"));
        assert_eq!(
            p["x509"],
            json!({"certificate": "PEM", "certificate-pinning": false})
        );
        let p = binding_parameters(Kind::Identity, &iss(json!({})), Some("PEM"));
        assert_eq!(
            p,
            json!({"credential-type": "X509_PROVIDED", "certificate": "PEM"})
        );
    }

    #[test]
    fn binding_names_are_utc_stamped() {
        assert_eq!(
            binding_name("orders", datetime!(2026-11-23 09:05:07.9 +01:00)),
            "orders-20261123T080507.900Z"
        );
        // Two rotations in one second get two names.
        assert_ne!(
            binding_name("orders", datetime!(2026-11-23 08:05:07.001 UTC)),
            binding_name("orders", datetime!(2026-11-23 08:05:07.002 UTC))
        );
    }
}
