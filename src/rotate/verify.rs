//! Proving a new generation before it is committed: its certificate against the request
//! (key, lifetime, subject, issuer), then a token request with it, retried.

use super::*;

/// Step 5: builds the new generation from the binding (and, self-managed, the own chain and
/// key) and checks it offline.
pub(super) fn verify(
    cred: &Credential,
    b: &Binding,
    own: Option<(&str, &str)>,
    previous: Option<&Generation>,
    now: OffsetDateTime,
) -> Result<Generation, Failure> {
    let bad = |m: String| failure(Step::Verify, "bad-credentials", m);
    let previous_client = previous.and_then(Generation::client_id);
    let issued: &Map<String, Value> = b
        .credentials
        .as_ref()
        .ok_or_else(|| bad(format!("binding {} has no credentials", b.id)))?;
    // Certificate and key come from the binding (or our own); every other field the
    // application reads carries over (the binding's answer wins).
    let mut creds = issued.clone();
    if let Some((chain, key)) = own {
        creds.insert("certificate".into(), Value::String(chain.to_string()));
        creds.insert("key".into(), Value::String(key.to_string()));
    }
    let creds = &creds;
    let field = |k: &str| creds.get(k).and_then(Value::as_str);
    let pem = &cred.pem_fields;
    let cert = field(&pem.certificate).ok_or_else(|| {
        bad(format!(
            "binding {}: no {} in the credentials",
            b.id, pem.certificate
        ))
    })?;
    let key = field(&pem.key).ok_or_else(|| {
        bad(format!(
            "binding {}: no {} in the credentials",
            b.id, pem.key
        ))
    })?;
    let g = Generation::from_pem(
        cert.as_bytes(),
        &format!("binding {}: certificate", b.id),
        key.as_bytes(),
        &format!("binding {}: key", b.id),
    )
    .map_err(|e| bad(e.to_string()))?
    .with_credentials(merge_fields(
        previous.map(Generation::credentials),
        &cred.fields,
        creds,
    ));
    check_lifetime(&g, &format!("binding {}: the new certificate", b.id), now)?;
    // The binding itself must name its client: an id carried over from the previous
    // generation would hide a binding of another client.
    let answered = creds.get("clientid").and_then(Value::as_str);
    match (answered, previous_client) {
        // A generic service's credentials need not name an OAuth client.
        (None, _) if cred.kind == crate::config::Kind::Generic => {}
        (None, _) => {
            return Err(bad(format!(
                "binding {}: no clientid in the credentials",
                b.id
            )));
        }
        (Some(new), Some(old)) if new != old => {
            return Err(failure(
                Step::Verify,
                "client-id-changed",
                format!(
                    "binding {}: client id {new:?} differs from the current {old:?}",
                    b.id
                ),
            ));
        }
        _ => {}
    }
    Ok(g)
}

/// Step 5 for a `csr` issuer: the signed chain with the new key; the leaf's subject is the
/// one requested; its issuer is the previous generation's unless the rotation was forced (a
/// scheduled rotation never switches CA silently).
pub(super) fn verify_signed(
    cred: &Credential,
    csr_pem: &str,
    chain: &str,
    key_pem: &str,
    previous: Option<&Generation>,
    force: bool,
    now: OffsetDateTime,
) -> Result<Generation, Failure> {
    let bad = |label: &str, m: String| failure(Step::Verify, label, m);
    // The signer's answer is the chain (and, through check.client_id, the client id); every
    // other field the application reads carries over from the previous generation and
    // [credential.fields].
    let mut issued = Map::new();
    if let Some(id) = &cred.check.client_id {
        issued.insert("clientid".into(), json!(id));
    }
    issued.insert("certificate".into(), json!(chain));
    issued.insert("key".into(), json!(key_pem));
    let mut creds = merge_fields(previous.map(Generation::credentials), &cred.fields, &issued);
    // A certificate credential: an X.509 credential type carries over (`x509`,
    // `X509_PROVIDED`, …); anything else (say `binding-secret`) becomes `x509`.
    let x509_type = creds
        .get("credential-type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("x509"));
    if !x509_type {
        creds.insert("credential-type".into(), json!("x509"));
    }
    let g = Generation::from_pem(
        chain.as_bytes(),
        "the signer's certificate chain",
        key_pem.as_bytes(),
        "the new key",
    )
    .map_err(|e| bad("bad-certificate", e.to_string()))?
    .with_credentials(creds);
    check_lifetime(&g, "the signed certificate", now)?;
    let requested = pem::parse(csr_pem)
        .ok()
        .and_then(|p| {
            use x509_parser::prelude::FromDer;
            x509_parser::certification_request::X509CertificationRequest::from_der(p.contents())
                .ok()
                .map(|(_, c)| c.certification_request_info.subject.to_string())
        })
        .unwrap_or_default();
    let leaf = g.leaf();
    if leaf.subject != requested {
        return Err(bad(
            "subject-changed",
            format!(
                "the signer issued {:?} for the requested {requested:?} (a Vault role without sign-verbatim drops parts of the subject)",
                leaf.subject
            ),
        ));
    }
    if let Some(p) = previous
        && p.leaf().subject == requested
        && p.leaf().issuer != leaf.issuer
        && !force
    {
        return Err(bad(
            "issuer-changed",
            format!(
                "the issuer changed from {:?} to {:?}; if the CA change is intended, run `certrot rotate --now {}`",
                p.leaf().issuer,
                leaf.issuer,
                cred.name
            ),
        ));
    }
    Ok(g)
}

/// `not_before` within the clock-skew allowance, at least half the lifetime left.
pub(super) fn check_lifetime(
    g: &Generation,
    what: &str,
    now: OffsetDateTime,
) -> Result<(), Failure> {
    let leaf = g.leaf();
    if leaf.not_before > now + NOT_BEFORE_SKEW {
        return Err(failure(
            Step::Verify,
            "not-yet-valid",
            format!("{what} is valid only from {}", short_time(leaf.not_before)),
        ));
    }
    let lifetime = leaf.not_after - leaf.not_before;
    if leaf.not_after - now < lifetime / 2 {
        return Err(failure(
            Step::Verify,
            "short-lifetime",
            format!(
                "{what} has less than half its lifetime left (not_after {})",
                short_time(leaf.not_after)
            ),
        ));
    }
    Ok(())
}

/// Step 6: the token check with the new generation, retried for propagation delay
/// (`check.attempts` spread over `check.retry_for`).
pub(super) async fn check_with_retries(cred: &Credential, g: &Generation) -> Result<(), Failure> {
    let attempts = cred.check.attempts.max(1);
    let gap = if attempts > 1 {
        cred.check.retry_for.0 / (attempts - 1)
    } else {
        std::time::Duration::ZERO
    };
    let mut last = None;
    for i in 0..attempts {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        match crate::check::validate(cred, g).await {
            Ok(d) => {
                tracing::info!(credential = %cred.name, attempt = i + 1, ms = d.as_millis() as u64, event = "checked", "token check with the new generation passed");
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(credential = %cred.name, attempt = i + 1, label = e.kind.label(), "token check with the new generation failed");
                last = Some(e);
            }
        }
    }
    let (label, e) = last.map_or(("check", "no attempt".to_string()), |e| {
        (e.kind.label(), e.to_string())
    });
    Err(failure(
        Step::Check,
        label,
        format!("the new generation failed the token check {attempts} time(s): {e}"),
    ))
}
