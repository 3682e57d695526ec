//! The pipeline for a self-managed credential signed by the operator's CA (`csr` issuer),
//! and the key + CSR + signature of a self-managed Service Manager binding.

use super::*;

impl Rotator {
    /// The pipeline for a `csr` issuer: no Service Manager — a new key (or the current one
    /// with `rotate_key = "never"`) and a CSR for the configured subject, signed; verified
    /// (subject as requested; issuer unchanged unless forced), checked, committed.
    pub(super) async fn pipeline_csr(
        &self,
        w: &mut Work<'_>,
        opts: Options,
        iss: &crate::config::CsrIssuer,
        reason: Reason,
        current: Option<Generation>,
        critical_at: Option<OffsetDateTime>,
    ) -> Outcome {
        let cred = w.cred;
        if opts.dry_run {
            return Outcome::DryRun {
                decision: format!("would rotate ({})", reason.label()),
                binding_name: None,
                parameters: Some(json!({
                    "subject": iss.subject, "sans": iss.sans, "key_type": iss.key_type,
                    "rotate_key": iss.rotate_key, "signer": iss.signer.type_(),
                })),
            };
        }
        // 4. issue
        let issue = async {
            let subject = crate::dn::parse_dn(&iss.subject)
                .map_err(|m| failure(Step::Issue, "subject", m))?;
            let existing = match iss.rotate_key {
                crate::config::RotateKey::Never => current.as_ref().map(|g| g.key_pem()),
                crate::config::RotateKey::Always => None,
            };
            let (key_type, sans) = (iss.key_type, iss.sans.clone());
            let made = tokio::task::spawn_blocking(move || {
                crate::issuer::csr::key_and_csr_with(
                    key_type,
                    existing.as_ref().map(|k| k.as_str()),
                    subject,
                    &sans,
                )
            })
            .await
            .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?
            .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?;
            let signer = crate::issuer::signer::Signer::load(&iss.signer)
                .map_err(|e| failure(Step::Issue, "signer", e.to_string()))?;
            let started = std::time::Instant::now();
            let chain = signer
                .sign(&crate::issuer::signer::SignRequest {
                    csr_pem: &made.csr_pem,
                    credential: &cred.name,
                    subject: &iss.subject,
                    now: self.now(),
                })
                .await
                .map_err(|e| failure(Step::Issue, "sign-failed", e.to_string()))?;
            tracing::info!(credential = %cred.name, ms = started.elapsed().as_millis() as u64, event = "issued", "certificate signed");
            Ok::<_, Failure>((made, chain))
        };
        let (made, chain) = match issue.await {
            Ok(x) => x,
            Err(f) => return self.record_failure(w, f, None, critical_at).await,
        };
        // 5. verify
        let g = match verify_signed(
            cred,
            &made.csr_pem,
            &chain,
            &made.key_pem,
            current.as_ref(),
            opts.force,
            self.now(),
        ) {
            Ok(g) => g,
            Err(f) => return self.record_failure(w, f, None, critical_at).await,
        };
        // 6. check
        if let Err(f) = check_with_retries(cred, &g).await {
            return self.record_failure(w, f, None, critical_at).await;
        }
        // 7. commit
        let now = self.now();
        let fp = g.leaf().fingerprint_sha256.clone();
        let section = self.commit_section().await;
        let dir = match self.commit_outcome(w, &g, &fp, now).await {
            Ok(d) => d,
            Err((f, _)) => {
                drop(section);
                return self.record_failure(w, f, None, critical_at).await;
            }
        };
        tracing::info!(credential = %cred.name, generation = %dir, not_after = %short_time(g.leaf().not_after), event = "committed", "committed");
        self.after_commit(w, reason, &g, dir, None, opts, now, section)
            .await
    }
}

/// Self-managed: a new key and CSR (on a blocking thread: RSA takes a while), signed.
/// Key, CSR and signed chain for a self-managed binding. The subject is the app identifier
/// (or binding prefix), stable across generations — except for XSUAA with
/// `certificate-pinning: false`, which requires subject + issuer DN to be unique among the
/// instance's bindings: there each generation's subject is its binding's name plus a random
/// number, so the new binding can live beside the old one through the grace period.
pub(super) async fn self_made(
    kind: Kind,
    iss: &SmIssuer,
    signer_cfg: &crate::config::SignerConfig,
    binding_name: &str,
    now: OffsetDateTime,
) -> Result<(String, zeroize::Zeroizing<String>), Failure> {
    let signer = crate::issuer::signer::Signer::load(signer_cfg)
        .map_err(|e| failure(Step::Issue, "signer", e.to_string()))?;
    let key_type = iss.key_type;
    let cn = if kind == Kind::Xsuaa && !iss.certificate_pinning {
        // The name has one-second resolution (a retried name gets `-2`): a random tail
        // keeps two generations of one second apart.
        let mut tail = [0u8; 4];
        aws_lc_rs::rand::fill(&mut tail)
            .map_err(|_| failure(Step::Issue, "keygen", "no random bytes"))?;
        // A CN has at most 64 characters: the name's end (its time) is kept.
        let name: String = {
            let chars: Vec<char> = binding_name.chars().collect();
            chars[chars.len().saturating_sub(55)..].iter().collect()
        };
        format!("{name}-{:08x}", u32::from_be_bytes(tail))
    } else {
        iss.app_identifier
            .clone()
            .unwrap_or_else(|| iss.binding_prefix.clone())
    };
    let cn_for_log = cn.clone();
    let made = tokio::task::spawn_blocking(move || {
        crate::issuer::csr::key_and_csr(key_type, crate::dn::subject(&cn, None))
    })
    .await
    .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?
    .map_err(|e| failure(Step::Issue, "keygen", e.to_string()))?;
    let chain = signer
        .sign(&crate::issuer::signer::SignRequest {
            csr_pem: &made.csr_pem,
            credential: &iss.binding_prefix,
            subject: &format!("CN={}", cn_for_log),
            now,
        })
        .await
        .map_err(|e| failure(Step::Issue, "sign-failed", e.to_string()))?;
    Ok((chain, made.key_pem))
}
