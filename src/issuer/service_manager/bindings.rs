//! The binding calls certrot makes on Service Manager: create (201, or 202 + `Location`
//! polled until the operation ends), get, list (label and field queries, paging) and delete
//! (202 polled; 404 means already gone).

use super::*;

impl SmClient {
    /// Creates a binding and returns it with its credentials, following a 202 operation to
    /// its end. On an error after SM accepted the request, the error message names the
    /// binding id so the caller can still delete it.
    pub async fn create_binding(
        &self,
        req: &BindingRequest,
        mode: Mode,
    ) -> Result<Binding, SmError> {
        let q = match mode {
            Mode::Auto => "",
            Mode::Sync => "?async=false",
            Mode::Async => "?async=true",
        };
        let url = self.url(&format!("/v1/service_bindings{q}"));
        let mut labels = Map::new();
        for (k, v) in &req.labels {
            labels.insert(k.clone(), json!([v]));
        }
        let body = json!({
            "name": req.name, "service_instance_id": req.instance_id,
            "parameters": req.parameters, "labels": labels,
        });
        let a = self.call(reqwest::Method::POST, &url, Some(&body)).await?;
        match a.status {
            201 | 200 => Binding::from_json(&Self::json(&a, &url)?, &url),
            202 => {
                let loc = a.location.ok_or_else(|| {
                    err(
                        SmErrorKind::BadResponse,
                        &url,
                        "202 without a Location header",
                    )
                })?;
                let id = binding_id_of_location(&loc).ok_or_else(|| {
                    err(
                        SmErrorKind::BadResponse,
                        &url,
                        format!("unexpected Location {loc:?}"),
                    )
                })?;
                self.wait_operation(&loc, false).await.map_err(|mut e| {
                    e.message.push_str(&format!(" (binding {id})"));
                    e
                })?;
                self.get_binding(&id).await?.ok_or_else(|| {
                    err(
                        SmErrorKind::OperationFailed,
                        &url,
                        format!("binding {id} is gone after its operation succeeded"),
                    )
                })
            }
            s => Err(err(
                SmErrorKind::BadResponse,
                &url,
                format!("unexpected HTTP {s}"),
            )),
        }
    }

    /// The URL of an operation named by `Location`: a path on Service Manager, or an
    /// absolute URL with Service Manager's own origin — never another host, which would be
    /// sent the bearer token.
    fn operation_url(&self, location: &str) -> Result<String, SmError> {
        let bad = |why: &str| {
            err(
                SmErrorKind::BadResponse,
                &self.access.sm_url,
                format!("Location {:?} {why}", crate::text::printable(location, 200)),
            )
        };
        // A path (`/v1/…`, or `v1/…`): on Service Manager itself.
        if !location.starts_with("//") && !location.contains("://") {
            return Ok(self.url(&format!("/{}", location.trim_start_matches('/'))));
        }
        let (Ok(loc), Ok(sm)) = (
            reqwest::Url::parse(location),
            reqwest::Url::parse(&self.access.sm_url),
        ) else {
            return Err(bad("is neither a path nor a URL"));
        };
        let origin = |u: &reqwest::Url| {
            (
                u.scheme().to_string(),
                u.host_str().map(str::to_ascii_lowercase),
                u.port_or_known_default(),
            )
        };
        if origin(&loc) != origin(&sm) {
            return Err(bad("points away from Service Manager; not followed"));
        }
        Ok(loc.to_string())
    }

    /// Polls an operation (`Location`, relative or absolute) with backoff until it ends.
    /// `deleting`: the operation of a DELETE, where 404 (or 410) means the binding is gone —
    /// done (the BTP service operator's `Status`).
    async fn wait_operation(&self, location: &str, deleting: bool) -> Result<(), SmError> {
        let url = self.operation_url(location)?;
        let deadline = Instant::now() + self.operation_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let a = match self.call(reqwest::Method::GET, &url, None).await {
                Err(e) if deleting && e.kind == SmErrorKind::NotFound => return Ok(()),
                other => other?,
            };
            let v = Self::json(&a, &url)?;
            match v.get("state").and_then(Value::as_str) {
                Some("succeeded") => return Ok(()),
                Some("failed") => {
                    let why = operation_errors(&v);
                    return Err(err(
                        SmErrorKind::OperationFailed,
                        &url,
                        format!("the operation failed: {why}"),
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(err(
                        SmErrorKind::BadResponse,
                        &url,
                        "the operation has no state",
                    ));
                }
            }
            if Instant::now() + delay > deadline {
                return Err(err(
                    SmErrorKind::OperationFailed,
                    &url,
                    format!(
                        "the operation did not finish within {}",
                        humantime::format_duration(self.operation_timeout)
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// `/v1/service_bindings/<id>` for an id that is one (from state or from Service
    /// Manager: `../service_instances/X` must never become another resource's path).
    fn binding_url(&self, id: &str) -> Result<String, SmError> {
        if is_resource_id(id) {
            Ok(self.url(&format!("/v1/service_bindings/{id}")))
        } else {
            Err(err(
                SmErrorKind::BadResponse,
                &self.access.sm_url,
                format!(
                    "{:?} is not a binding id (letters, digits, '-', '_'); nothing was sent",
                    crate::text::printable(id, 100)
                ),
            ))
        }
    }

    /// The binding with `id`, or `None` when SM does not know it.
    pub async fn get_binding(&self, id: &str) -> Result<Option<Binding>, SmError> {
        let url = self.binding_url(id)?;
        match self.call(reqwest::Method::GET, &url, None).await {
            Ok(a) => Ok(Some(Binding::from_json(&Self::json(&a, &url)?, &url)?)),
            Err(e) if e.kind == SmErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every binding matching the queries (all pages).
    pub async fn list_bindings(
        &self,
        label_query: &str,
        field_query: &str,
    ) -> Result<Vec<Binding>, SmError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // An instance holds at most 1000 bindings (10 pages of 100); a list that goes on
        // past 100 pages, or past the operation timeout, is not one certrot can act on.
        let deadline = Instant::now() + self.operation_timeout;
        for _ in 0..MAX_LIST_PAGES {
            if Instant::now() > deadline {
                return Err(err(
                    SmErrorKind::Timeout,
                    &self.access.sm_url,
                    format!(
                        "the binding list did not end within {} ({} bindings so far)",
                        humantime::format_duration(self.operation_timeout),
                        out.len()
                    ),
                ));
            }
            let query = {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if !label_query.is_empty() {
                    q.append_pair("labelQuery", label_query);
                }
                if !field_query.is_empty() {
                    q.append_pair("fieldQuery", field_query);
                }
                q.append_pair("max_items", "100");
                if let Some(t) = &token {
                    q.append_pair("token", t);
                }
                q.finish()
            };
            let url = self.url(&format!("/v1/service_bindings?{query}"));
            let a = self.call(reqwest::Method::GET, &url, None).await?;
            let (items, next) = parse_list_page(&a.body, &url)?;
            let empty = items.is_empty();
            out.extend(items);
            match next {
                Some(t) if !empty => token = Some(t),
                _ => return Ok(out),
            }
        }
        Err(err(
            SmErrorKind::BadResponse,
            &self.access.sm_url,
            format!("the binding list does not end after {MAX_LIST_PAGES} pages"),
        ))
    }

    /// Deletes a binding; `Ok(false)` when it was already gone.
    pub async fn delete_binding(&self, id: &str) -> Result<bool, SmError> {
        let url = self.binding_url(id)?;
        match self.call(reqwest::Method::DELETE, &url, None).await {
            Ok(a) if a.status == 202 => {
                if let Some(loc) = a.location {
                    self.wait_operation(&loc, true).await?;
                }
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) if e.kind == SmErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
