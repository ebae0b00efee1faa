//! Byte sizes as the configuration file writes them: a plain integer (`512`)
//! or an integer with a binary unit (`"4KiB"`, `"256 MiB"`, `"1TiB"`).
//!
//! Invariants: only the binary units B, KiB, MiB, GiB and TiB are accepted,
//! spelled exactly so; decimal units (`GB`), signs, fractions and anything
//! else are refused with a reason that names the accepted units, because a
//! silently misread size (GB read as GiB, or a typo read as 0) would size a
//! cache wrongly without anyone noticing. A result never overflows `u64`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// The units a size may carry, with their multipliers. Case-sensitive: `kib`
/// or `KB` could be meant as either decimal or binary, so neither is guessed.
pub const BYTE_UNITS: [(&str, u64); 5] =
    [("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)];

/// The hint every refusal carries, so that the fix is in the message.
const UNITS_HINT: &str = "use B, KiB, MiB, GiB or TiB";

/// Parses `"256MiB"`, `"256 MiB"`, `"512"` or `"512B"` into bytes.
///
/// The error is the whole reason as it should appear after the key path,
/// e.g. `"1GB" is not a size (use B, KiB, MiB, GiB or TiB)`.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let refuse = || format!("{text:?} is not a size ({UNITS_HINT})");
    let trimmed = text.trim();
    let digits_len = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len == 0 {
        return Err(refuse());
    }
    let (digits, rest) = trimmed.split_at(digits_len);
    // Spaces may separate number and unit ("256 MiB"); `trimmed` has no
    // trailing ones, so an empty unit means a bare number of bytes.
    let unit = rest.trim_start_matches(' ');
    let multiplier = if unit.is_empty() {
        1
    } else {
        match BYTE_UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, multiplier)) => *multiplier,
            None => return Err(refuse()),
        }
    };
    let count: u64 = digits.parse().map_err(|_| format!("{text:?} is too large for a size in bytes"))?;
    count.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large for a size in bytes"))
}

/// Writes `bytes` with the largest unit that divides it exactly (`268435456`
/// becomes `256MiB`), so that limits in messages read the way the file writes them.
pub fn format_byte_size(bytes: u64) -> String {
    for (name, multiplier) in BYTE_UNITS.iter().rev() {
        if *multiplier > 1 && bytes != 0 && bytes.is_multiple_of(*multiplier) {
            return format!("{}{name}", bytes / multiplier);
        }
    }
    bytes.to_string()
}

/// `#[serde(deserialize_with = ...)]` adapter: a YAML integer or string into bytes.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(ByteSizeVisitor)
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = u64;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "a size in bytes ({UNITS_HINT})")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::custom(format!("{value} is not a size ({UNITS_HINT})")))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::custom(format!("{value} is too large for a size in bytes")))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<u64, E> {
        u64::try_from(value).map_err(|_| E::custom(format!("{value} is not a size ({UNITS_HINT})")))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
        Err(E::custom(format!("{value} is not a size ({UNITS_HINT})")))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<u64, E> {
        Err(E::custom(format!("{value} is not a size ({UNITS_HINT})")))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<u64, E> {
        parse_byte_size(value).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_unit_sizes_parse() {
        assert_eq!(parse_byte_size("512"), Ok(512));
        assert_eq!(parse_byte_size("0"), Ok(0));
        assert_eq!(parse_byte_size("512B"), Ok(512));
        assert_eq!(parse_byte_size("4KiB"), Ok(4096));
        assert_eq!(parse_byte_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_byte_size("256 MiB"), Ok(256 << 20));
        assert_eq!(parse_byte_size(" 1GiB "), Ok(1 << 30));
        assert_eq!(parse_byte_size("1TiB"), Ok(1 << 40));
    }

    #[test]
    fn decimal_units_signs_and_words_are_refused_naming_the_units() {
        for text in ["1GB", "1kb", "1 KB", "-1", "lots", "", "1.5GiB", "GiB", "1 GiB x", "1\tGiB", "0x10"] {
            assert_eq!(
                parse_byte_size(text),
                Err(format!("{text:?} is not a size (use B, KiB, MiB, GiB or TiB)")),
                "{text:?}"
            );
        }
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        assert_eq!(parse_byte_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_byte_size("18446744073709551616"),
            Err("\"18446744073709551616\" is too large for a size in bytes".to_string())
        );
        assert_eq!(parse_byte_size("16777216TiB"), Err("\"16777216TiB\" is too large for a size in bytes".to_string()));
        assert_eq!(parse_byte_size("16777215TiB"), Ok(16_777_215 << 40));
    }

    #[test]
    fn formatting_uses_the_largest_exact_unit() {
        assert_eq!(format_byte_size(0), "0");
        assert_eq!(format_byte_size(1), "1");
        assert_eq!(format_byte_size(1023), "1023");
        assert_eq!(format_byte_size(4096), "4KiB");
        assert_eq!(format_byte_size(256 << 20), "256MiB");
        assert_eq!(format_byte_size((256 << 20) + 1), "268435457");
        assert_eq!(format_byte_size(1 << 30), "1GiB");
        assert_eq!(format_byte_size(3 << 40), "3TiB");
    }
}
