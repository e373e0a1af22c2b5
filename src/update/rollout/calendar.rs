//! The calendar of rollouts: RFC 3339 times as the feed writes them, and
//! maintenance windows (`MOLTD_WINDOW`), in UTC and Unix seconds, with no
//! time-zone database: a node's window must not depend on its image.

/// `YYYY-MM-DDTHH:MM:SS` with `Z` or a `±HH:MM` offset (fractions of a
/// second are dropped), as Unix time.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't') || bytes[16] != b':' {
        return None;
    }
    let num = |range| num_in(text, range);
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let (h, m) = (num_in(rest, 1..3)?, num_in(rest, 4..6)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()
}

fn num_in(text: &str, range: std::ops::Range<usize>) -> Option<i64> {
    let part = text.get(range)?;
    part.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| part.parse().ok())?
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`super::status::rfc3339`]'s conversion).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A maintenance window: from `start` minutes after midnight UTC on each
/// of `days` (0 is Monday), for `length` minutes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub days: Vec<u8>,
    pub start: u32,
    pub length: u32,
}

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const WEEK: u64 = 7 * 86_400;

/// `Mon` or `Monday`, in any case; 0 is Monday.
fn day(name: &str) -> Option<u8> {
    let name = name.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == name || (name.len() == 3 && d.starts_with(&name)))
        .map(|i| i as u8)
}

/// `MOLTD_WINDOW`: windows separated by `;`, each `DAYS HH:MM LENGTH`, as
/// Fedora CoreOS's periodic strategy states them (days, a start time in
/// UTC, a length): `Sat,Sun 22:30 1h; Mon-Fri 03:00 30m`. DAYS is a comma
/// list of days and ranges (`Mon-Fri`) or `*` for every day; LENGTH is
/// a duration of at least a minute and at most a week.
pub fn parse_windows(text: &str) -> Result<Vec<Window>, String> {
    let mut windows = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = part.split_whitespace().collect();
        let [days, time, length] = words.as_slice() else {
            return Err(format!("{part:?} is not DAYS HH:MM LENGTH"));
        };
        let mut set = Vec::new();
        for item in days.split(',') {
            let range = match item.split_once('-') {
                _ if item == "*" => Some((0, 6)),
                Some((a, b)) => day(a).zip(day(b)),
                None => day(item).map(|d| (d, d)),
            };
            let (a, b) = range.ok_or_else(|| format!("{item:?} is not a day such as Mon"))?;
            let mut d = a;
            loop {
                if !set.contains(&d) {
                    set.push(d);
                }
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        let start = time
            .split_once(':')
            .filter(|(h, m)| h.len() == 2 && m.len() == 2)
            .and_then(|(h, m)| Some((num_in(h, 0..2)?, num_in(m, 0..2)?)))
            .filter(|(h, m)| *h < 24 && *m < 60)
            .map(|(h, m)| (h * 60 + m) as u32)
            .ok_or_else(|| format!("{time:?} is not a time such as 22:30"))?;
        let length = crate::update::config::parse_duration(length)
            .map(|d| d.as_secs() / 60)
            .filter(|m| (1..=7 * 24 * 60).contains(m))
            .ok_or_else(|| format!("{length:?} is not a length from 1m to 168h"))?;
        windows.push(Window {
            days: set,
            start,
            length: length as u32,
        });
    }
    if windows.is_empty() {
        return Err("no window".into());
    }
    Ok(windows)
}

/// The first Unix time at or after `now` inside one of `windows`.
pub fn next_open(windows: &[Window], now: u64) -> u64 {
    // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
    let in_week = (now + 3 * 86_400) % WEEK;
    let mut best = u64::MAX;
    for window in windows {
        for &d in &window.days {
            let begin = u64::from(d) * 86_400 + u64::from(window.start) * 60;
            let since = (in_week + WEEK - begin) % WEEK;
            if since < u64::from(window.length) * 60 {
                return now;
            }
            best = best.min((begin + WEEK - in_week) % WEEK);
        }
    }
    now + best
}
