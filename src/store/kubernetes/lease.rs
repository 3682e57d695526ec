//! The optional `coordination.k8s.io` Lease `certrot-<name>` that serialises runs on one
//! credential: taken with a per-run holder identity, renewed every third of its duration
//! while the work runs, checked before every write, released at the end.

use super::*;

impl SecretTarget {
    fn lease_name(&self) -> String {
        let mut n = format!("certrot-{}", self.cfg.name);
        n.truncate(253);
        n.trim_end_matches(['-', '.']).to_string()
    }

    /// Takes the Lease `certrot-<name>` (creating it); `Ok(Err(holder))` while another holder
    /// has it and it has not expired. With `wait`, polls until it is free.
    pub async fn acquire_lease(&self, wait: bool) -> Result<Result<LeaseGuard, String>, KubeError> {
        let name = self.lease_name();
        let place = format!("lease {}/{name}", self.namespace);
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        // pid 1 in every container, and pods may share a host name: a per-run nonce too.
        let nonce = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 & 0xffff_ffff;
        let holder = format!("{host}/{}/{nonce:08x}", std::process::id());
        let pp = PostParams::default();
        let duration = i32::try_from(self.lease_secs().as_secs()).unwrap_or(i32::MAX);
        loop {
            let existing = self
                .leases
                .get_opt(&name)
                .await
                .map_err(|e| self.fail(&place, "reading", e))?;
            let now = OffsetDateTime::now_utc();
            let busy = existing.as_ref().and_then(|l| {
                let spec = l.spec.as_ref()?;
                let who = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
                let renewed = spec.renew_time.as_ref().and_then(to_offset)?;
                let until = renewed
                    .checked_add(time::Duration::seconds(i64::from(
                        spec.lease_duration_seconds.unwrap_or(0),
                    )))
                    .unwrap_or(renewed);
                (until > now && who != holder).then(|| {
                    format!(
                        "{who} (lease {name} until {})",
                        crate::status::short_time(until)
                    )
                })
            });
            if let Some(who) = busy {
                if !wait {
                    return Ok(Err(who));
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
            let spec = LeaseSpec {
                holder_identity: Some(holder.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(micro_now()),
                renew_time: Some(micro_now()),
                lease_transitions: Some(
                    existing
                        .as_ref()
                        .and_then(|l| l.spec.as_ref()?.lease_transitions)
                        .unwrap_or(0)
                        .saturating_add(i32::from(existing.is_some())),
                ),
                ..LeaseSpec::default()
            };
            // The Lease runs from its renew time, taken before the request.
            let asked = tokio::time::Instant::now();
            let r = match existing {
                Some(mut l) => {
                    l.spec = Some(spec);
                    self.leases.replace(&name, &pp, &l).await
                }
                None => {
                    let l = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(self.namespace.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec),
                    };
                    self.leases.create(&pp, &l).await
                }
            };
            match r {
                Ok(_) => {
                    *self.held.lock().await = Some(HeldLease {
                        name: name.clone(),
                        holder: holder.clone(),
                        renewed: asked,
                        lost_to: None,
                    });
                    return Ok(Ok(LeaseGuard { name, holder }));
                }
                // Someone took it between our read and write: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.fail(&place, "taking the lease", e)),
            }
        }
    }

    /// Renews the held Lease every third of `lease_duration` for as long as it is polled;
    /// never completes. A renewal that finds another holder marks the Lease lost.
    pub async fn keep_lease(&self) -> std::convert::Infallible {
        let every = self.lease_secs() / 3;
        // After a failed renewal, sooner: the Lease still holds for a while.
        let soon = (every / 4).min(std::time::Duration::from_secs(5));
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            let renewed = tokio::time::timeout(every, self.renew_lease(every))
                .await
                .unwrap_or_else(|_| {
                    Err(KubeError::Transport {
                        place: self.place(),
                        action: "renewing the lease",
                        message: format!("no answer within {every:?}"),
                    })
                });
            wait = match renewed {
                Ok(()) => every,
                Err(e @ KubeError::LeaseLost { .. }) => {
                    tracing::error!(secret = %self.place(), "{e}");
                    return std::future::pending().await;
                }
                Err(e) => {
                    tracing::warn!(secret = %self.place(), "could not renew the lease (trying again): {e}");
                    soon
                }
            }
        }
    }

    /// `lease_duration` as the Lease states it: whole seconds.
    fn lease_secs(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cfg.lease_duration.0.as_secs())
    }

    /// Before a write: the Lease, if this run holds one, must still be its own. A Lease
    /// found lost (by [`SecretTarget::keep_lease`] or here) refuses the write; one renewed
    /// within the last two thirds of `lease_duration` is taken as still held (no other
    /// run can take it before it expires, clocks in sync), an older one is renewed first.
    pub async fn hold_lease(&self) -> Result<(), KubeError> {
        self.renew_lease(self.lease_secs() * 2 / 3).await
    }

    /// Renews the Lease when the last renewal is at least `older_than` ago; `LeaseLost`
    /// when someone else holds it (remembered: later calls refuse without asking).
    async fn renew_lease(&self, older_than: std::time::Duration) -> Result<(), KubeError> {
        let mut held = self.held.lock().await;
        let Some(h) = held.as_mut() else {
            return Ok(());
        };
        let place = format!("lease {}/{}", self.namespace, h.name);
        if let Some(holder) = &h.lost_to {
            return Err(KubeError::LeaseLost {
                place,
                holder: holder.clone(),
            });
        }
        if h.renewed.elapsed() < older_than {
            return Ok(());
        }
        for _ in 0..WRITE_ATTEMPTS {
            let asked = tokio::time::Instant::now();
            let lease = self
                .leases
                .get_opt(&h.name)
                .await
                .map_err(|e| self.fail(&place, "reading", e))?;
            let holder = lease
                .as_ref()
                .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
                .unwrap_or_default();
            let Some(mut lease) = lease.filter(|_| holder == h.holder) else {
                let holder = if holder.is_empty() {
                    "nobody (released or deleted by someone else)".to_string()
                } else {
                    holder
                };
                h.lost_to = Some(holder.clone());
                return Err(KubeError::LeaseLost { place, holder });
            };
            lease.spec.get_or_insert_with(LeaseSpec::default).renew_time = Some(micro_now());
            match self
                .leases
                .replace(&h.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    h.renewed = asked;
                    tracing::debug!(lease = %place, "lease renewed");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.fail(&place, "renewing the lease", e)),
            }
        }
        // Not `Conflict`: that would read as another run's change to the state.
        Err(KubeError::Transport {
            place,
            action: "renewing the lease",
            message: format!("the Lease changed on each of {WRITE_ATTEMPTS} attempts"),
        })
    }

    /// Gives the Lease back (clears the holder); it would expire anyway.
    pub async fn release(&self, guard: LeaseGuard) {
        let lost = self
            .held
            .lock()
            .await
            .take()
            .is_some_and(|h| h.lost_to.is_some());
        if lost {
            return;
        }
        let place = format!("lease {}/{}", self.namespace, guard.name);
        let result = async {
            // A renewal cut short may still land meanwhile: 409 → read again.
            for _ in 0..WRITE_ATTEMPTS {
                let Some(mut l) = self.leases.get_opt(&guard.name).await? else {
                    return Ok(());
                };
                let spec = l.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity.as_deref() != Some(&guard.holder) {
                    return Ok(());
                }
                spec.holder_identity = None;
                spec.renew_time = None;
                spec.acquire_time = None;
                match self
                    .leases
                    .replace(&guard.name, &PostParams::default(), &l)
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    r => return r.map(|_| ()),
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(lease = %place, "could not release the lease (it expires by itself): {e}");
        }
    }
}
