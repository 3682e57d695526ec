//! `--sm-fault CALL:KIND[:VALUE][*N]`: a Service Manager fault as `certrot sandbox` takes it,
//! in the grammar of the token endpoint's `--fault`, after the call it applies to.

use super::*;
use crate::token::ALWAYS;

impl SmFault {
    /// Parses `CALL:KIND[:VALUE][*N]`: CALL one of create, get, list, delete, operation;
    /// KIND one of status:CODE, concurrent, instance-not-ready, broker:CODE,
    /// router-not-found, rate-limited:RETRY-AFTER, operation-fails, malformed-credentials,
    /// without-clientid, created-then-status:CODE, latency:DURATION; N calls (default every
    /// one).
    pub fn parse_spec(spec: &str) -> Result<(SmCall, SmFault, usize), String> {
        let bad = |m: &str| format!("service manager fault {spec:?}: {m}");
        let (call, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("write CALL:KIND, e.g. create:status:503*2"))?;
        let call = match call {
            "create" => SmCall::Create,
            "get" => SmCall::Get,
            "list" => SmCall::List,
            "delete" => SmCall::Delete,
            "operation" => SmCall::Operation,
            other => {
                return Err(bad(&format!(
                    "{other:?} is not a call (create, get, list, delete, operation)"
                )));
            }
        };
        let (body, times) = match rest.rsplit_once('*') {
            Some((b, n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => (b, n),
                _ => return Err(bad("the count after '*' must be 1 or more")),
            },
            None => (rest, ALWAYS),
        };
        let (kind, value) = match body.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (body, None),
        };
        let status = |range: std::ops::RangeInclusive<u16>| -> Result<u16, String> {
            let v = value.ok_or_else(|| bad(&format!("{kind} needs an HTTP status")))?;
            v.parse::<u16>()
                .ok()
                .filter(|s| range.contains(s))
                .ok_or_else(|| bad(&format!("{kind}: {v:?} is not a status in {range:?}")))
        };
        let none = |f: SmFault| match value {
            Some(_) => Err(bad(&format!("{kind} takes no value"))),
            None => Ok(f),
        };
        let create_only = matches!(
            kind,
            "operation-fails"
                | "malformed-credentials"
                | "without-clientid"
                | "created-then-status"
        );
        if create_only && call != SmCall::Create {
            return Err(bad(&format!("{kind} applies to create only")));
        }
        let fault = match kind {
            "status" => SmFault::Status(status(400..=599)?),
            "broker" => SmFault::Broker(status(400..=599)?),
            "created-then-status" => SmFault::CreatedThenStatus(status(400..=599)?),
            "concurrent" => none(SmFault::Concurrent)?,
            "instance-not-ready" => none(SmFault::InstanceNotReady)?,
            "router-not-found" => none(SmFault::RouterNotFound)?,
            "operation-fails" => none(SmFault::OperationFails)?,
            "malformed-credentials" => none(SmFault::MalformedCredentials)?,
            "without-clientid" => none(SmFault::WithoutClientId)?,
            "rate-limited" => SmFault::RateLimited(
                value
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        bad("rate-limited needs the Retry-After value, e.g. rate-limited:30")
                    })?
                    .to_string(),
            ),
            "latency" => SmFault::Latency(
                humantime::parse_duration(
                    value.ok_or_else(|| bad("latency needs a duration, e.g. latency:2s"))?,
                )
                .map_err(|e| bad(&format!("latency: {e}")))?,
            ),
            other => return Err(bad(&format!("{other:?} is not a fault kind"))),
        };
        Ok((call, fault, times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            SmFault::parse_spec("create:status:503*2"),
            Ok((SmCall::Create, SmFault::Status(503), 2))
        );
        assert_eq!(
            SmFault::parse_spec("delete:rate-limited:30"),
            Ok((SmCall::Delete, SmFault::RateLimited("30".into()), ALWAYS))
        );
        assert_eq!(
            SmFault::parse_spec("list:concurrent*1"),
            Ok((SmCall::List, SmFault::Concurrent, 1))
        );
        assert_eq!(
            SmFault::parse_spec("operation:latency:2s"),
            Ok((
                SmCall::Operation,
                SmFault::Latency(Duration::from_secs(2)),
                ALWAYS
            ))
        );
        for (bad, says) in [
            ("status:503", "not a call"),
            ("create", "CALL:KIND"),
            ("create:status", "needs an HTTP status"),
            ("create:status:200", "not a status"),
            ("create:concurrent:1", "takes no value"),
            ("get:operation-fails", "create only"),
            ("create:boom", "not a fault kind"),
            ("create:status:503*0", "1 or more"),
        ] {
            let e = SmFault::parse_spec(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
