//! The manual operations on one credential, under its lock: `import` (a service key made
//! elsewhere becomes the current generation, token-checked first) and `rollback` (back to the
//! previous generation, token-checked first). They return what happened; the CLI prints it
//! and chooses the exit code.

use crate::rotate::ServedBefore;
use crate::state::CurrentRecord;
use crate::status::short_time;
use crate::store::Backend;
use time::OffsetDateTime;

/// Reads a service key, verifies it and commits it as the credential's new generation.
pub async fn import(
    cred: &crate::config::Credential,
    backend: &Backend,
    key_file: &std::path::Path,
    binding_id: Option<&str>,
    validate: bool,
) -> Result<String, String> {
    let bytes = crate::fsutil::read_input(key_file)?;
    let bytes = zeroize::Zeroizing::new(bytes);
    let label = key_file.display().to_string();
    // The binding behind the key: named on the command line, or in the document itself.
    let adopted = match binding_id
        .map(str::to_string)
        .or_else(|| crate::servicekey::binding_id(&bytes))
    {
        None => None,
        Some(id) if !crate::issuer::service_manager::is_resource_id(&id) => {
            return Err(format!(
                "binding id {:?} is not a Service Manager id (letters, digits, '-', '_')",
                crate::text::printable(&id, 100)
            ));
        }
        Some(id) => match &cred.issuer {
            Some(crate::config::Issuer::ServiceManager(_)) => Some(id),
            _ => {
                return Err(format!(
                    "binding {id}: only a credential with a service-manager issuer retires the binding behind its key; import without --binding-id and delete that binding by hand"
                ));
            }
        },
    };
    let g = crate::servicekey::parse_service_key(&bytes, &label, &cred.pem_fields)
        .map_err(|e| e.to_string())?;
    // [credential.fields] fill in what the service key lacks; the key's own fields win.
    let fields = crate::generation::merge_fields(None, &cred.fields, g.credentials());
    let g = g.with_credentials(fields);
    let now = OffsetDateTime::now_utc();
    if g.leaf().not_after <= now {
        return Err(format!(
            "{label}: the certificate expired at {}; create a new service key",
            short_time(g.leaf().not_after)
        ));
    }
    if validate {
        crate::check::validate(cred, &g).await.map_err(|e| {
            format!("{label}: the token check failed, nothing was written: {e} (use --no-validate to write it anyway)")
        })?;
    }
    let state = backend
        .load_state(&cred.name, true)
        .await
        .map_err(|e| e.to_string())?
        .state;
    let dir = backend.commit(&g, now).await.map_err(|e| e.to_string())?;
    let current = CurrentRecord::of(
        g.leaf(),
        Some(dir.clone()),
        adopted.clone(),
        crate::state::CommitSource::Import,
        now,
    );
    let replicated = backend.replicate(&g, now).await;
    let state = record_replicas(state.committed(current, None), &replicated, now);
    backend
        .save_state(&state)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(credential = %cred.name, generation = %dir, serial = %g.leaf().serial, binding = ?adopted, "imported");
    let mut line = format!(
        "imported {}: {} (client id {}), valid until {}, into {} ({dir})",
        cred.name,
        crate::text::printable(&g.leaf().subject, 200),
        crate::text::printable(g.client_id().unwrap_or("-"), 200),
        short_time(g.leaf().not_after),
        backend.describe()
    );
    line.push_str(&replica_lines(&replicated));
    let retire_after = humantime::format_duration(cred.policy.retire_after.0);
    match (&adopted, &cred.issuer) {
        (Some(id), _) => line.push_str(&format!(
            "\nbinding {id} adopted: the first rotation retires it {retire_after} after its commit"
        )),
        (None, Some(crate::config::Issuer::ServiceManager(_))) => line.push_str(&format!(
            "\nthe binding behind this service key stays alive: once the first rotation has been current for {retire_after}, delete it (`cf delete-service-key INSTANCE KEY`, or `btp delete services/binding --name NAME`), or import again with --binding-id ID to have certrot retire it"
        )),
        (None, _) => line.push_str(
            "\nthe binding or key this service key came from stays alive: delete it by hand once this credential no longer uses it",
        ),
    }
    Ok(line)
}

/// Switches the credential back to its previous generation (token-checked first unless
/// `validate` is off) and records it in the state; `Ok` is the line to print.
pub async fn rollback(
    cred: &crate::config::Credential,
    backend: &Backend,
    validate: bool,
) -> Result<String, String> {
    let name = &cred.name;
    let previous = backend.previous().await.map_err(|e| e.to_string())?;
    if validate && let Err(e) = crate::check::validate(cred, &previous).await {
        return Err(format!(
            "the previous generation fails its token check, nothing was switched: {e} (--no-validate switches anyway)"
        ));
    }
    let now = OffsetDateTime::now_utc();
    // The generation switched to must be the one checked (a Secret may change meanwhile).
    let expected = previous.leaf().fingerprint_sha256.clone();
    // What was served until the switch: a generation the state does not know (or one that
    // cannot be read, which may be why it is rolled away from) holds back reconcile.
    let away = backend.served_fingerprint().await;
    let (from, to, g) = backend
        .rollback(&expected)
        .await
        .map_err(|e| e.to_string())?;
    if g.leaf().not_after <= now {
        tracing::warn!(
            credential = %name,
            "the generation rolled back to has expired"
        );
    }
    // Every replica follows the primary back.
    let replicated = backend.replicate(&g, now).await;
    let saved = match backend.load_state(name, true).await {
        Ok(l) => {
            let mut state = l.state;
            let away = match &away {
                Ok(None) => ServedBefore::Nothing,
                Ok(Some(fp)) => ServedBefore::Certificate(fp),
                Err(_) => ServedBefore::Unreadable,
            };
            crate::rotate::rolled_back(&mut state, cred, &g, &to, away, now);
            let state = record_replicas(state, &replicated, now);
            backend.save_state(&state).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        return Err(format!("switched, but the state was not saved: {e}"));
    }
    let line = format!(
        "rolled back {name}: {from} -> {to} ({}, valid until {}){}",
        crate::text::printable(&g.leaf().subject, 200),
        short_time(g.leaf().not_after),
        replica_lines(&replicated)
    );
    if replicated.iter().any(|(_, r)| r.is_err()) {
        return Err(format!(
            "{line}\nnot every replica serves the generation rolled back to; the next run retries them"
        ));
    }
    Ok(line)
}

/// The replicas' outcomes recorded in the state (lagging ones retried with backoff).
fn record_replicas(
    mut state: crate::state::State,
    replicated: &[(String, Result<crate::store::Synced, String>)],
    now: OffsetDateTime,
) -> crate::state::State {
    for (place, r) in replicated {
        state = match r {
            Ok(_) => state.replica_synced(place),
            Err(e) => state.replica_failed(place, e, now),
        };
    }
    state
}

/// One line per replica: what it serves now.
fn replica_lines(replicated: &[(String, Result<crate::store::Synced, String>)]) -> String {
    replicated
        .iter()
        .map(|(place, r)| match r {
            Ok(crate::store::Synced::Already) => format!("\nreplica {place}: already serves it"),
            Ok(crate::store::Synced::Written(n)) => format!("\nreplica {place}: written ({n})"),
            Err(e) => format!("\nreplica {place}: FAILED, it keeps what it served: {e}"),
        })
        .map(|l| crate::text::printable(&l[1..], 400))
        .fold(String::new(), |acc, l| acc + "\n" + &l)
}
