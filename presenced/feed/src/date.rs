//! Tolerant date parsing for feed timestamps.
//!
//! Accepts RFC 3339 / ISO 8601 (`2006-02-09T23:59:45.123+01:00`, `2006-02-09 23:59:45`,
//! `2006-02-09`) and the many shapes of RFC 822/2822 seen in RSS: missing or wrong or
//! localised weekday, one- or two-digit days and years, missing seconds, month names in
//! any case (and common French, German, Spanish, Italian, Portuguese and Dutch
//! abbreviations), named, military and numeric zones (`+0000`, `+00:00`, `GMT+2`),
//! `(comments)`, `AM`/`PM`, extra whitespace and commas. A missing zone means UTC.
//! Impossible dates (31 June, month 13) and bare numbers give `None`; a leap second
//! (`:60`) is read as `:59`.

use chrono::NaiveDate;

/// Parses a feed date into unix seconds (UTC), or `None` if it cannot be understood.
pub fn parse_date(input: &str) -> Option<i64> {
    let s = input.trim();
    if s.is_empty() || s.len() > 256 {
        return None;
    }
    let stripped;
    let s = if s.contains('(') {
        stripped = strip_comments(s);
        stripped.trim()
    } else {
        s
    };
    parse_iso8601(s).or_else(|| parse_rfc2822(s)).or_else(|| parse_loose(s))
}

/// The one shape nearly every RSS feed writes, `Sat, 28 Nov 2026 16:00:00 GMT` (or
/// `+hhmm`), read by byte: the loose parser's tokenising costs twenty times as much. It
/// answers only when it read the whole input; anything else is left to [`parse_loose`],
/// which reads these the same way (a test checks).
fn parse_rfc2822(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let rest =
        b.get(5..).filter(|_| b[..3].iter().all(u8::is_ascii_alphabetic) && &b[3..5] == b", ")?;
    let mut c = Cursor { b: rest, i: 0 };
    let day_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=2).contains(&day_len) {
        return None;
    }
    let day = c.digits(day_len)?;
    const MONTHS: [&[u8; 5]; 12] = [
        b" Jan ", b" Feb ", b" Mar ", b" Apr ", b" May ", b" Jun ", b" Jul ", b" Aug ", b" Sep ",
        b" Oct ", b" Nov ", b" Dec ",
    ];
    let month = MONTHS.iter().position(|m| c.rest().starts_with(*m))? as u32 + 1;
    c.i += 5;
    let year = c.digits(4)?;
    let mut time = [0u32; 3];
    for (n, part) in time.iter_mut().enumerate() {
        if !c.eat([b' ', b':', b':'][n]) {
            return None;
        }
        *part = c.digits(2)?;
    }
    if !c.eat(b' ') {
        return None;
    }
    let offset = match c.rest() {
        b"GMT" | b"UT" | b"UTC" | b"Z" => 0,
        [sign @ (b'+' | b'-'), zone @ ..] if zone.len() == 4 => {
            let mut z = Cursor { b: zone, i: 0 };
            let (h, m) = (i64::from(z.digits(2)?), i64::from(z.digits(2)?));
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' {
                -(h * 3600 + m * 60)
            } else {
                h * 3600 + m * 60
            }
        }
        _ => return None,
    };
    timestamp(year as i32, month, day, time[0], time[1], time[2], offset)
}

/// Removes RFC 822 comments (nested, with `\` escapes), each replaced by a space.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                if depth == 0 {
                    out.push(' ');
                }
                depth += 1;
            }
            ')' if depth > 0 => depth -= 1,
            '\\' if depth > 0 => {
                chars.next();
            }
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let part = self.b.get(self.i..self.i + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn rest(&self) -> &[u8] {
        self.b.get(self.i..).unwrap_or_default()
    }
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]][ ]?[Z|±HH[:]MM|±HH|UTC|GMT]]`
fn parse_iso8601(s: &str) -> Option<i64> {
    let mut c = Cursor { b: s.as_bytes(), i: 0 };
    let year = c.digits(4)?;
    if !c.eat(b'-') {
        return None;
    }
    let month = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.digits(2)?;
    if c.rest().is_empty() {
        return timestamp(year as i32, month, day, 0, 0, 0, 0);
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return None;
    }
    let hour = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.digits(2)?;
    let mut second = 0;
    if c.eat(b':') {
        second = c.digits(2)?;
        if c.eat(b'.') || c.eat(b',') {
            let frac = c.rest().iter().take_while(|b| b.is_ascii_digit()).count();
            if frac == 0 {
                return None;
            }
            c.i += frac;
        }
    }
    // Zone.
    while c.peek() == Some(b' ') {
        c.i += 1;
    }
    let offset = match c.rest() {
        [] => 0,
        [b'Z' | b'z'] => 0,
        rest => {
            let text = std::str::from_utf8(rest).ok()?;
            zone_offset(text)?
        }
    };
    timestamp(year as i32, month, day, hour, minute, second, offset)
}

/// Parses a numeric (`+0100`, `-02:30`, `+01`, `+5`) or named zone into seconds east of UTC.
fn zone_offset(token: &str) -> Option<i64> {
    let t = token.trim();
    if let Some(sign) = t.chars().next().filter(|c| *c == '+' || *c == '-') {
        let digits: String = t[1..].chars().filter(|c| *c != ':').collect();
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (h, m) = match digits.len() {
            1 | 2 => (digits.parse::<i64>().ok()?, 0),
            3 => (digits[..1].parse::<i64>().ok()?, digits[1..].parse::<i64>().ok()?),
            _ => (digits[..2].parse::<i64>().ok()?, digits[2..].parse::<i64>().ok()?),
        };
        if h > 23 || m > 59 {
            return None;
        }
        let secs = h * 3600 + m * 60;
        return Some(if sign == '-' { -secs } else { secs });
    }
    let upper = t.to_ascii_uppercase();
    for prefix in ["GMT", "UTC", "UT"] {
        if let Some(rest) = upper.strip_prefix(prefix) {
            if rest.is_empty() {
                return Some(0);
            }
            if rest.starts_with(['+', '-']) {
                return zone_offset(rest);
            }
        }
    }
    named_zone(&upper)
}

fn named_zone(upper: &str) -> Option<i64> {
    const H: i64 = 3600;
    let offset = match upper {
        "Z" => 0,
        "EST" => -5 * H,
        "EDT" => -4 * H,
        "CST" => -6 * H,
        "CDT" => -5 * H,
        "MST" => -7 * H,
        "MDT" => -6 * H,
        "PST" => -8 * H,
        "PDT" => -7 * H,
        "AKST" => -9 * H,
        "AKDT" => -8 * H,
        "HST" => -10 * H,
        "AST" => -4 * H,
        "ADT" => -3 * H,
        "NST" => -(3 * H + 1800),
        "NDT" => -(2 * H + 1800),
        "WET" => 0,
        "WEST" | "BST" | "CET" | "MET" => H,
        "CEST" | "MEST" | "EET" => 2 * H,
        "EEST" | "MSK" => 3 * H,
        "IST" => 5 * H + 1800,
        "HKT" | "SGT" | "AWST" => 8 * H,
        "JST" | "KST" => 9 * H,
        "ACST" => 9 * H + 1800,
        "AEST" => 10 * H,
        "AEDT" => 11 * H,
        "NZST" => 12 * H,
        "NZDT" => 13 * H,
        // Military zones: RFC 2822 §4.3 says their sign was botched in RFC 822 and they
        // must be read as -0000 (unknown), i.e. UTC.
        m if m.len() == 1 && m.as_bytes()[0].is_ascii_alphabetic() && m != "J" => 0,
        _ => return None,
    };
    Some(offset)
}

fn month_number(token: &str) -> Option<u32> {
    let t = token.trim_end_matches('.').to_lowercase();
    const NAMES: &[(&str, u32)] = &[
        ("january", 1),
        ("february", 2),
        ("march", 3),
        ("april", 4),
        ("may", 5),
        ("june", 6),
        ("july", 7),
        ("august", 8),
        ("september", 9),
        ("october", 10),
        ("november", 11),
        ("december", 12),
    ];
    // English names: any prefix of at least three letters ("Sep", "Sept", "Febr").
    if t.len() >= 3 {
        if let Some((_, n)) = NAMES.iter().find(|(name, _)| name.starts_with(t.as_str())) {
            return Some(*n);
        }
    }
    // Common abbreviations and names in other languages.
    const OTHER: &[(&str, u32)] = &[
        ("janv", 1),
        ("jan", 1),
        ("ene", 1),
        ("gen", 1),
        ("jänner", 1),
        ("fév", 2),
        ("févr", 2),
        ("fev", 2),
        ("feb", 2),
        ("mär", 3),
        ("märz", 3),
        ("mrt", 3),
        ("mars", 3),
        ("avr", 4),
        ("abr", 4),
        ("mai", 5),
        ("mei", 5),
        ("mag", 5),
        ("maj", 5),
        ("juin", 6),
        ("giu", 6),
        ("juni", 6),
        ("juil", 7),
        ("lug", 7),
        ("juli", 7),
        ("août", 8),
        ("aout", 8),
        ("ago", 8),
        ("set", 9),
        ("sept", 9),
        ("okt", 10),
        ("ott", 10),
        ("out", 10),
        ("déc", 12),
        ("dez", 12),
        ("dic", 12),
    ];
    OTHER.iter().find(|(name, _)| *name == t).map(|(_, n)| *n)
}

/// RFC 822/2822 and similar: tokens in (almost) any order, identified by shape.
fn parse_loose(s: &str) -> Option<i64> {
    // A weekday abbreviation can look like a month ("Mar" is Tuesday in Spanish), so the
    // last month-like token wins: weekdays come first in every format seen.
    let mut month = None;
    let mut numbers: Vec<&str> = Vec::new();
    let mut time: Option<Time> = None;
    let mut offset: Option<i64> = None;
    let mut pm: Option<bool> = None;

    for token in s.split(|c: char| c.is_whitespace() || c == ',') {
        if token.is_empty() {
            continue;
        }
        if token.contains(':') && time.is_none() && token.starts_with(|c: char| c.is_ascii_digit())
        {
            let (t, zone) = split_time(token)?;
            time = Some(t);
            if let Some(zone) = zone {
                offset = Some(zone_offset(zone)?);
            }
            continue;
        }
        let lower = token.to_ascii_lowercase();
        if matches!(lower.as_str(), "am" | "a.m." | "pm" | "p.m.") {
            pm = Some(lower.starts_with('p'));
            continue;
        }
        if token.starts_with(['+', '-']) {
            if time.is_some() && offset.is_none() {
                offset = Some(zone_offset(token)?);
                continue;
            }
            return None;
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            numbers.push(token);
            continue;
        }
        // "9th", "1st"
        let digits = token.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && digits <= 2
            && matches!(&lower[digits..], "st" | "nd" | "rd" | "th" | "." | "er")
        {
            numbers.push(&token[..digits]);
            continue;
        }
        if let Some(m) = month_number(token) {
            month = Some(m);
            continue;
        }
        if time.is_some() && offset.is_none() {
            if let Some(z) = zone_offset(token) {
                offset = Some(z);
                continue;
            }
        }
        // Anything else (weekday names in any language, "at", …) is ignored, but a token
        // mixing digits with other things is too ambiguous to skip.
        if token.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
    }

    let month = month?;
    let (day, year) = match numbers.as_slice() {
        [a, b] => {
            // Day is the short one; if both are short, RFC 2822 order (day, year).
            if a.len() <= 2 && b.len() >= 3 {
                (a, b)
            } else if b.len() <= 2 && a.len() >= 3 {
                (b, a)
            } else if a.len() <= 2 && b.len() <= 2 {
                (a, b)
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    let year = match year.len() {
        // RFC 2822 §4.3: two-digit years 00-49 are 20xx, 50-99 are 19xx; three digits +1900.
        1 | 2 => {
            let y: i32 = year.parse().ok()?;
            if y < 50 {
                2000 + y
            } else {
                1900 + y
            }
        }
        3 => 1900 + year.parse::<i32>().ok()?,
        4 => year.parse().ok()?,
        _ => return None,
    };
    let (mut hour, minute, second) = time.unwrap_or((0, 0, 0));
    match pm {
        Some(true) if hour < 12 => hour += 12,
        Some(false) if hour == 12 => hour = 0,
        Some(_) if hour > 12 => return None,
        _ => {}
    }
    timestamp(year, month, day, hour, minute, second, offset.unwrap_or(0))
}

/// Hour, minute, second.
type Time = (u32, u32, u32);

/// Splits `HH:MM[:SS[.fff]]` (with possibly a zone glued on: `23:59:45Z`, `10:00+0200`).
fn split_time(token: &str) -> Option<(Time, Option<&str>)> {
    let bytes = token.as_bytes();
    let mut c = Cursor { b: bytes, i: 0 };
    let h_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=2).contains(&h_len) {
        return None;
    }
    let hour = c.digits(h_len)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.digits(2)?;
    let mut second = 0;
    if c.eat(b':') {
        second = c.digits(2)?;
        if c.eat(b'.') {
            c.i += c.rest().iter().take_while(|b| b.is_ascii_digit()).count();
        }
    }
    let rest = &token[c.i..];
    Some(((hour, minute, second), (!rest.is_empty()).then_some(rest)))
}

fn timestamp(
    year: i32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    offset: i64,
) -> Option<i64> {
    if !(1..=9999).contains(&year) {
        return None;
    }
    // A leap second is rounded down rather than rejected.
    let second = if second == 60 { 59 } else { second };
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)?;
    Some(naive.and_utc().timestamp() - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    const T: &str = "2006-02-09T23:59:45Z";

    /// The fast path reads what the loose parser reads, and declines the rest.
    #[test]
    fn the_rfc2822_fast_path_agrees_with_the_loose_parser() {
        let zones = [
            "GMT", "UT", "UTC", "Z", "+0000", "-0000", "+0530", "-0800", "+2359", "+2400", "-0060",
            "EST", "+05", "gmt",
        ];
        let mut read = 0;
        for (i, zone) in zones.iter().enumerate() {
            for (day, month, year, time) in [
                ("09", "Feb", "2006", "23:59:45"),
                ("9", "Feb", "2006", "23:59:60"),
                ("31", "Jun", "2026", "10:00:00"),
                ("29", "Feb", "2024", "00:00:00"),
                ("29", "Feb", "2023", "00:00:00"),
                ("1", "Dec", "1999", "24:00:00"),
                ("01", "Sep", "0001", "12:61:00"),
                ("001", "Jan", "2026", "12:00:00"),
                ("1", "jan", "2026", "12:00:00"),
                ("1", "Jan", "26", "12:00:00"),
                ("1", "Jan", "2026", "12:00"),
            ] {
                let weekday = ["Thu", "Mar", "Dec", "xyz"][i % 4];
                let s = format!("{weekday}, {day} {month} {year} {time} {zone}");
                let fast = parse_rfc2822(&s);
                if fast.is_some() {
                    read += 1;
                    assert_eq!(fast, parse_loose(&s), "{s}");
                }
                assert_eq!(parse_date(&s), parse_loose(&s), "{s}");
            }
        }
        // 9 zones of the fast path's shape × 3 valid dates.
        assert_eq!(read, 27);
    }

    #[test]
    fn rfc2822_variants() {
        for s in [
            "Thu, 09 Feb 2006 23:59:45 +0000",
            "09 Feb 2006 23:59:45 +0000",
            "Thu, 9 Feb 2006 23:59:45 +0000",
            "Thu, 09 Feb 06 23:59:45 +0000",
            "Thu, 09 Feb 2006 16:59:45 PDT",
            "Thu, 09 Feb 2006 17:59:45 CST",
            "Thu, 09 Feb 2006 18:59:45 EST",
            "Fri, 10 Feb 2006 03:59:45 +0400",
            "Thu, 09 Feb 2006 16:59:45 -0700",
            "Thu, 09 Feb 2006 23:59:45 -0000",
            "Thu, 09 Feb 2006 21:25:45 -0234",
            "Thu, 09 Feb 2006 23:59:45 UT",
            "Thu, 09 Feb 2006 23:59:45 GMT",
            "Thu, 09 Feb 2006 23:59:45 Z",
            "Thu, 09 Feb 2006 23:59:45 z",
            "tHu, 09 fEb 2006 23:59:45 +0000",
            "Thu, 09 Feb 2006 16:59:45 pDt",
            "Thu(oh how I hate thursdays), 9(th) Feb(ruary) 2006 23:59:45 +0000(GMT r0x0rz)",
            r"Thu, 09 (nested (comment) Mar)Feb(escaped comment\) 2005) 2006()23:59:45 +0000",
            "\tThu , \t 09  Feb\t2006  23:59:45\t +0000",
            "\n Thu,\n 09 Feb 2006\n 23:59:45 +0000\n",
            "Thu, 09 Feb 2006 23:59:45 +00:00",
            "Mon, 09 Feb 2006 23:59:45 +0000",
            "Thursday, 09 February 2006 23:59:45 +0000",
            "Thu Feb  9 23:59:45 2006",
            "Thu, 09 Feb 2006 23:59:45",
            "Thu, 09 Feb 2006 22:59:45 GMT-01:00",
            "Fri, 10 Feb 2006 01:59:45 CEST",
            "Feb 9, 2006 11:59:45 PM",
            "Do, 09 Feb 2006 23:59:45 +0000",
            "jeu., 09 févr. 2006 23:59:45 +0000",
            "Do, 09 Feb. 2006 23:59:45 +0000",
            "Mar, 09 Feb 2006 23:59:45 +0000",
            "Thu, 09 Feb 2006 23:59:45+0000",
        ] {
            assert_eq!(parse_date(s), Some(utc(T)), "{s:?}");
        }
        assert_eq!(parse_date("Thu, 09 Feb 2006 23:59 +0000"), Some(utc("2006-02-09T23:59:00Z")));
        assert_eq!(parse_date("Fri, 09 Feb 96 23:59:45 +0000"), Some(utc("1996-02-09T23:59:45Z")));
        assert_eq!(
            parse_date("Sat, 09 Sept 2006 23:59:45 +0000"),
            Some(utc("2006-09-09T23:59:45Z"))
        );
        assert_eq!(
            parse_date("Sun, 09 Feb 1806 23:59:45 +0000"),
            Some(utc("1806-02-09T23:59:45Z"))
        );
        assert_eq!(
            parse_date("Tue, 09 Feb 2106 23:59:45 +0000"),
            Some(utc("2106-02-09T23:59:45Z"))
        );
        // Military zones are read as UTC (RFC 2822 §4.3).
        assert_eq!(parse_date("Thu, 09 Feb 2006 16:59:45 G"), Some(utc("2006-02-09T16:59:45Z")));
        assert_eq!(
            parse_date("Sat, 31 Dec 2016 23:59:60 +0000"),
            Some(utc("2016-12-31T23:59:59Z"))
        );
        assert_eq!(parse_date("Mon, 01 Jan 0001 00:00:00 +0000"), Some(-62135596800));
        assert_eq!(
            parse_date("Fri, 31 Dec 9999 23:59:59 +0000"),
            Some(utc("9999-12-31T23:59:59Z"))
        );
        assert_eq!(
            parse_date("Sat, 03 Jun 2017 15:15:44 -0500"),
            Some(utc("2017-06-03T20:15:44Z"))
        );
        assert_eq!(parse_date("Tue, 02 Mar 2021 12:00:00 IST"), Some(utc("2021-03-02T06:30:00Z")));
    }

    #[test]
    fn iso8601_variants() {
        assert_eq!(parse_date("2006-02-09T23:59:45Z"), Some(utc(T)));
        assert_eq!(parse_date("2006-02-09t23:59:45z"), Some(utc(T)));
        assert_eq!(parse_date("2006-02-09T23:59:45"), Some(utc(T)));
        assert_eq!(parse_date("2006-02-09 23:59:45"), Some(utc(T)));
        assert_eq!(parse_date("2006-02-09T23:59:45.123+01:00"), Some(utc("2006-02-09T22:59:45Z")));
        assert_eq!(parse_date("2006-02-09T23:59:45+0100"), Some(utc("2006-02-09T22:59:45Z")));
        assert_eq!(parse_date("2006-02-09T23:59:45-05"), Some(utc("2006-02-10T04:59:45Z")));
        assert_eq!(parse_date("2006-02-09T23:59+01:00"), Some(utc("2006-02-09T22:59:00Z")));
        assert_eq!(parse_date("2006-02-09 23:59:45 UTC"), Some(utc(T)));
        assert_eq!(parse_date("2006-02-09 23:59:45 +0000"), Some(utc(T)));
        assert_eq!(parse_date("2006-02-09"), Some(utc("2006-02-09T00:00:00Z")));
        assert_eq!(parse_date("  2020-08-07T11:44:36-05:00 "), Some(utc("2020-08-07T16:44:36Z")));
    }

    #[test]
    fn invalid_dates() {
        for s in [
            "",
            "   ",
            "yesterday",
            "1139529585",
            "2006-13-09T23:59:45Z",
            "2006-02-30",
            "Sat, 31 Jun 2006 23:08:26 +1000",
            "Τρι, 29 Ιούν 2004 12:53:00 GMT",
            "Thu, 09 Feb 2006 25:59:45 +0000",
            "Thu, 09 Feb 2006 23:61:45 +0000",
            "Thu, 09 Foo 2006 23:59:45 +0000",
            "Thu, 09 Feb 2006 23:59:45 +9999",
            "09 10 11 Feb",
            "2006-02-09T23:59:45 nonsense",
            "Feb 2006",
            "Mon, 01 Jan 10000 00:00:00 +0000",
        ] {
            assert_eq!(parse_date(s), None, "{s:?}");
        }
        let long = "Thu, 09 Feb 2006 23:59:45 +0000 ".repeat(100);
        assert_eq!(parse_date(&long), None);
    }
}
