//! Timestamps as aovis writes and reads them.
//!
//! Every SDK parses `Expiration` written as UTC `YYYY-MM-DDTHH:MM:SSZ`; some choke on
//! fractions or offsets (see the table in `shared/design.md`). So aovis writes only
//! that form and reads any RFC 3339 timestamp, converting it to UTC. A fraction of a
//! second is dropped on reading, which moves an expiry earlier, never later.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Formats a time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_expiration(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses any RFC 3339 timestamp (any offset, any fraction) into UTC whole seconds.
/// Returns `None` when the text is not RFC 3339; the caller names the field.
///
/// An offset can carry a time just outside years 0000 to 9999 once converted to
/// UTC (`9999-12-31T23:59:59-23:59`); such a time could not be written back in the
/// canonical form, so it is refused here (found by fuzzing).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let parsed = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    if !(0..=9999).contains(&parsed.year()) {
        return None;
    }
    parsed.with_nanosecond(0)
}

/// "3m 12s", "2h 5m", "41s": a span for people, used in messages and status lines.
pub fn human_duration(span: chrono::TimeDelta) -> String {
    let secs = span.num_seconds().unsigned_abs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    #[test]
    fn writes_only_the_canonical_form() {
        let time = Utc.with_ymd_and_hms(2026, 11, 22, 13, 0, 0).unwrap();
        assert_eq!(format_expiration(time), "2026-11-22T13:00:00Z");
        let with_fraction = time + TimeDelta::milliseconds(250);
        assert_eq!(format_expiration(with_fraction), "2026-11-22T13:00:00Z");
    }

    #[test]
    fn reads_offsets_and_fractions_leniently() {
        let expected = Utc.with_ymd_and_hms(2026, 11, 22, 13, 0, 0).unwrap();
        for text in [
            "2026-11-22T13:00:00Z",
            "2026-11-22T13:00:00.999Z",
            "2026-11-22T13:00:00+00:00",
            "2026-11-22T14:00:00+01:00",
            "2026-11-22T08:00:00.5-05:00",
            "2026-11-22t13:00:00z",
        ] {
            assert_eq!(parse_timestamp(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for text in [
            "",
            "2026-11-22",
            "2026-11-22 13:00:00",
            "1763816400",
            "tomorrow",
            // Regressions from fuzzing: valid RFC 3339, outside 0000-9999 in UTC.
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+00:01",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(TimeDelta::seconds(41)), "41s");
        assert_eq!(human_duration(TimeDelta::seconds(192)), "3m 12s");
        assert_eq!(human_duration(TimeDelta::seconds(-192)), "3m 12s");
        assert_eq!(human_duration(TimeDelta::seconds(7500)), "2h 5m");
        assert_eq!(human_duration(TimeDelta::seconds(90_000)), "1d 1h");
    }
}
