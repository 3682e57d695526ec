//! Binding parameters and labels judged as the brokers judge them (XSUAA and Identity
//! Authentication: credential type, validity ranges, key lengths, app identifiers).

use super::*;

pub(super) fn valid_labels(labels: &Value) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    let Some(map) = labels.as_object() else {
        return if labels.is_null() {
            Ok(out)
        } else {
            Err("labels must be an object".into())
        };
    };
    for (k, v) in map {
        if k.is_empty()
            || k.len() > 100
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!("label key {k:?} is invalid"));
        }
        let vals: Vec<String> = v
            .as_array()
            .ok_or_else(|| format!("label {k:?} must be an array of strings"))?
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("label {k:?} must be an array of strings"))?;
        if vals.is_empty() || vals.iter().any(|x| x.is_empty() || x.len() > 255) {
            return Err(format!(
                "label {k:?}: values must be 1-255 characters, at least one"
            ));
        }
        out.insert(k.clone(), vals);
    }
    Ok(out)
}

/// What a binding request asks for, after validating its parameters.
pub(super) enum Wanted {
    Generated {
        alg: KeyAlg,
        days: u64,
        cn: Option<String>,
    },
    Provided {
        chain_pem: String,
        pinning: bool,
    },
}

pub(super) fn wanted(kind: InstanceKind, p: &Map<String, Value>) -> Result<Wanted, String> {
    let int = |v: Option<&Value>, name: &str, default: u64| -> Result<u64, String> {
        match v {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("{name} must be a positive integer")),
        }
    };
    let alg = |bits: u64| match bits {
        2048 => Ok(KeyAlg::Rsa2048),
        4096 => Ok(KeyAlg::Rsa4096),
        8192 => Err("key-length 8192 is not available in the sandbox".to_string()),
        n => Err(format!("key-length {n} is not one of 2048, 4096, 8192")),
    };
    let days = |d: u64| {
        if (1..=30).contains(&d) {
            Ok(d)
        } else {
            Err(format!("validity {d} is outside 1..30 DAYS"))
        }
    };
    let vtype = |v: Option<&Value>| match v.and_then(Value::as_str) {
        None | Some("DAYS") => Ok(()),
        Some(o) => Err(format!("validity-type {o:?} is not supported (DAYS)")),
    };
    match kind {
        InstanceKind::CloudLogging => {
            // SAP documents one binding parameter: `{"ingest": {"certValidityDays": N}}`.
            if let Some(k) = p.keys().find(|k| *k != "ingest") {
                return Err(format!(
                    "{k:?} is not a binding parameter of Cloud Logging (ingest.certValidityDays)"
                ));
            }
            let ingest = match p.get("ingest") {
                None => Map::new(),
                Some(v) => v.as_object().cloned().ok_or("ingest must be an object")?,
            };
            if let Some(k) = ingest.keys().find(|k| *k != "certValidityDays") {
                return Err(format!("ingest.{k} is not a binding parameter"));
            }
            let d = int(
                ingest.get("certValidityDays"),
                "ingest.certValidityDays",
                90,
            )?;
            if !(1..=180).contains(&d) {
                return Err(format!("ingest.certValidityDays {d} is outside 1..180"));
            }
            Ok(Wanted::Generated {
                alg: KeyAlg::Rsa2048,
                days: d,
                cn: None,
            })
        }
        InstanceKind::Xsuaa | InstanceKind::ServiceManager => {
            let ct = p.get("credential-type").and_then(Value::as_str);
            if ct.is_some_and(|c| c != "x509") {
                return Err(format!(
                    "credential-type {:?} is not x509",
                    ct.unwrap_or("")
                ));
            }
            let x = p
                .get("x509")
                .and_then(Value::as_object)
                .ok_or("parameters need an x509 object")?;
            if let Some(cert) = x.get("certificate") {
                let chain_pem = cert.as_str().ok_or("x509.certificate must be a string")?;
                let pinning = x
                    .get("certificate-pinning")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                return Ok(Wanted::Provided {
                    chain_pem: chain_pem.to_string(),
                    pinning,
                });
            }
            vtype(x.get("validity-type"))?;
            Ok(Wanted::Generated {
                alg: alg(int(x.get("key-length"), "x509.key-length", 2048)?)?,
                days: days(int(x.get("validity"), "x509.validity", 7)?)?,
                cn: None,
            })
        }
        InstanceKind::Identity => match p.get("credential-type").and_then(Value::as_str) {
            Some("X509_GENERATED") => {
                vtype(p.get("validity-type"))?;
                let app = p.get("app-identifier").and_then(Value::as_str);
                if app.is_some_and(|a| a.is_empty() || a.len() > 20) {
                    return Err("app-identifier must be 1-20 characters".into());
                }
                let bits = int(p.get("key-length"), "key-length", 2048)?;
                if bits == 8192 {
                    return Err("key-length must be 2048 or 4096".into());
                }
                Ok(Wanted::Generated {
                    alg: alg(bits)?,
                    days: days(int(p.get("validity"), "validity", 30)?)?,
                    cn: app.map(str::to_string),
                })
            }
            Some("X509_PROVIDED") => Ok(Wanted::Provided {
                chain_pem: p
                    .get("certificate")
                    .and_then(Value::as_str)
                    .ok_or("X509_PROVIDED needs certificate")?
                    .to_string(),
                pinning: true,
            }),
            other => Err(format!(
                "credential-type {:?} is not X509_GENERATED or X509_PROVIDED",
                other.unwrap_or("")
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_logging_takes_cert_validity_days_only() {
        let p = |v: Value| v.as_object().cloned().unwrap();
        let days = |v: Value| match wanted(InstanceKind::CloudLogging, &p(v)) {
            Ok(Wanted::Generated { days, .. }) => Ok(days),
            Ok(_) => Err("provided".to_string()),
            Err(e) => Err(e),
        };
        assert_eq!(days(json!({})), Ok(90));
        assert_eq!(days(json!({"ingest": {"certValidityDays": 180}})), Ok(180));
        for bad in [
            json!({"ingest": {"certValidityDays": 181}}),
            json!({"ingest": {"certValidityDays": 0}}),
            json!({"ingest": {"validity": 7}}),
            json!({"credential-type": "x509"}),
            json!({"ingest": 7}),
        ] {
            assert!(days(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_are_validated_like_the_brokers() {
        let p = |v: Value| v.as_object().cloned().unwrap();
        assert!(matches!(
            wanted(
                InstanceKind::Xsuaa,
                &p(
                    json!({"credential-type": "x509", "x509": {"key-length": 2048, "validity": 7, "validity-type": "DAYS"}})
                )
            ),
            Ok(Wanted::Generated {
                alg: KeyAlg::Rsa2048,
                days: 7,
                ..
            })
        ));
        for bad in [
            json!({"x509": {"validity": 31}}),
            json!({"x509": {"key-length": 1024}}),
            json!({"x509": {"validity-type": "MONTHS"}}),
            json!({"credential-type": "binding-secret", "x509": {}}),
            json!({}),
        ] {
            assert!(
                wanted(InstanceKind::Xsuaa, &p(bad.clone())).is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            wanted(
                InstanceKind::Identity,
                &p(json!({"credential-type": "X509_GENERATED", "app-identifier": "orders"}))
            ),
            Ok(Wanted::Generated {
                days: 30,
                cn: Some(_),
                ..
            })
        ));
        assert!(
            wanted(
                InstanceKind::Identity,
                &p(json!({"credential-type": "SECRET"}))
            )
            .is_err()
        );
        assert!(wanted(InstanceKind::Identity, &p(json!({"credential-type": "X509_GENERATED", "app-identifier": "a-very-long-identifier-over-20"}))).is_err());
    }
}
