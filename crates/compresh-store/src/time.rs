//! Unix time helpers: the current time and the UTC calendar day of a timestamp.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::UnixTime;

/// Seconds since the Unix epoch, from the system clock.
///
/// A clock set before 1970 yields a negative value rather than a panic.
pub(crate) fn now() -> UnixTime {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The UTC calendar day (`"YYYY-MM-DD"`) containing the unix timestamp `t`.
///
/// Uses Howard Hinnant's `civil_from_days` algorithm, valid for the whole
/// proleptic Gregorian calendar.
pub fn utc_day(t: UnixTime) -> String {
    let days = t.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Converts days since 1970-01-01 into (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    // Both values are in tiny ranges ([1, 31] and [1, 12]) by construction.
    (y, d_to_u32(m), d_to_u32(d))
}

fn d_to_u32(v: i64) -> u32 {
    // Callers pass values in [1, 31]; the fallback is unreachable.
    u32::try_from(v).unwrap_or(0)
}

/// Checks that `s` looks like `YYYY-MM-DD` (digits and dashes in place, month
/// 01-12, day 01-31), so that lexical comparison equals date comparison.
pub(crate) fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(86_399), "1970-01-01");
        assert_eq!(utc_day(86_400), "1970-01-02");
        assert_eq!(utc_day(-1), "1969-12-31");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_709_164_800), "2024-02-29");
        assert_eq!(utc_day(1_709_251_199), "2024-02-29");
        assert_eq!(utc_day(1_709_251_200), "2024-03-01");
        assert_eq!(utc_day(1_735_689_599), "2024-12-31");
        assert_eq!(utc_day(1_735_689_600), "2025-01-01");
        assert_eq!(utc_day(4_107_542_400), "2100-03-01");
    }

    #[test]
    fn consecutive_days_are_increasing_and_well_formed() {
        // Walk ~1100 years day by day: every day string is valid and strictly
        // greater than the previous one, so lexical order is date order.
        let mut prev = utc_day(-86_400 * 200_000);
        for i in -199_999..200_000_i64 {
            let day = utc_day(i * 86_400);
            assert!(is_day(&day), "{day}");
            assert!(day > prev, "{prev} then {day}");
            prev = day;
        }
    }

    #[test]
    fn day_format_is_checked() {
        assert!(is_day("2024-02-29"));
        assert!(!is_day("2024-2-29"));
        assert!(!is_day("2024-13-01"));
        assert!(!is_day("2024-00-10"));
        assert!(!is_day("2024/02/29"));
        assert!(!is_day("20240229xx"));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now() > 1_577_836_800);
    }
}
