//! The API's routes: each request authenticated (bearer token of an allowed client), faults
//! applied, and dispatched to create, get, list, operations and delete.

use super::*;

pub(super) async fn handle(req: Request<Incoming>, sh: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let call_line = format!(
        "{method} {}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(&path)
    );
    // Authentication: a bearer token from the sandbox token endpoint, for an allowed client.
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let client = bearer.and_then(|t| sh.tokens.verify_token(&t));
    {
        let mut s = lock(&sh.state);
        s.calls.push(call_line);
        if !client.as_ref().is_some_and(|c| s.clients.contains(c)) {
            return sm_error(
                401,
                "Unauthorized",
                "missing, invalid or expired bearer token",
            );
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let call = match (&method, segments.as_slice()) {
        (&Method::POST, ["v1", "service_bindings"]) => SmCall::Create,
        (&Method::GET, ["v1", "service_bindings"]) => SmCall::List,
        (&Method::GET, ["v1", "service_bindings", _]) => SmCall::Get,
        (&Method::DELETE, ["v1", "service_bindings", _]) => SmCall::Delete,
        (&Method::GET, ["v1", "service_bindings", _, "operations", _]) => SmCall::Operation,
        _ => return sm_error(404, "NotFound", "no such endpoint"),
    };
    // Rate limit over the binding calls, as SM's 600/min.
    let (fault, limited) = {
        let mut s = lock(&sh.state);
        let mut limited = None;
        if let Some((max, window)) = sh.opts.rate_limit {
            let now = Instant::now();
            let (start, n) = match s.window {
                Some((start, n)) if now.duration_since(start) < window => (start, n + 1),
                _ => (now, 1),
            };
            s.window = Some((start, n));
            if n > max {
                // HTTP dates have whole seconds: round up, never tell a client to come early.
                let at = SystemTime::now()
                    + window.saturating_sub(now.duration_since(start))
                    + Duration::from_secs(1);
                limited = Some(httpdate::fmt_http_date(at));
            }
        }
        // Faults about the created binding apply to the next creation that gets that far.
        let fault = take_fault(&mut s, call, |f| {
            !matches!(
                f,
                SmFault::OperationFails
                    | SmFault::MalformedCredentials
                    | SmFault::WithoutClientId
                    | SmFault::CreatedThenStatus(_)
            )
        });
        (fault, limited)
    };
    if let Some(at) = limited {
        return with_header(
            sm_error(429, "TooManyRequests", "rate limit reached"),
            "retry-after",
            &at,
        );
    }
    match fault {
        Some(SmFault::Status(code)) => {
            return sm_error(code, "InjectedFault", &format!("injected HTTP {code}"));
        }
        Some(SmFault::Concurrent) => return concurrent_operation(),
        Some(SmFault::InstanceNotReady) => {
            return sm_error(
                422,
                "OperationInProgress",
                "creation of instance sandbox is still in progress or failed",
            );
        }
        Some(SmFault::Broker(code)) => return broker_error(code, "injected broker failure"),
        Some(SmFault::LocationTo(loc)) => return with_header(reply(202, "{}"), "location", &loc),
        Some(SmFault::RouterNotFound) => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"404 Not Found: Requested route ('sm.sandbox') does not exist.\n",
            )));
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            return with_header(r, "x-cf-routererror", "unknown_route");
        }
        Some(SmFault::RateLimited(v)) => {
            return with_header(
                sm_error(429, "TooManyRequests", "injected rate limit"),
                "retry-after",
                &v,
            );
        }
        Some(SmFault::Latency(d)) => tokio::time::sleep(d).await,
        Some(
            SmFault::OperationFails
            | SmFault::MalformedCredentials
            | SmFault::WithoutClientId
            | SmFault::CreatedThenStatus(_),
        )
        | None => {}
    }
    let params = query_params(&req);
    let async_mode = params
        .iter()
        .find(|(k, _)| k == "async")
        .map(|(_, v)| v == "true")
        .unwrap_or(sh.opts.async_default);
    match call {
        SmCall::Create => {
            let body = match Limited::new(req.into_body(), 256 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return sm_error(400, "BadRequest", "body too large"),
            };
            let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                return sm_error(400, "BadRequest", "body is not JSON");
            };
            create(sh, &body, async_mode)
        }
        SmCall::Get => {
            let mut s = lock(&sh.state);
            settle(&mut s, sh);
            match s.bindings.iter().find(|b| b.id == segments[2]) {
                Some(b) => reply(200, binding_json(b, true).to_string()),
                None => sm_error(
                    404,
                    "NotFound",
                    &format!("binding {} not found", segments[2]),
                ),
            }
        }
        SmCall::Operation => {
            let mut s = lock(&sh.state);
            settle(&mut s, sh);
            match s
                .operations
                .iter()
                .find(|o| o.id == segments[4] && o.binding_id == segments[2])
            {
                // Once a deleted binding is gone, so is its operation: 404.
                Some(o) if o.kind == "delete" && o.settled == Some("succeeded") => {
                    sm_error(404, "NotFound", "could not find such operation")
                }
                Some(o) => {
                    let state = o.settled.unwrap_or("in progress");
                    let err = (state == "failed")
                        .then_some("the broker could not create the credentials");
                    reply(
                        200,
                        operation_json(&o.id, o.kind, state, &o.binding_id, err).to_string(),
                    )
                }
                None => sm_error(404, "NotFound", "operation not found"),
            }
        }
        SmCall::List => list(sh, &params),
        SmCall::Delete => delete(sh, segments[2], async_mode),
    }
}

pub(super) fn delete(sh: &Shared, id: &str, async_mode: bool) -> Response<Full<Bytes>> {
    let mut s = lock(&sh.state);
    settle(&mut s, sh);
    let Some(i) = s.bindings.iter().position(|b| b.id == id) else {
        return sm_error(404, "NotFound", &format!("binding {id} not found"));
    };
    if let Some(busy) = deletion_running(&s, id) {
        return busy;
    }
    // Revocation is immediate: the token endpoint stops accepting the certificate now
    // (Cloud Logging documents that deleting a binding does not revoke its certificate).
    let revokes = s
        .instances
        .iter()
        .find(|x| x.id == s.bindings[i].instance_id)
        .is_none_or(|x| x.kind != InstanceKind::CloudLogging);
    if let Some(fp) = s.bindings[i].fingerprint.as_ref().filter(|_| revokes) {
        sh.tokens.revoke(fp);
    }
    if async_mode {
        let op_id = random_id();
        s.operations.push(Operation {
            id: op_id.clone(),
            kind: "delete",
            binding_id: id.to_string(),
            done_at: Instant::now() + sh.opts.operation_delay,
            fails: false,
            settled: None,
        });
        with_header(
            reply(202, "{}"),
            "location",
            &format!("/v1/service_bindings/{id}/operations/{op_id}"),
        )
    } else {
        s.bindings.remove(i);
        reply(200, "{}")
    }
}
