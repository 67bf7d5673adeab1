//! RFC 3339 parsing and formatting on plain milliseconds since the Unix epoch.
//!
//! Folds carry time as `i64` milliseconds (UTC) so they stay deterministic and
//! dependency-free; this module is the one place that turns text into that
//! number and back.

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The calendar date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an RFC 3339 timestamp such as 2026-11-01T10:00:00Z: {0}")]
pub struct TimestampError(&'static str);

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into epoch milliseconds.
/// Fractions beyond milliseconds are truncated.
pub fn parse_rfc3339(text: &str) -> Result<i64, TimestampError> {
    // RFC 3339 is ASCII; checked first, every position below is a
    // character boundary.
    if !text.is_ascii() {
        return Err(TimestampError(
            "only ASCII characters belong in a timestamp",
        ));
    }
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return Err(TimestampError("too short"));
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
        let part = &text[range];
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TimestampError("expected digits"));
        }
        part.parse().map_err(|_| TimestampError("expected digits"))
    };
    if bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err(TimestampError("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let year = number(0..4)?;
    let month = number(5..7)? as u32;
    let day = number(8..10)? as u32;
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimestampError("no such time of day"));
    }
    let mut cursor = 19;
    let mut millis = 0i64;
    if bytes[cursor] == b'.' {
        cursor += 1;
        let start = cursor;
        while cursor < bytes.len() && bytes[cursor].is_ascii_digit() {
            cursor += 1;
        }
        let digits = &text[start..cursor];
        if digits.is_empty() {
            return Err(TimestampError("empty fraction of a second"));
        }
        let padded: String = digits.chars().chain("000".chars()).take(3).collect();
        millis = padded.parse().map_err(|_| TimestampError("bad fraction"))?;
    }
    let offset_minutes = match &text[cursor..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':' =>
        {
            let hours = number(cursor + 1..cursor + 3)?;
            let minutes = number(cursor + 4..cursor + 6)?;
            if hours > 23 || minutes > 59 {
                return Err(TimestampError("bad UTC offset"));
            }
            let sign = if zone.as_bytes()[0] == b'-' { -1 } else { 1 };
            sign * (hours * 60 + minutes)
        }
        _ => {
            return Err(TimestampError(
                "missing or bad UTC offset (use Z or ±HH:MM)",
            ));
        }
    };
    // A leap second is folded into the next second, as most systems do.
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(86_400_000);
    let within_day = epoch_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let hour = within_day / 3_600_000;
    let minute = within_day / 60_000 % 60;
    let second = within_day / 1000 % 60;
    let millis = within_day % 1000;
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// The UTC calendar day (days since 1970-01-01) that contains an instant.
pub fn utc_day(epoch_ms: i64) -> i64 {
    epoch_ms.div_euclid(86_400_000)
}

/// Formats a UTC day as `YYYY-MM-DD`.
pub fn format_day(day: i64) -> String {
    let (year, month, day) = civil_from_days(day);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Why an `as_of` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a date such as 2026-03-01 or an RFC 3339 instant such as 2026-03-01T12:00:00Z")]
pub struct DayError;

/// Parses an `as_of`: a date `YYYY-MM-DD`, or an RFC 3339 instant truncated
/// to its UTC day. Returns the day.
pub fn parse_day(text: &str) -> Result<i64, DayError> {
    if !text.is_ascii() {
        return Err(DayError);
    }
    if text.len() == 10 {
        let bytes = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| {
            let part = &text[range];
            part.bytes()
                .all(|byte| byte.is_ascii_digit())
                .then(|| part.parse::<i64>().ok())
                .flatten()
        };
        if bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(DayError);
        }
        let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10))
        else {
            return Err(DayError);
        };
        if !(1..=12).contains(&month)
            || day < 1
            || day > i64::from(days_in_month(year, month as u32))
        {
            return Err(DayError);
        }
        return Ok(days_from_civil(year, month as u32, day as u32));
    }
    parse_rfc3339(text).map(utc_day).map_err(|_| DayError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_is_a_date_or_an_instant_cut_to_its_utc_day() {
        let day = parse_day("2026-03-01").unwrap();
        assert_eq!(format_day(day), "2026-03-01");
        assert_eq!(parse_day("2026-03-01T23:59:59Z"), Ok(day));
        assert_eq!(parse_day("2026-03-02T01:00:00+02:00"), Ok(day));
        for bad in ["2026-02-30", "2026-13-01", "26-03-01", "yesterday", ""] {
            assert_eq!(parse_day(bad), Err(DayError), "{bad}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_example() {
        assert_eq!(parse_rfc3339("2026-11-01T10:00:00Z"), Ok(1_793_527_200_000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.5Z"), Ok(500));
    }

    #[test]
    fn honours_offsets() {
        let utc = parse_rfc3339("2026-11-01T02:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-11-01T10:00:00+08:00"), Ok(utc));
        assert_eq!(parse_rfc3339("2026-10-31T21:00:00-05:00"), Ok(utc));
    }

    #[test]
    fn non_ascii_characters_are_refused_not_sliced_through() {
        for bad in [
            "2026-11-01T10:00:00\u{e9}Z",
            "2026-11-01T10:00:00.\u{665}Z",
            "\u{e9}026-11-01T10:00:00Z",
            "2026-11-01T10:00:00+0\u{e9}:00",
            "2026-11-01T10:00:00Z\u{1F600}",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
            assert!(parse_day(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_day("2026-1\u{e9}-0"), Err(DayError));
    }

    #[test]
    fn refuses_impossible_dates_and_missing_zones() {
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-01T10:00:00",
            "2026-11-01",
            "yesterday",
            "2026-11-01T25:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} was accepted");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_ok());
    }

    proptest! {
        #![proptest_config(rapport_fuzzing::config())]

        #[test]
        fn fuzz_no_text_panics_the_timestamp_and_day_parsers(text in any::<String>()) {
            let _ = parse_rfc3339(&text);
            let _ = parse_day(&text);
        }

        #[test]
        fn fuzz_no_near_timestamp_panics_them(text in "[0-9T:.Z+ -]{0,12}[\\PC]{0,3}[0-9T:.Z+ -]{0,14}") {
            let _ = parse_rfc3339(&text);
            let _ = parse_day(&text);
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(ms in -62_000_000_000_000i64..253_000_000_000_000i64) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }

        #[test]
        fn a_character_put_anywhere_in_a_timestamp_is_refused_or_read_never_a_panic(
            ms in 0i64..4_000_000_000_000i64,
            at in 0usize..30,
            inserted in any::<char>(),
        ) {
            let mut text = format_rfc3339(ms);
            let at = text.char_indices().map(|(index, _)| index).nth(at).unwrap_or(text.len());
            text.insert(at, inserted);
            let _ = parse_rfc3339(&text);
            let _ = parse_day(&text);
            let _ = parse_day(&text[..text.char_indices().nth(10).map_or(text.len(), |(index, _)| index)]);
        }

        #[test]
        fn civil_days_round_trip(days in -700_000i64..3_000_000i64) {
            let (year, month, day) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
