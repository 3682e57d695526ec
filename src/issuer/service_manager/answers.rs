//! Service Manager's answers read and its requests written, pure: bindings and list pages,
//! `Retry-After` (seconds, HTTP date, Go's time form), error bodies and the broker's status
//! inside them, operation errors, query quoting, and which ids may go into a URL.

use super::*;

/// A binding as certrot needs it.
#[derive(Clone)]
pub struct Binding {
    pub id: String,
    pub name: String,
    pub instance_id: String,
    /// The binding's credentials (secret fields inside: never log them).
    pub credentials: Option<Map<String, Value>>,
    pub labels: Map<String, Value>,
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("instance_id", &self.instance_id)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("labels", &self.labels)
            .finish()
    }
}

impl Binding {
    /// A binding from Service Manager's JSON (from `url`, for errors).
    pub fn from_json(v: &Value, url: &str) -> Result<Binding, SmError> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let id = s("id").ok_or_else(|| {
            err(
                SmErrorKind::BadResponse,
                url,
                "the binding has no id".to_string(),
            )
        })?;
        Ok(Binding {
            id,
            name: s("name").unwrap_or_default(),
            instance_id: s("service_instance_id").unwrap_or_default(),
            credentials: v.get("credentials").and_then(Value::as_object).cloned(),
            labels: v
                .get("labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// One page of `GET /v1/service_bindings` (from `url`): its bindings and the token of the
/// next page, if any.
pub fn parse_list_page(body: &[u8], url: &str) -> Result<(Vec<Binding>, Option<String>), SmError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| err(SmErrorKind::BadResponse, url, "the response is not JSON"))?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| err(SmErrorKind::BadResponse, url, "the list has no items"))?;
    let bindings = items
        .iter()
        .map(|i| Binding::from_json(i, url))
        .collect::<Result<Vec<_>, _>>()?;
    let next = v
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok((bindings, next))
}

/// What to create.
#[derive(Clone, Debug)]
pub struct BindingRequest {
    pub name: String,
    pub instance_id: String,
    pub parameters: Value,
    pub labels: Vec<(String, String)>,
}

/// A single-quoted query value with `'` escaped as `''`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `Retry-After` relative to `now`, in each form Service Manager is known to send: seconds
/// (the BTP service operator's documentation), an HTTP date (SAP's "Rate Limiting" page),
/// or Go's `time.Time` text `2006-01-02 15:04:05[.fff] -0700 MST` (what the operator's own
/// code parses).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = match httpdate::parse_http_date(v) {
        Ok(at) => at,
        Err(_) => go_time(v)?,
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Go's `time.Time.String()`: `2006-01-02 15:04:05[.fraction] -0700 MST` (the zone name,
/// and a monotonic `m=+…` suffix, are ignored: the offset is authoritative).
pub(super) fn go_time(v: &str) -> Option<SystemTime> {
    let mut parts = v.split_whitespace();
    let (date, clock, offset) = (parts.next()?, parts.next()?, parts.next()?);
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    let clock_fmt =
        time::macros::format_description!("[hour]:[minute]:[second][optional [.[subsecond]]]");
    let offset_fmt =
        time::macros::format_description!("[offset_hour sign:mandatory][offset_minute]");
    let at = time::PrimitiveDateTime::new(
        time::Date::parse(date, &date_fmt).ok()?,
        time::Time::parse(clock, &clock_fmt).ok()?,
    )
    .assume_offset(time::UtcOffset::parse(offset, &offset_fmt).ok()?);
    Some(SystemTime::from(at))
}

/// SM's error body as text: `Error: description`, plus the broker's own answer when there
/// is one, or a short excerpt.
pub(super) fn describe_body(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let e = v.get("error").and_then(Value::as_str);
        let d = v.get("description").and_then(Value::as_str);
        let mut text = match (e, d) {
            (Some(e), Some(d)) => format!("{e}: {d}"),
            (Some(x), None) | (None, Some(x)) => x.to_string(),
            _ => String::new(),
        };
        if let Some(Value::Object(b)) = v.get("broker_error") {
            let field = |name: &str| {
                b.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.as_str())
            };
            let said: Vec<&str> = [field("ErrorMessage"), field("Description")]
                .into_iter()
                .flatten()
                .collect();
            let status = broker_status(body).map_or(String::new(), |s| format!("HTTP {s}"));
            text.push_str(&format!(
                " (the broker answered {status} {})",
                said.join(": ")
            ));
        }
        if !text.is_empty() {
            return text.chars().take(500).collect();
        }
    }
    let text = String::from_utf8_lossy(body);
    let t: String = text.chars().take(200).collect();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

/// The `error` word of a Service Manager error body.
pub(super) fn error_word(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error").and_then(Value::as_str).map(str::to_string)
}

/// The broker's own status behind a 502 `BrokerError`: the `broker_error` object's
/// `StatusCode` (any letter case, as Go's decoder in SAP's operator matches it), else the
/// `Status: NNN` that Service Manager writes into the description.
pub fn broker_status(body: &[u8]) -> Option<u16> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Some(Value::Object(b)) = v.get("broker_error")
        && let Some(code) = b
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("statuscode"))
            .and_then(|(_, c)| c.as_u64())
    {
        return u16::try_from(code).ok();
    }
    let d = v.get("description").and_then(Value::as_str)?;
    let at = d.find("Status: ")? + "Status: ".len();
    d[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Classifies an error answer. `router_error`: the `X-Cf-RouterError` header (Cloud
/// Foundry's router found no route: Service Manager unreachable, whatever the status).
pub(super) fn kind_of_status(status: u16, body: &[u8], router_error: bool) -> SmErrorKind {
    if router_error {
        return SmErrorKind::ServerError;
    }
    let word = error_word(body).unwrap_or_default();
    match status {
        401 | 403 => SmErrorKind::Auth,
        404 | 410 => SmErrorKind::NotFound,
        409 => SmErrorKind::Conflict,
        // ConcurrentOperationInProgress (another operation on this resource),
        // OperationInProgress (the instance is not ready or being deleted).
        422 if word.contains("ConcurrentOperation") || word == "OperationInProgress" => {
            SmErrorKind::Concurrent
        }
        412 if word == "ConcurrentResourceUpdate" => SmErrorKind::Concurrent,
        429 => SmErrorKind::RateLimited,
        502 if word == "BrokerError" => match broker_status(body) {
            Some(422) if String::from_utf8_lossy(body).contains("ConcurrencyError") => {
                SmErrorKind::Concurrent
            }
            Some(429) => SmErrorKind::RateLimited,
            Some(400..=499) => SmErrorKind::Rejected,
            _ => SmErrorKind::ServerError,
        },
        500..=599 => SmErrorKind::ServerError,
        _ => SmErrorKind::Rejected,
    }
}

pub(super) fn operation_errors(v: &Value) -> String {
    match v.get("errors") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|e| describe_body(e.to_string().as_bytes()))
            .collect::<Vec<_>>()
            .join("; "),
        Some(o @ Value::Object(_)) => describe_body(o.to_string().as_bytes()),
        _ => "no reason given".into(),
    }
}

/// `/v1/service_bindings/<id>/operations/<op>` → `<id>`.
pub(super) fn binding_id_of_location(loc: &str) -> Option<String> {
    let path = loc.split("/v1/service_bindings/").nth(1)?;
    let id = path.split('/').next()?;
    is_resource_id(id).then(|| id.to_string())
}

/// A Service Manager resource id (a GUID in practice): letters, digits, '-', '_'.
pub fn is_resource_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_single_quotes() {
        assert_eq!(quote("orders"), "'orders'");
        assert_eq!(quote("o'brien"), "'o''brien'");
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        // Go's time.Time text, as SAP's operator parses it.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_731_337_173); // 2024-11-11 14:59:33Z
        assert_eq!(
            parse_retry_after("2024-11-11 15:00:03 +0000 UTC", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("2024-11-11 16:00:13.25 +0100 CET", now),
            Some(Duration::from_millis(40_250))
        );
        assert_eq!(parse_retry_after("2024-11-11 15:00:03", now), None);
    }

    #[test]
    fn locations_and_error_bodies() {
        assert_eq!(
            binding_id_of_location("/v1/service_bindings/abc/operations/op1").as_deref(),
            Some("abc")
        );
        assert_eq!(binding_id_of_location("/v1/other"), None);
        assert_eq!(
            describe_body(br#"{"error":"Conflict","description":"exists"}"#),
            "Conflict: exists"
        );
        assert_eq!(describe_body(b""), "(empty body)");
        for (status, body, router, want) in [
            (422, &br#"{"error":"ConcurrentOperation"}"#[..], false, SmErrorKind::Concurrent),
            (422, br#"{"error":"ConcurrentOperationInProgress","description":"Another concurrent operation in progress for this resource"}"#, false, SmErrorKind::Concurrent),
            (422, br#"{"error":"OperationInProgress","description":"creation of instance x is still in progress or failed"}"#, false, SmErrorKind::Concurrent),
            (412, br#"{"error":"ConcurrentResourceUpdate"}"#, false, SmErrorKind::Concurrent),
            (422, br#"{"error":"Other"}"#, false, SmErrorKind::Rejected),
            (410, b"", false, SmErrorKind::NotFound),
            // A 404 from the Cloud Foundry router: Service Manager unreachable, not "gone".
            (404, b"404 Not Found: Requested route does not exist.", true, SmErrorKind::ServerError),
            (502, br#"{"error":"BrokerError","description":"x","broker_error":{"StatusCode":400,"ErrorMessage":"BadRequest","Description":"bad x509 parameters"}}"#, false, SmErrorKind::Rejected),
            (502, br#"{"error":"BrokerError","broker_error":{"statusCode":422,"ErrorMessage":"ConcurrencyError"}}"#, false, SmErrorKind::Concurrent),
            (502, br#"{"error":"BrokerError","broker_error":{"StatusCode":503}}"#, false, SmErrorKind::ServerError),
            (502, br#"{"error":"BrokerError","description":"Failed bind request: Status: 409; ErrorMessage: <nil>"}"#, false, SmErrorKind::Rejected),
            (502, br#"{"error":"BrokerError","description":"broker timed out"}"#, false, SmErrorKind::ServerError),
            (502, b"<html>bad gateway</html>", false, SmErrorKind::ServerError),
        ] {
            assert_eq!(
                kind_of_status(status, body, router),
                want,
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
        let d = describe_body(
            br#"{"error":"BrokerError","description":"Failed bind","broker_error":{"StatusCode":400,"ErrorMessage":"BadRequest","Description":"validity must be 1-30"}}"#,
        );
        assert!(
            d.contains("HTTP 400") && d.contains("validity must be 1-30"),
            "{d}"
        );
    }
}
