//! When a snooze ends, as a person says it: `2h`, `3d`, `tomorrow`, `tomorrow 14:00`,
//! `monday`, `18:30`, `2026-12-01 09:00`, `2026-12-01`, or RFC 3339. Local time.

use chrono::{DateTime, Datelike, Local, NaiveDate, NaiveTime, TimeZone, Weekday};

/// When a day is named without a time, the snooze ends at the start of a working morning.
const MORNING: (u32, u32) = (9, 0);

pub fn parse(spec: &str, now: DateTime<Local>) -> Result<i64, String> {
    let spec = spec.trim();
    let bad = || {
        format!(
            "cannot read {spec:?} as a time: use e.g. 2h, 3d, tomorrow, \"tomorrow 14:00\", \
             monday, 18:30 or \"2026-12-01 09:00\""
        )
    };
    if spec.is_empty() {
        return Err(bad());
    }
    if let Ok(d) = humantime::parse_duration(spec) {
        let d = chrono::Duration::from_std(d).map_err(|_| bad())?;
        return Ok((now + d).timestamp());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(spec) {
        return Ok(t.timestamp());
    }
    let lower = spec.to_lowercase();
    let (day, time) = match lower.split_once(' ') {
        Some((d, t)) => (d.to_owned(), Some(t.trim().to_owned())),
        None => (lower.clone(), None),
    };
    let time = match &time {
        Some(t) => Some(NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| bad())?),
        None => None,
    };
    let today = now.date_naive();
    let morning = NaiveTime::from_hms_opt(MORNING.0, MORNING.1, 0).ok_or_else(bad)?;
    let date = match day.as_str() {
        "today" => today,
        "tomorrow" => today.succ_opt().ok_or_else(bad)?,
        other => {
            if let Ok(date) = NaiveDate::parse_from_str(other, "%Y-%m-%d") {
                date
            } else if let Some(weekday) = weekday(other) {
                let ahead = (7 + weekday.num_days_from_monday()
                    - today.weekday().num_days_from_monday())
                    % 7;
                today + chrono::Duration::days(if ahead == 0 { 7 } else { i64::from(ahead) })
            } else if time.is_none() {
                // A bare time of day: today, or tomorrow if it has passed.
                let t = NaiveTime::parse_from_str(other, "%H:%M").map_err(|_| bad())?;
                let candidate = local(today.and_time(t))?;
                return Ok(if candidate > now.timestamp() {
                    candidate
                } else {
                    local(today.succ_opt().ok_or_else(bad)?.and_time(t))?
                });
            } else {
                return Err(bad());
            }
        }
    };
    local(date.and_time(time.unwrap_or(morning)))
}

fn weekday(name: &str) -> Option<Weekday> {
    let all = [
        ("monday", Weekday::Mon),
        ("tuesday", Weekday::Tue),
        ("wednesday", Weekday::Wed),
        ("thursday", Weekday::Thu),
        ("friday", Weekday::Fri),
        ("saturday", Weekday::Sat),
        ("sunday", Weekday::Sun),
    ];
    all.iter()
        .find(|(n, _)| *n == name || (name.len() >= 3 && n.starts_with(name)))
        .map(|(_, d)| *d)
}

fn local(naive: chrono::NaiveDateTime) -> Result<i64, String> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp())
        .ok_or_else(|| format!("{naive} does not exist in the local time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn durations_days_and_times() {
        let now = at(2026, 11, 28, 15, 30); // a Saturday
        assert_eq!(parse("2h", now), Ok(now.timestamp() + 7200));
        assert_eq!(parse("3d", now), Ok(now.timestamp() + 3 * 86_400));
        assert_eq!(parse("1h 30m", now), Ok(now.timestamp() + 5400));
        assert_eq!(parse("tomorrow", now), Ok(at(2026, 11, 29, 9, 0).timestamp()));
        assert_eq!(parse("Tomorrow 14:00", now), Ok(at(2026, 11, 29, 14, 0).timestamp()));
        assert_eq!(parse("monday", now), Ok(at(2026, 11, 30, 9, 0).timestamp()));
        assert_eq!(parse("sat", now), Ok(at(2026, 12, 5, 9, 0).timestamp()), "next week's");
        assert_eq!(parse("18:30", now), Ok(at(2026, 11, 28, 18, 30).timestamp()));
        assert_eq!(parse("08:00", now), Ok(at(2026, 11, 29, 8, 0).timestamp()), "passed: tomorrow");
        assert_eq!(parse("2026-12-01 09:15", now), Ok(at(2026, 12, 1, 9, 15).timestamp()));
        assert_eq!(parse("2026-12-01", now), Ok(at(2026, 12, 1, 9, 0).timestamp()));
        assert_eq!(parse("2026-12-01T10:00:00Z", now), Ok(1_796_119_200));
        assert!(parse("someday", now).unwrap_err().contains("cannot read \"someday\""));
        assert!(parse("", now).is_err());
        assert!(parse("tomorrow noonish", now).is_err());
    }
}
