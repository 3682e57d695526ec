//! When certrot acts: renewal policy (`Policy`, with its raw TOML form), maintenance windows,
//! cron schedules, the daemon's settings.

use super::*;

/// A cron expression (`sec min hour day month weekday [year]`, or the 5-field Unix form,
/// which gets `0` seconds prepended). Numeric weekdays are refused: dialects disagree on them.
#[derive(Clone)]
pub struct CronSpec {
    text: String,
    schedule: cron::Schedule,
}

impl CronSpec {
    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn parse(text: &str) -> Result<CronSpec, String> {
        let t = text.trim();
        let fields: Vec<&str> = t.split_whitespace().collect();
        let normalised = if t.starts_with('@') {
            t.to_string()
        } else {
            let (full, dow) = match fields.len() {
                5 => (format!("0 {t}"), fields[4]),
                6 | 7 => (fields.join(" "), fields[5]),
                n => {
                    return Err(format!(
                        "{text:?} is not a cron expression: {n} fields (expected 5, 6 or 7)"
                    ));
                }
            };
            if dow.bytes().any(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{text:?}: write days of the week as names (Mon-Fri), not numbers: \
                     cron dialects number them differently"
                ));
            }
            full
        };
        let schedule = cron::Schedule::from_str(&normalised)
            .map_err(|e| format!("{text:?} is not a cron expression: {e}"))?;
        Ok(CronSpec {
            text: t.to_string(),
            schedule,
        })
    }
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }
}

impl fmt::Debug for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSpec({:?})", self.text)
    }
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'de> Deserialize<'de> for CronSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CronSpec::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for CronSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A maintenance window: renewals prefer to start inside one.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// When a window opens.
    pub cron: CronSpec,
    /// How long it stays open.
    pub duration: Span,
}

/// `[daemon]`: settings of `certrot run`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    /// Address of the metrics and health endpoints; empty disables them.
    pub listen: String,
    /// When to re-inspect every target and refresh metrics.
    pub check_schedule: CronSpec,
    /// When to prove the current generation with a token request.
    pub probe_schedule: CronSpec,
    /// How many rotations (and, apart, how many token checks) may run at once.
    pub max_parallel: u32,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            listen: "127.0.0.1:9464".into(),
            check_schedule: CronSpec::parse("0 */5 * * * *").expect("built-in schedule parses"), // ok: constant
            probe_schedule: CronSpec::parse("0 17 * * * *").expect("built-in schedule parses"), // ok: constant
            max_parallel: 8,
        }
    }
}

/// Renewal settings shared by `[defaults]` and each `[[credential]]` (which may override them).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) renew_before: Option<RenewBefore>,
    pub(super) critical_before: Option<Span>,
    pub(super) jitter: Option<Jitter>,
    pub(super) retire_after: Option<Span>,
    pub(super) keep_generations: Option<u32>,
    pub(super) window: Option<Vec<Window>>,
}

/// The effective renewal policy of one credential.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    /// Renew this long (or this share of the lifetime) before `not_after`. Default 33.33%.
    pub renew_before: RenewBefore,
    /// Inside this span before `not_after` a credential is CRITICAL. Default 24h.
    pub critical_before: Span,
    /// Renew up to this share of the lifetime earlier, fixed per certificate. Default 5%.
    pub jitter: Jitter,
    /// Keep a replaced binding this long before deleting it. Default 1h.
    pub retire_after: Span,
    /// Old generation directories kept for rollback. Default 3.
    pub keep_generations: u32,
    /// Preferred renewal windows; none by default.
    pub windows: Vec<Window>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            renew_before: RenewBefore::DEFAULT,
            critical_before: Span::hours(24),
            jitter: Jitter(
                crate::units::Fraction::new(0.05).unwrap_or(crate::units::Fraction::ONE_THIRD),
            ),
            retire_after: Span::hours(1),
            keep_generations: 3,
            windows: Vec::new(),
        }
    }
}

impl Policy {
    pub(super) fn overlay(&self, raw: &RawPolicy) -> Policy {
        Policy {
            renew_before: raw.renew_before.unwrap_or(self.renew_before),
            critical_before: raw.critical_before.unwrap_or(self.critical_before),
            jitter: raw.jitter.unwrap_or(self.jitter),
            retire_after: raw.retire_after.unwrap_or(self.retire_after),
            keep_generations: raw.keep_generations.unwrap_or(self.keep_generations),
            windows: raw.window.clone().unwrap_or_else(|| self.windows.clone()),
        }
    }
}
