//! Human durations for flags (`200ms`, `1s`, `1h30m`, `2d`): a small pure parser, no I/O.

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("missing unit after {0} (use ns, us, ms, s, m, h or d, e.g. 200ms, 1s)")]
    MissingUnit(String),
    #[error("unknown unit {0:?} (use ns, us, ms, s, m, h or d)")]
    UnknownUnit(String),
    #[error("expected a number before {0:?}")]
    MissingNumber(String),
    #[error("fractions are not supported (write 1500ms, not 1.5s)")]
    Fraction,
    #[error("duration too large")]
    Overflow,
}

/// Parses a duration made of one or more `<integer><unit>` parts, e.g. `200ms`, `1h30m`.
/// Units: `ns`, `us`, `ms`, `s`, `m`, `h`, `d` (and their long forms `sec`, `min`, ...).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::MissingNumber(rest.to_string()));
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with('.') {
            return Err(DurationError::Fraction);
        }
        let unit_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let (unit, after) = after.split_at(unit_len);
        // Only whitespace may separate parts: "1h 30m".
        rest = after.trim_start();
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(number.to_string()));
        }
        let nanos_per_unit: u128 = match unit {
            "ns" | "nsec" => 1,
            "us" | "usec" => 1_000,
            "ms" | "msec" => 1_000_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
            "d" | "day" | "days" => 86_400_000_000_000,
            other => return Err(DurationError::UnknownUnit(other.to_string())),
        };
        let value: u128 = number.parse().map_err(|_| DurationError::Overflow)?;
        total = value
            .checked_mul(nanos_per_unit)
            .and_then(|n| total.checked_add(n))
            .ok_or(DurationError::Overflow)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    // The remainder is below 10^9 and fits.
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way [`parse_duration`] reads it (`1h30m`, `200ms`).
pub fn format_duration(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let units: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    let mut out = String::new();
    for (size, name) in units {
        if nanos >= size {
            out.push_str(&format!("{}{name}", nanos / size));
            nanos %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_units() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("5us"), Ok(Duration::from_micros(5)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(" 3sec "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn parses_compound() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_duration("10parsecs"),
            Err(DurationError::UnknownUnit("parsecs".into()))
        );
        assert_eq!(
            parse_duration("ms"),
            Err(DurationError::MissingNumber("ms".into()))
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::MissingNumber("-1s".into()))
        );
        assert_eq!(parse_duration("1.5s"), Err(DurationError::Fraction));
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999d"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("999999999999999999d"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn format_round_trips() {
        for text in ["200ms", "1s", "1h30m", "2h", "1d1s", "5us", "1m1ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
