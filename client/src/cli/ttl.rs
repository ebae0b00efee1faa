//! `--ttl` values: a whole number and a unit (`500ms`, `10s`, `2m`, `1h`).
//!
//! Invariant: whatever parses is at least 1 ms and at most
//! [`TTL_MS_MAX`], so it can go on the wire as is. Zero is refused rather
//! than sent, because 0 on the wire means "never expires", the opposite of
//! what `--ttl 0s` says.

use std::time::Duration;

use opticache_client::limits::TTL_MS_MAX;

/// Why a `--ttl` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("empty TTL; expected a whole number and a unit, e.g. 500ms, 10s, 2m, 1h")]
    Empty,
    #[error("TTL {0:?} does not start with a whole number; expected e.g. 500ms, 10s, 2m, 1h")]
    BadNumber(String),
    #[error("TTL {0:?} has no unit; add ms, s, m or h (e.g. {0}s)")]
    MissingUnit(String),
    #[error("TTL {input:?} has unknown unit {unit:?}; expected ms, s, m or h")]
    UnknownUnit { input: String, unit: String },
    #[error("TTL {0:?} is zero; leave out --ttl for a value that never expires")]
    Zero(String),
    #[error(
        "TTL {0:?} is over the limit of {TTL_MS_MAX} ms (10 years); leave out --ttl for a value that never expires"
    )]
    TooLong(String),
}

/// Parses `500ms`, `10s`, `2m` or `1h`.
pub fn parse_ttl(input: &str) -> Result<Duration, TtlError> {
    if input.is_empty() {
        return Err(TtlError::Empty);
    }
    let digits_end = input.find(|c: char| !c.is_ascii_digit()).unwrap_or(input.len());
    let (digits, unit) = input.split_at(digits_end);
    if digits.is_empty() || unit.starts_with('.') {
        return Err(TtlError::BadNumber(input.to_owned()));
    }
    let ms_per_unit: u64 = match unit {
        "" => return Err(TtlError::MissingUnit(input.to_owned())),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(TtlError::UnknownUnit { input: input.to_owned(), unit: other.to_owned() }),
    };
    // Only digits, so the one way to fail is overflow: too long.
    let count: u64 = digits.parse().map_err(|_| TtlError::TooLong(input.to_owned()))?;
    let ms = count.checked_mul(ms_per_unit).filter(|ms| *ms <= TTL_MS_MAX);
    match ms {
        Some(0) => Err(TtlError::Zero(input.to_owned())),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(TtlError::TooLong(input.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_ttl("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_ttl("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_ttl("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn limits_are_inclusive() {
        assert_eq!(parse_ttl("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_ttl("315360000000ms"), Ok(Duration::from_millis(TTL_MS_MAX)));
        assert_eq!(parse_ttl("87600h"), Ok(Duration::from_millis(TTL_MS_MAX)));
        assert_eq!(parse_ttl("315360000001ms"), Err(TtlError::TooLong("315360000001ms".into())));
        assert_eq!(parse_ttl("87601h"), Err(TtlError::TooLong("87601h".into())));
        // Over u64 before and after the unit is applied.
        assert_eq!(parse_ttl("18446744073709551616ms"), Err(TtlError::TooLong("18446744073709551616ms".into())));
        assert_eq!(parse_ttl("18446744073709551615h"), Err(TtlError::TooLong("18446744073709551615h".into())));
    }

    #[test]
    fn zero_is_refused_because_the_wire_reads_it_as_never() {
        for zero in ["0ms", "0s", "000m"] {
            assert_eq!(parse_ttl(zero), Err(TtlError::Zero(zero.into())));
        }
    }

    #[test]
    fn malformed_values_say_what_is_wrong() {
        assert_eq!(parse_ttl(""), Err(TtlError::Empty));
        assert_eq!(parse_ttl("10"), Err(TtlError::MissingUnit("10".into())));
        assert_eq!(parse_ttl("s"), Err(TtlError::BadNumber("s".into())));
        assert_eq!(parse_ttl("-1s"), Err(TtlError::BadNumber("-1s".into())));
        assert_eq!(parse_ttl(" 10s"), Err(TtlError::BadNumber(" 10s".into())));
        assert_eq!(parse_ttl("1.5s"), Err(TtlError::BadNumber("1.5s".into())));
        assert_eq!(parse_ttl("10x"), Err(TtlError::UnknownUnit { input: "10x".into(), unit: "x".into() }));
        assert_eq!(parse_ttl("10 s"), Err(TtlError::UnknownUnit { input: "10 s".into(), unit: " s".into() }));
        assert_eq!(parse_ttl("10S"), Err(TtlError::UnknownUnit { input: "10S".into(), unit: "S".into() }));
    }

    #[test]
    fn messages_read_well() {
        assert_eq!(parse_ttl("10").unwrap_err().to_string(), "TTL \"10\" has no unit; add ms, s, m or h (e.g. 10s)");
        assert_eq!(
            parse_ttl("0s").unwrap_err().to_string(),
            "TTL \"0s\" is zero; leave out --ttl for a value that never expires"
        );
    }
}
