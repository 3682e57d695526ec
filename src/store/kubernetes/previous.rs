//! `<name>-previous`: the generation replaced last, kept for `certrot rollback` until its
//! binding is retired; rollback swaps the two Secrets.

use super::*;

impl SecretTarget {
    /// The generation a rollback would switch to (read from `<name>-previous`).
    pub async fn previous(&self) -> Result<Generation, crate::store::TargetError> {
        let (previous, place) = self.previous_secret().await?;
        self.generation_of(&previous, &place)
    }

    /// `<name>-previous` holding a generation, with its place for messages.
    pub(super) async fn previous_secret(&self) -> Result<(Secret, String), KubeError> {
        let name = self.previous_name();
        let place = format!("secret {}/{name}", self.namespace);
        let previous = self
            .secrets
            .get_opt(&name)
            .await
            .map_err(|e| self.fail(&place, "reading", e))?
            .filter(has_generation)
            .ok_or_else(|| KubeError::Invalid {
                place: place.clone(),
                reason:
                    "no previous generation is kept (it is removed once its binding is retired)"
                        .into(),
            })?;
        Ok((previous, place))
    }

    /// Creates or replaces `<name>-previous` with `data`.
    pub(super) async fn put_previous(
        &self,
        data: BTreeMap<String, ByteString>,
        generation: &str,
    ) -> Result<(), KubeError> {
        self.hold_lease().await?;
        let name = self.previous_name();
        let place = format!("secret {}/{name}", self.namespace);
        let pp = PostParams::default();
        for _ in 0..WRITE_ATTEMPTS {
            let existing = self
                .secrets
                .get_opt(&name)
                .await
                .map_err(|e| self.fail(&place, "reading", e))?;
            if let Some(e) = &existing {
                let of = e
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(&format!("{ANNOTATION_PREFIX}previous-of")));
                if has_generation(e) && of != Some(&self.cfg.name) {
                    return Err(KubeError::Invalid {
                        place,
                        reason: format!(
                            "holds a certificate but is not certrot's copy of {} (no certrot.io/previous-of = {0:?}); refusing to overwrite it",
                            self.cfg.name
                        ),
                    });
                }
            }
            let mut o = existing.clone().unwrap_or_else(|| self.new_secret(&name));
            o.data = Some(data.clone());
            let ann = o.metadata.annotations.get_or_insert_with(BTreeMap::new);
            ann.insert(GENERATION_ANNOTATION.into(), generation.to_string());
            ann.insert(
                format!("{ANNOTATION_PREFIX}previous-of"),
                self.cfg.name.clone(),
            );
            let r = match existing {
                Some(_) => self.secrets.replace(&name, &pp, &o).await,
                None => self.secrets.create(&pp, &o).await,
            };
            match r {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.fail(&place, "keeping the previous generation", e)),
            }
        }
        Err(KubeError::Conflict {
            place,
            action: "keeping the previous generation",
        })
    }

    /// Swaps the Secret and `<name>-previous`. Returns (from, to) generation names and the
    /// generation switched to.
    pub async fn rollback(
        &self,
        expected: &str,
    ) -> Result<(String, String, Generation), crate::store::TargetError> {
        let (previous, place) = self.previous_secret().await?;
        let no_previous = |reason: String| KubeError::Invalid {
            place: place.clone(),
            reason,
        };
        let g = self.generation_of(&previous, &place)?;
        let current = {
            let mut seen = self.seen.lock().await;
            *seen = Some(self.fetch().await?);
            seen.as_ref()
                .and_then(|s| s.obj.clone())
                .filter(has_generation)
                .ok_or_else(|| {
                    no_previous("there is no current generation to roll back from".into())
                })?
        };
        if g.leaf().fingerprint_sha256 != expected {
            return Err(
                no_previous("changed since it was checked; nothing was switched".into()).into(),
            );
        }
        if ours(&Some(current.clone())).1 == ours(&Some(previous.clone())).1 {
            return Err(no_previous(
                "holds the certificate the Secret already has (an interrupted commit); nothing to roll back to".into(),
            )
            .into());
        }
        let (from, to) = (generation_name(&current), generation_name(&previous));
        let data = previous.data.clone().unwrap_or_default();
        self.write("rolling back", |o| {
            o.data = Some(data.clone());
            set_annotation(o, GENERATION_ANNOTATION, Some(&to));
        })
        .await?;
        // The switch is done; a lost copy of the generation rolled away from must not make
        // the rollback look failed (its state would then not be recorded).
        if let Err(e) = self
            .put_previous(current.data.clone().unwrap_or_default(), &from)
            .await
        {
            tracing::warn!(secret = %self.place(), "rolled back, but the generation rolled away from was not kept: {e}");
        }
        Ok((from, to, g))
    }

    /// After retirements: `<name>-previous` goes once the binding of its certificate is gone.
    pub async fn retired(&self, fingerprints: &[String]) -> Result<(), KubeError> {
        let name = self.previous_name();
        let place = format!("secret {}/{name}", self.namespace);
        let Some(previous) = self
            .secrets
            .get_opt(&name)
            .await
            .map_err(|e| self.fail(&place, "reading", e))?
        else {
            return Ok(());
        };
        let fp = self
            .generation_of(&previous, &place)
            .ok()
            .map(|g| g.leaf().fingerprint_sha256.clone());
        if fp.is_some_and(|f| fingerprints.contains(&f)) {
            self.hold_lease().await?;
            // Only the object just read: not a newer copy written meanwhile.
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    resource_version: previous.metadata.resource_version.clone(),
                    uid: previous.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match self.secrets.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(self.fail(&place, "deleting", e)),
            }
            tracing::info!(secret = %place, "removed the previous generation: its binding is retired");
        }
        Ok(())
    }
}
