//! The manual operations on one credential, under its lock: `import` (a service key made
//! elsewhere becomes the current generation, token-checked first) and `rollback` (back to the
//! previous generation, token-checked first). They return what happened; the CLI prints it
//! and chooses the exit code.

use crate::state::CurrentRecord;
use crate::status::short_time;
use crate::store::Backend;
use time::OffsetDateTime;

/// Reads a service key, verifies it and commits it as the credential's new generation.
pub async fn import(
    cred: &crate::config::Credential,
    backend: &Backend,
    key_file: &std::path::Path,
    validate: bool,
) -> Result<String, String> {
    let bytes = crate::fsutil::read_input(key_file)?;
    let bytes = zeroize::Zeroizing::new(bytes);
    let label = key_file.display().to_string();
    let g = crate::servicekey::parse_service_key(&bytes, &label).map_err(|e| e.to_string())?;
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
        None,
        crate::state::CommitSource::Import,
        now,
    );
    let state = state.committed(current, None);
    backend
        .save_state(&state)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(credential = %cred.name, generation = %dir, serial = %g.leaf().serial, "imported");
    Ok(format!(
        "imported {}: {} (client id {}), valid until {}, into {} ({dir})",
        cred.name,
        crate::text::printable(&g.leaf().subject, 200),
        crate::text::printable(g.client_id().unwrap_or("-"), 200),
        short_time(g.leaf().not_after),
        backend.describe()
    ))
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
    let saved = match backend.load_state(name, true).await {
        Ok(l) => {
            let mut state = l.state;
            crate::rotate::rolled_back(&mut state, cred, &g, &to, now);
            backend.save_state(&state).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = saved {
        return Err(format!("switched, but the state was not saved: {e}"));
    }
    Ok(format!(
        "rolled back {name}: {from} -> {to} ({}, valid until {})",
        crate::text::printable(&g.leaf().subject, 200),
        short_time(g.leaf().not_after)
    ))
}
