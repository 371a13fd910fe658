//! Human durations in the config file: `"200ms"`, `"2s"`, `"10m"`, `"8h"`, `"1d"`.
//!
//! Small on purpose: one number and one unit, so `"1h30m"` is an error rather than a guess.

use std::time::Duration;

/// Parses `"<integer><unit>"` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m, h or d, e.g. \"30s\")"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} has unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or_else(|| format!("{text:?} is too long"))
}

/// Formats a duration back in the largest unit that divides it, for summaries and the admin API.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse(" 1d "), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        for bad in ["", "10", "s", "1.5s", "1h30m", "-1s", "3w", "99999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(600)), "10m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }
}
