//! `POST /v1/service_bindings`: a binding issued (or a provided certificate accepted), its
//! registration at the token endpoint, synchronously or as an operation; the per-resource
//! concurrency rule.

use super::*;

pub(super) fn create(sh: &Shared, body: &Value, async_mode: bool) -> Response<Full<Bytes>> {
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let instance_id = body["service_instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() || instance_id.is_empty() {
        return sm_error(
            400,
            "BadRequest",
            "name and service_instance_id are required",
        );
    }
    let labels = match valid_labels(&body["labels"]) {
        Ok(l) => l,
        Err(m) => return sm_error(400, "BadRequest", &m),
    };
    let params = body["parameters"].as_object().cloned().unwrap_or_default();
    let mut s = lock(&sh.state);
    settle(&mut s, sh);
    let Some(inst) = s.instances.iter().find(|i| i.id == instance_id) else {
        return sm_error(
            404,
            "NotFound",
            &format!("service instance {instance_id} not found"),
        );
    };
    let (kind, client_id) = (inst.kind, inst.client_id.clone());
    let on_instance = s.bindings.iter().filter(|b| b.instance_id == instance_id);
    if on_instance.clone().any(|b| b.name == name) {
        return sm_error(
            409,
            "Conflict",
            &format!("binding with name {name} already exists"),
        );
    }
    if on_instance.count() >= 1000 {
        return sm_error(
            400,
            "BadRequest",
            "the service instance has reached the limit of 1000 bindings",
        );
    }
    let want = match wanted(kind, &params) {
        Ok(w) => w,
        Err(m) => return sm_error(400, "BadRequest", &format!("invalid parameters: {m}")),
    };
    let fault = take_fault(&mut s, SmCall::Create, |f| {
        matches!(
            f,
            SmFault::OperationFails
                | SmFault::MalformedCredentials
                | SmFault::WithoutClientId
                | SmFault::CreatedThenStatus(_)
        )
    });
    let id = random_id();
    let unpinned =
        matches!(want, Wanted::Provided { pinning: false, .. }) && kind == InstanceKind::Xsuaa;
    let provided_chain = match &want {
        Wanted::Provided { chain_pem, .. } => Some(chain_pem.clone()),
        Wanted::Generated { .. } => None,
    };
    let (mut credentials, fingerprint, registration) = match want {
        Wanted::Generated { alg, days, cn } => {
            let now = time::OffsetDateTime::now_utc();
            let lifetime = time::Duration::seconds((days * sh.opts.seconds_per_day) as i64);
            // A little clock-skew allowance, never a noticeable share of a short lifetime.
            let backdate = (lifetime / 10_i32).min(time::Duration::seconds(5));
            let cn = cn.unwrap_or_else(|| id.clone());
            let alg = sh.opts.key_override.unwrap_or(alg);
            let issued = if alg == KeyAlg::Rsa2048 && !sh.rsa_pool.is_empty() {
                s.rsa_next = (s.rsa_next + 1) % sh.rsa_pool.len();
                sh.ca.issue_for_key(
                    &cn,
                    &sh.rsa_pool[s.rsa_next],
                    now - backdate,
                    now + lifetime,
                )
            } else {
                sh.ca.issue(&cn, alg, now - backdate, now + lifetime)
            };
            let Ok(issued) = issued else {
                return sm_error(500, "InternalError", "the sandbox CA failed");
            };
            let fp = leaf_fingerprint(&issued.chain_pem).unwrap_or_default();
            let creds = json!({
                "clientid": client_id, "certificate": issued.chain_pem,
                "key": issued.key_pem.as_str(),
            });
            // Cloud Logging's ingest host accepts the certificates of its bindings only.
            let registered = if kind == InstanceKind::CloudLogging {
                format!("{}{client_id}", crate::token::INGEST_CLIENT_PREFIX)
            } else {
                client_id.clone()
            };
            (
                creds,
                Some(fp.clone()),
                Registration::Fingerprint(registered, fp),
            )
        }
        Wanted::Provided { chain_pem, pinning } => {
            let ders: Vec<CertificateDer<'static>> =
                match CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(d) if !d.is_empty() => d,
                    _ => return sm_error(400, "BadRequest", "certificate is not PEM"),
                };
            if let Err(e) = sh
                .trusted
                .verify_client_cert(&ders[0], &ders[1..], UnixTime::now())
            {
                return sm_error(
                    400,
                    "BadRequest",
                    &format!("certificate is not trusted: {e}"),
                );
            }
            let fp = crate::fingerprint(&ders[0]);
            if s.bindings
                .iter()
                .any(|b| b.instance_id == instance_id && b.fingerprint.as_deref() == Some(&fp))
            {
                return sm_error(
                    400,
                    "BadRequest",
                    "this certificate is already used on the instance",
                );
            }
            let reg = if pinning {
                Registration::Fingerprint(client_id.clone(), fp.clone())
            } else {
                let Ok((_, c)) = x509_parser::parse_x509_certificate(&ders[0]) else {
                    return sm_error(400, "BadRequest", "certificate does not parse");
                };
                Registration::Dn(
                    client_id.clone(),
                    c.subject().to_string(),
                    c.issuer().to_string(),
                )
            };
            (json!({"clientid": client_id}), Some(fp), reg)
        }
    };
    let chain = credentials
        .get("certificate")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(provided_chain);
    let names = chain.as_deref().and_then(leaf_names);
    let live = || s.bindings.iter().filter(|b| b.instance_id == instance_id);
    // XSUAA, self-managed with pinning off: subject + issuer DN unique on the instance.
    if unpinned
        && let Some(n) = &names
        && live().any(|b| b.names.as_ref() == Some(n))
    {
        return broker_error(
            400,
            "The combination of subject and issuer DN must be unique among the bindings of the instance (certificate-pinning: false)",
        );
    }
    // Identity Authentication: at most 20 distinct certificate subjects per instance.
    if kind == InstanceKind::Identity
        && let Some((subject, _)) = &names
    {
        let mut subjects: std::collections::BTreeSet<&str> = live()
            .filter_map(|b| b.names.as_ref().map(|(s, _)| s.as_str()))
            .collect();
        subjects.insert(subject);
        if subjects.len() > IAS_MAX_SUBJECTS {
            return broker_error(
                400,
                "You can have a maximum of 20 different certificate subject DNs per service instance",
            );
        }
    }
    if kind == InstanceKind::ServiceManager {
        merge(&mut credentials, json!({"sm_url": sh.url}));
    }
    match kind {
        InstanceKind::Xsuaa | InstanceKind::ServiceManager => {
            let extra = json!({
                "certurl": sh.tokens.cert_base(), "url": sh.tokens.plain_base(),
                "uaadomain": "127.0.0.1", "credential-type": "x509",
                "xsappname": format!("{client_id}-app"), "identityzone": "sandbox",
                "certificate-pinning": true,
            });
            merge(&mut credentials, extra);
        }
        InstanceKind::Identity => {
            let extra = json!({
                "url": sh.tokens.ias_base(), "credential-type": "X509_GENERATED",
                "app_tid": "sandbox-tenant", "domains": ["127.0.0.1"],
            });
            merge(&mut credentials, extra);
        }
        InstanceKind::CloudLogging => {
            // The service key of SAP Cloud Logging's documentation: no OAuth client, the
            // certificate and key under their ingest names, the endpoint as a host name.
            let take = |k: &str| credentials.get(k).cloned().unwrap_or(Value::Null);
            credentials = json!({
                "ingest-mtls-endpoint": sh.tokens.ingest_host(),
                "ingest-mtls-cert": take("certificate"),
                "ingest-mtls-key": take("key"),
                "server-ca": sh.ca.root_pem(),
                "ingest-endpoint": sh.tokens.ingest_host(),
                "ingest-username": format!("{client_id}-user"),
                "ingest-password": random_id(),
            });
        }
    }
    if fault == Some(SmFault::WithoutClientId)
        && let Some(c) = credentials.as_object_mut()
    {
        c.remove("clientid");
    }
    if fault == Some(SmFault::MalformedCredentials) {
        credentials["certificate"] = json!("not a certificate");
    }
    s.seq += 1;
    let seq = s.seq;
    let created_at = now_rfc3339();
    if async_mode {
        let op_id = random_id();
        s.operations.push(Operation {
            id: op_id.clone(),
            kind: "create",
            binding_id: id.clone(),
            done_at: Instant::now() + sh.opts.operation_delay,
            fails: fault == Some(SmFault::OperationFails),
            settled: None,
        });
        s.bindings.push(Binding {
            id: id.clone(),
            name,
            instance_id,
            labels,
            parameters: Value::Object(params),
            credentials: Some(credentials),
            fingerprint,
            names: names.clone(),
            pending_registration: Some(registration),
            ready: false,
            created_at,
            last_operation: operation_json(&op_id, "create", "in progress", &id, None),
            seq,
        });
        with_header(
            reply(202, "{}"),
            "location",
            &format!("/v1/service_bindings/{id}/operations/{op_id}"),
        )
    } else {
        register(&sh.tokens, &registration);
        let b = Binding {
            id: id.clone(),
            name,
            instance_id,
            labels,
            parameters: Value::Object(params),
            credentials: Some(credentials),
            fingerprint,
            names,
            pending_registration: None,
            ready: true,
            created_at,
            last_operation: operation_json(&random_id(), "create", "succeeded", &id, None),
            seq,
        };
        let body = binding_json(&b, true).to_string();
        s.bindings.push(b);
        if let Some(SmFault::CreatedThenStatus(code)) = fault {
            return sm_error(code, "InjectedFault", "created, but the answer was lost");
        }
        reply(201, body)
    }
}

/// 422 `ConcurrentOperationInProgress` while a deletion of this very binding is unfinished.
/// Concurrency is per resource: another binding's operation blocks nothing, and a delete
/// may overtake its binding's running create.
pub(super) fn deletion_running(s: &State, binding_id: &str) -> Option<Response<Full<Bytes>>> {
    s.operations
        .iter()
        .any(|o| o.binding_id == binding_id && o.kind == "delete" && o.settled.is_none())
        .then(|| {
            sm_error(
                422,
                "ConcurrentOperationInProgress",
                "Deletion is currently in progress for this resource",
            )
        })
}

pub(super) fn concurrent_operation() -> Response<Full<Bytes>> {
    sm_error(
        422,
        "ConcurrentOperationInProgress",
        "Another concurrent operation in progress for this resource",
    )
}

pub(super) fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        for (k, v) in b {
            a.entry(k).or_insert(v);
        }
    }
}

pub(super) fn leaf_fingerprint(chain_pem: &str) -> Option<String> {
    Some(crate::fingerprint(&leaf_der(chain_pem)?))
}

/// The DER of a chain's first certificate.
pub(super) fn leaf_der(chain_pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()
}
