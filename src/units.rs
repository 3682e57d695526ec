//! Value types for the configuration: durations (`"90s"`, `"48h"`, `"7d"`), lifetime
//! fractions (`"33%"`), renewal points (either of the two) and octal file modes (`"0600"`).
//!
//! Pure parsing and formatting only; every error message quotes the offending text so the
//! configuration loader can prefix it with the file and field path.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A non-negative span of time written as `"90s"`, `"15m"`, `"48h"`, `"7d"` or `"1h 30m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    pub const fn secs(s: u64) -> Self {
        Span(Duration::from_secs(s))
    }
    pub const fn hours(h: u64) -> Self {
        Span(Duration::from_secs(h * 3600))
    }
    /// As a `time::Duration` (saturating at its maximum).
    pub fn to_time(self) -> time::Duration {
        time::Duration::try_from(self.0).unwrap_or(time::Duration::MAX)
    }
}

/// Parses a duration such as `"90s"` or `"7d"`; the error quotes the input.
pub fn parse_span(text: &str) -> Result<Span, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("\"\" is not a duration (expected e.g. \"90s\", \"48h\", \"7d\")".into());
    }
    if t.starts_with('-') {
        return Err(format!(
            "{text:?} is not a duration: durations cannot be negative"
        ));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a duration: add a unit (\"{t}s\", \"{t}m\", \"{t}h\" or \"{t}d\")"
        ));
    }
    humantime::parse_duration(t).map(Span).map_err(|e| {
        format!("{text:?} is not a duration ({e}; expected e.g. \"90s\", \"48h\", \"7d\")")
    })
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0.as_secs();
        if s == 0 {
            return f.write_str("0s");
        }
        let mut parts = Vec::new();
        for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= n {
                parts.push(format!("{}{unit}", s / n));
                s %= n;
            }
        }
        f.write_str(&parts.join(" "))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_span(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A fraction of a certificate's actual lifetime, written as a percentage (`"33%"`), in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Fraction(f64);

impl Fraction {
    pub const ONE_THIRD: Fraction = Fraction(1.0 / 3.0);
    /// Builds a fraction from a value in `[0, 1]`.
    pub fn new(v: f64) -> Option<Fraction> {
        (v.is_finite() && (0.0..=1.0).contains(&v)).then_some(Fraction(v))
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Parses `"33%"` or `"2.5%"`; bounds are `0%..=max_percent`.
pub fn parse_percent(text: &str, max_percent: f64) -> Result<Fraction, String> {
    let t = text.trim();
    let Some(num) = t.strip_suffix('%') else {
        return Err(format!(
            "{text:?} is not a percentage (expected e.g. \"33%\")"
        ));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (expected e.g. \"33%\")"))?;
    if !v.is_finite() || v < 0.0 || v > max_percent {
        return Err(format!("{text:?} is out of range (0% to {max_percent}%)"));
    }
    Ok(Fraction(v / 100.0))
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0 * 100.0;
        if (p - p.round()).abs() < 1e-9 {
            write!(f, "{}%", p.round())
        } else {
            write!(f, "{:.2}%", p)
        }
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A jitter: a percentage of the lifetime, at most 50%.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Jitter(pub Fraction);

impl<'de> Deserialize<'de> for Jitter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_percent(&s, 50.0)
            .map(Jitter)
            .map_err(serde::de::Error::custom)
    }
}

/// When to renew, counted back from `not_after`: a fixed duration or a share of the lifetime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RenewBefore {
    Span(Span),
    Fraction(Fraction),
}

impl RenewBefore {
    pub const DEFAULT: RenewBefore = RenewBefore::Fraction(Fraction::ONE_THIRD);
}

/// Parses `"48h"` or `"33%"` (a percentage below 100%).
pub fn parse_renew_before(text: &str) -> Result<RenewBefore, String> {
    if text.trim().ends_with('%') {
        let f = parse_percent(text, 100.0)?;
        if f.get() <= 0.0 || f.get() >= 1.0 {
            return Err(format!(
                "{text:?} is out of range (above 0% and below 100%)"
            ));
        }
        Ok(RenewBefore::Fraction(f))
    } else {
        let s = parse_span(text)?;
        if s.0.is_zero() {
            return Err(format!("{text:?} must be greater than zero"));
        }
        Ok(RenewBefore::Span(s))
    }
}

impl fmt::Display for RenewBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewBefore::Span(s) => s.fmt(f),
            RenewBefore::Fraction(p) => p.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for RenewBefore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_renew_before(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for RenewBefore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A Unix permission mode written in octal (`"0600"`); only permission bits are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode(pub u32);

pub fn parse_mode(text: &str) -> Result<FileMode, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let v = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("{text:?} is not an octal file mode (expected e.g. \"0600\")"))?;
    if v > 0o777 {
        return Err(format!(
            "{text:?} is not a permission mode (at most \"0777\")"
        ));
    }
    Ok(FileMode(v))
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_mode(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(parse_span("90s").unwrap(), Span::secs(90));
        assert_eq!(parse_span("48h").unwrap(), Span::hours(48));
        assert_eq!(parse_span("7d").unwrap(), Span::hours(168));
        assert_eq!(parse_span("1h 30m").unwrap(), Span::secs(5400));
        assert!(
            parse_span("-3h")
                .unwrap_err()
                .contains("\"-3h\" is not a duration")
        );
        assert!(parse_span("12").unwrap_err().contains("add a unit"));
        assert!(parse_span("soon").is_err());
        assert_eq!(Span::secs(90061).to_string(), "1d 1h 1m 1s");
    }

    #[test]
    fn renew_points() {
        assert_eq!(
            parse_renew_before("33%").unwrap(),
            RenewBefore::Fraction(Fraction::new(0.33).unwrap())
        );
        assert_eq!(
            parse_renew_before("2d").unwrap(),
            RenewBefore::Span(Span::hours(48))
        );
        assert!(parse_renew_before("100%").is_err());
        assert!(parse_renew_before("0s").is_err());
        assert!(parse_renew_before("abc%").is_err());
        assert_eq!(RenewBefore::DEFAULT.to_string(), "33.33%");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0600").unwrap(), FileMode(0o600));
        assert_eq!(parse_mode("0o640").unwrap(), FileMode(0o640));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("4755").is_err());
        assert_eq!(FileMode(0o600).to_string(), "0600");
    }
}
