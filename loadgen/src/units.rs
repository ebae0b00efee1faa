//! Sizes and durations as people type them (`4KiB`, `64MiB`, `2s`, `500ms`)
//! and as the reports print them (`87µs`, `1.25ms`).
//!
//! Invariants: parsing never panics and never silently rounds: a size is a
//! whole number of bytes, a duration a whole number of milliseconds, and
//! anything else is an error that quotes the input. Binary units (`KiB`) are
//! powers of 1024, decimal ones (`KB`) powers of 1000.

/// Bytes in one KiB, MiB, GiB.
pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Parses a byte count: `4096`, `256B`, `4KiB`, `1MiB`, `1.5KiB`, `2GB`.
/// Unit names are case-insensitive.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => KIB,
        "mib" | "m" => MIB,
        "gib" | "g" => GIB,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("{text:?}: unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    whole(number, multiplier).ok_or_else(|| format!("{text:?} is not a whole number of bytes"))
}

/// Parses a duration into whole milliseconds: `500ms`, `2s`, `1.5s`, `3m`,
/// `1h`. A unit is required: a bare `10` could mean seconds or
/// milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("{text:?} has no unit (write e.g. 500ms, 10s, 2m, 1h)")),
        other => return Err(format!("{text:?}: unknown duration unit {other:?} (use ms, s, m or h)")),
    };
    whole(number, multiplier).ok_or_else(|| format!("{text:?} is not a whole number of milliseconds"))
}

/// `number × multiplier` when `number` is a plain decimal (digits, at most
/// one point) and the product is a whole number that fits in a u64.
fn whole(number: &str, multiplier: u64) -> Option<u64> {
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int_value: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int_value.checked_mul(multiplier)?;
    if !frac.is_empty() {
        // frac / 10^len × multiplier must itself be whole.
        let digits = u32::try_from(frac.len()).ok()?;
        let scale = 10u128.checked_pow(digits)?;
        let scaled = frac.parse::<u128>().ok()?.checked_mul(u128::from(multiplier))?;
        if scaled % scale != 0 {
            return None;
        }
        total = total.checked_add(u64::try_from(scaled / scale).ok()?)?;
    }
    Some(total)
}

/// A byte count the way a person reads it: `256B`, `4KiB`, `1.5MiB`.
pub fn format_size(bytes: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{}{name}", bytes / unit)
            } else {
                format!("{:.1}{name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes}B")
}

/// A latency in microseconds, in the unit that keeps it short: `87µs`,
/// `1.25ms`, `2.10s`.
pub fn format_latency_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// A duration in milliseconds, short: `500ms`, `2s`, `1.5s`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.3}s", ms as f64 / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256B"), Ok(256));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4kib"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size(" 8 KiB "), Ok(8192));
    }

    #[test]
    fn bad_sizes_are_refused_with_the_input_quoted() {
        for bad in ["", "KiB", "4XB", "-1", "1.2.3", "0.3B", "1.0001KiB", "99999999999999999999", "16777216TiB"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_need_a_unit_and_whole_milliseconds() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2s"), Ok(2_000));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1_500));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms("3m"), Ok(180_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        let no_unit = parse_duration_ms("10").expect_err("no unit");
        assert!(no_unit.contains("no unit"), "{no_unit}");
        for bad in ["", "s", "ten s", "10 parsecs", "0.5ms", "-1s", "1e3s"] {
            let err = parse_duration_ms(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn formats_are_short() {
        assert_eq!(format_size(256), "256B");
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(1536), "1.5KiB");
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_latency_us(87), "87µs");
        assert_eq!(format_latency_us(1_250), "1.25ms");
        assert_eq!(format_latency_us(2_100_000), "2.10s");
        assert_eq!(format_duration_ms(500), "500ms");
        assert_eq!(format_duration_ms(2_000), "2s");
        assert_eq!(format_duration_ms(1_500), "1.500s");
    }
}
