//! Target times as operators type them.
//!
//! RFC 3339 with `Z` or an offset is taken as is. A plain
//! `YYYY-MM-DD HH:MM:SS` is accepted only with an explicit `--timezone`:
//! guessing the zone in the middle of an outage is how a recovery lands nine
//! hours off.
//!
//! drgit writes `targetTime` in PostgreSQL's own form, in UTC with an
//! explicit offset and microseconds: `2026-11-24 09:00:00.000000+00`.
//! PostgreSQL's `recovery_target_time` refuses RFC 3339's `T` and `Z`
//! ("invalid value for parameter", checked with PostgreSQL 15), and CNPG
//! before 1.27.3 / 1.28.1 passes a `Z` value through unchanged
//! (cloudnative-pg issue 10819; the conversion lives in cloudnative-pg/
//! machinery pkg/postgres/time/time.go, which leaves this form alone).
//! Without an offset PostgreSQL would read the time in the server's
//! `timezone`, so the offset is always written.

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};

#[derive(Debug, Clone, thiserror::Error)]
pub enum TimeError {
    #[error(
        "--target-time `{input}` is not a time drgit understands; use RFC 3339, e.g. 2026-11-24T09:00:00Z or 2026-11-24T18:00:00+09:00"
    )]
    Unparsable { input: String },
    #[error(
        "--target-time `{input}` has no UTC offset; add `Z` or an offset such as +09:00, or pass --timezone (e.g. --timezone Asia/Tokyo)"
    )]
    NoOffset { input: String },
    #[error("--timezone `{zone}` is not a known IANA time zone (e.g. Asia/Tokyo, UTC)")]
    BadZone { zone: String },
    #[error(
        "--target-time {target} is in the future (now is {}); there is nothing to recover there yet",
        Second(*.now)
    )]
    Future { target: Timestamp, now: Timestamp },
    #[error("DRGIT_NOW `{input}` is not an RFC 3339 time")]
    BadNow { input: String },
}

/// Parses a target time and refuses one after `now`.
pub fn parse_target_time(
    input: &str,
    zone: Option<&str>,
    now: Timestamp,
) -> Result<Timestamp, TimeError> {
    let s = input.trim();
    let t = match s.parse::<Timestamp>() {
        Ok(t) => t,
        Err(_) => {
            let civil: DateTime = s.parse().map_err(|_| TimeError::Unparsable {
                input: input.into(),
            })?;
            let Some(zone) = zone else {
                return Err(TimeError::NoOffset {
                    input: input.into(),
                });
            };
            let tz = TimeZone::get(zone).map_err(|_| TimeError::BadZone { zone: zone.into() })?;
            civil
                .to_zoned_datetime(tz)
                .map_err(|_| TimeError::Unparsable {
                    input: input.into(),
                })?
                .timestamp()
        }
    };
    if t > now {
        return Err(TimeError::Future { target: t, now });
    }
    Ok(t)
}

/// The current time, or `DRGIT_NOW` when set (for reproducible runs).
pub fn now() -> Result<Timestamp, TimeError> {
    match std::env::var("DRGIT_NOW") {
        Ok(v) if !v.is_empty() => v.parse().map_err(|_| TimeError::BadNow { input: v }),
        _ => Ok(Timestamp::now()),
    }
}

/// A target as drgit writes it into `recoveryTarget.targetTime`:
/// `2026-11-24 09:00:00.000000+00`. PostgreSQL keeps microseconds; drgit
/// truncates first ([`to_micros`]) so that what is written is what was checked.
pub fn postgres(t: Timestamp) -> String {
    to_micros(t)
        .strftime("%Y-%m-%d %H:%M:%S%.6f+00")
        .to_string()
}

/// The instant truncated to whole microseconds (PostgreSQL's precision),
/// never later than `t`.
pub fn to_micros(t: Timestamp) -> Timestamp {
    let us = t.as_nanosecond().div_euclid(1000) as i64;
    Timestamp::from_microsecond(us).unwrap_or(t)
}

/// Reads a `targetTime` as found in a manifest: PostgreSQL's form
/// (`2026-11-24 09:00:00[.ffffff]+00[:00]`) or RFC 3339.
pub fn parse_written(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    // `+00` → `+00:00`, then RFC 3339 with a space.
    let fixed = match s.rfind(['+', '-']) {
        Some(i) if i > 10 && s[i + 1..].len() == 2 => format!("{s}:00"),
        _ => s.to_string(),
    };
    fixed.replacen(' ', "T", 1).parse().ok()
}

/// A time as people read it: to the second, rounded down (the end of a
/// window shown this way is still inside it). JSON keeps full precision.
pub struct Second(pub Timestamp);

impl std::fmt::Display for Second {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.as_second() - i64::from(self.0.subsec_nanosecond() < 0);
        match Timestamp::from_second(secs) {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

/// The same, rounded up: the start of a window shown this way is inside it.
pub struct SecondUp(pub Timestamp);

impl std::fmt::Display for SecondUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let up = self.0.subsec_nanosecond() > 0;
        match Timestamp::from_second(self.0.as_second() + i64::from(up)) {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

/// `20261126T031500Z`, for branch names.
pub fn compact(t: Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-26T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn rfc3339_normalises_to_utc() {
        let t = parse_target_time("2026-11-24T18:00:00+09:00", None, now()).unwrap();
        assert_eq!(t.to_string(), "2026-11-24T09:00:00Z");
    }

    #[test]
    fn written_in_postgres_form() {
        let t: Timestamp = "2026-11-24T09:00:00.123456789Z".parse().unwrap();
        assert_eq!(postgres(t), "2026-11-24 09:00:00.123456+00");
        let t: Timestamp = "2026-11-24T18:00:00+09:00".parse().unwrap();
        assert_eq!(postgres(t), "2026-11-24 09:00:00.000000+00");
        assert_eq!(
            parse_written("2026-11-24 09:00:00.123456+00"),
            Some(to_micros("2026-11-24T09:00:00.123456789Z".parse().unwrap()))
        );
        assert_eq!(
            parse_written("2026-11-24T09:00:00Z"),
            Some("2026-11-24T09:00:00Z".parse().unwrap())
        );
        assert_eq!(
            parse_written("2026-11-24 18:00:00+09"),
            Some("2026-11-24T09:00:00Z".parse().unwrap())
        );
        assert_eq!(parse_written("yesterday"), None);
    }

    #[test]
    fn people_see_whole_seconds_inside_the_window() {
        let t: Timestamp = "2026-11-27T13:19:13.596696514Z".parse().unwrap();
        assert_eq!(Second(t).to_string(), "2026-11-27T13:19:13Z");
        assert_eq!(SecondUp(t).to_string(), "2026-11-27T13:19:14Z");
        let whole: Timestamp = "2026-11-27T13:19:13Z".parse().unwrap();
        assert_eq!(SecondUp(whole).to_string(), "2026-11-27T13:19:13Z");
    }

    #[test]
    fn plain_time_needs_a_zone() {
        assert!(matches!(
            parse_target_time("2026-11-24 09:00:00", None, now()),
            Err(TimeError::NoOffset { .. })
        ));
        let t = parse_target_time("2026-11-24 18:00:00", Some("Asia/Tokyo"), now()).unwrap();
        assert_eq!(t.to_string(), "2026-11-24T09:00:00Z");
        assert!(matches!(
            parse_target_time("2026-11-24 18:00:00", Some("Mars/Olympus"), now()),
            Err(TimeError::BadZone { .. })
        ));
    }

    #[test]
    fn refuses_garbage_and_future() {
        assert!(matches!(
            parse_target_time("yesterday", None, now()),
            Err(TimeError::Unparsable { .. })
        ));
        assert!(matches!(
            parse_target_time("2027-01-01T00:00:00Z", None, now()),
            Err(TimeError::Future { .. })
        ));
    }
}
