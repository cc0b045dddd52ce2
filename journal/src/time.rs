//! Wall-clock times (UTC milliseconds since the Unix epoch) for people: formatting and
//! parsing without a date library.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2024-05-01 10:31:07.214`, UTC.
pub fn format_utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// `10:31:07.214`, UTC.
pub fn format_utc_time(ms: u64) -> String {
    format_utc(ms)[11..].to_string()
}

/// The UTC midnight at or before `ms`.
pub fn day_start(ms: u64) -> u64 {
    ms - ms % 86_400_000
}

/// Parses `HH:MM:SS[.fff]` (on the day of `reference`), `YYYY-MM-DD[T ]HH:MM:SS[.fff][Z]`
/// or a number of milliseconds since the epoch.
pub fn parse_utc(text: &str, reference: u64) -> Option<u64> {
    let t = text.trim().trim_end_matches('Z').trim_end_matches(" UTC");
    if !t.is_empty() && t.len() > 10 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let (date, time) = match t.find(['T', ' ']) {
        Some(i) => (Some(&t[..i]), &t[i + 1..]),
        None => (None, t),
    };
    let day = match date {
        None => day_start(reference),
        Some(d) => {
            let mut it = d.split('-');
            let y: i64 = it.next()?.parse().ok()?;
            let m: u32 = it.next()?.parse().ok()?;
            let dd: u32 = it.next()?.parse().ok()?;
            if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
                return None;
            }
            u64::try_from(days_from_civil(y, m, dd)).ok()? * 86_400_000
        }
    };
    let mut it = time.split(':');
    let h: u64 = it.next()?.parse().ok()?;
    let mi: u64 = it.next()?.parse().ok()?;
    let sec = it.next().unwrap_or("0");
    if it.next().is_some() || h > 23 || mi > 59 {
        return None;
    }
    let (s, frac) = match sec.split_once('.') {
        Some((s, f)) => (s, f),
        None => (sec, ""),
    };
    let s: u64 = s.parse().ok()?;
    if s > 60 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ms_text = frac.to_string();
    ms_text.truncate(3);
    while ms_text.len() < 3 {
        ms_text.push('0');
    }
    let ms: u64 = ms_text.parse().ok()?;
    Some(day + h * 3_600_000 + mi * 60_000 + s * 1000 + ms)
}

/// A duration for people: `2.104 s`, `850 ms`, `3 min 4 s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{} s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{} min {} s", ms / 60_000, ms / 1000 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting_and_parsing_round_trip() {
        let ms = 1_714_559_467_214; // 2024-05-01 10:31:07.214
        assert_eq!(format_utc(ms), "2024-05-01 10:31:07.214");
        assert_eq!(parse_utc("2024-05-01T10:31:07.214Z", 0), Some(ms));
        assert_eq!(parse_utc("10:31:07.214", ms), Some(ms));
        assert_eq!(parse_utc("10:31:07.2", ms), Some(ms - 14));
        assert_eq!(parse_utc("25:00:00", ms), None);
        assert_eq!(parse_utc("nonsense", ms), None);
        assert_eq!(format_utc(0), "1970-01-01 00:00:00.000");
    }
}
