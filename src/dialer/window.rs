//! Calling windows: when a campaign may dial, in the campaign's time zone. The format is the
//! one seed 000's 日程 (schedule) uses (L2310-2338): `weekPeriods` "1|2|3|4|5|6|0" (0 is
//! Sunday), `timePeriods` "09:00-12:00|13:30-21:00", and an optional date range
//! `startDate`/`endDate` "yyyy-MM-dd HH:mm:ss". Sans-IO: every question takes `now_ms`.
//!
//! A period's end is inclusive to the minute ("00:00-23:59" covers the whole day, as the
//! seed's example intends); a period that ends before it starts ("21:00-02:00") runs past
//! midnight into the next day, and belongs to the day it starts on.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::agents::counters::DayClock;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("weekPeriods: {0}")]
    Week(String),
    #[error("timePeriods: {0}")]
    Time(String),
    #[error("{0}: not a date-time of the form yyyy-MM-dd HH:mm:ss")]
    Date(&'static str),
    #[error("startDate is after endDate")]
    Range,
    #[error("unknown time zone {0:?}")]
    Zone(String),
}

/// A daily period, minutes after local midnight; `end` inclusive and possibly past 1440 for
/// periods that cross midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Period {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallingWindow {
    tz: TimeZone,
    /// Index 0 is Sunday, as in the seed.
    days: [bool; 7],
    periods: Vec<Period>,
    from_ms: Option<u64>,
    until_ms: Option<u64>,
}

/// Most periods one window may hold.
const MAX_PERIODS: usize = 48;

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn parse_datetime(s: &str, tz: &TimeZone, name: &'static str) -> Result<u64, WindowError> {
    let dt: DateTime = s.trim().parse().map_err(|_| WindowError::Date(name))?;
    let ts = dt
        .to_zoned(tz.clone())
        .map_err(|_| WindowError::Date(name))?;
    u64::try_from(ts.timestamp().as_millisecond()).map_err(|_| WindowError::Date(name))
}

impl CallingWindow {
    /// Parses the seed's strings. `start`/`end` are optional (no bound).
    pub fn parse(
        zone: &str,
        week_periods: &str,
        time_periods: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<CallingWindow, WindowError> {
        let tz = DayClock::new(zone)
            .map_err(|_| WindowError::Zone(zone.to_owned()))?
            .time_zone()
            .clone();
        let mut days = [false; 7];
        for d in week_periods.split('|') {
            let n: usize =
                d.trim().parse().ok().filter(|n| *n < 7).ok_or_else(|| {
                    WindowError::Week(format!("{d:?} is not a day 0-6 (0 = Sunday)"))
                })?;
            days[n] = true;
        }
        let mut periods = Vec::new();
        for p in time_periods.split('|') {
            let (a, b) = p
                .split_once('-')
                .ok_or_else(|| WindowError::Time(format!("{p:?} is not HH:MM-HH:MM")))?;
            let (Some(start), Some(end)) = (parse_hhmm(a), parse_hhmm(b)) else {
                return Err(WindowError::Time(format!("{p:?} is not HH:MM-HH:MM")));
            };
            if start == end {
                return Err(WindowError::Time(format!("{p:?} is empty")));
            }
            let end = if end < start { end + 1440 } else { end };
            periods.push(Period { start, end });
            if periods.len() > MAX_PERIODS {
                return Err(WindowError::Time(format!("at most {MAX_PERIODS} periods")));
            }
        }
        let from_ms = start
            .map(|s| parse_datetime(s, &tz, "startDate"))
            .transpose()?;
        let until_ms = end.map(|s| parse_datetime(s, &tz, "endDate")).transpose()?;
        if let (Some(a), Some(b)) = (from_ms, until_ms) {
            if a > b {
                return Err(WindowError::Range);
            }
        }
        Ok(CallingWindow {
            tz,
            days,
            periods,
            from_ms,
            until_ms,
        })
    }

    fn local(&self, now_ms: u64) -> Option<DateTime> {
        let ts = Timestamp::from_millisecond(i64::try_from(now_ms).ok()?).ok()?;
        Some(ts.to_zoned(self.tz.clone()).datetime())
    }

    /// Whether dialing is allowed at `now_ms`.
    pub fn allows(&self, now_ms: u64) -> bool {
        if self.from_ms.is_some_and(|f| now_ms < f) || self.until_ms.is_some_and(|u| now_ms > u) {
            return false;
        }
        let Some(local) = self.local(now_ms) else {
            return false;
        };
        let minute = local.hour() as u32 * 60 + local.minute() as u32;
        let today = local.date().weekday().to_sunday_zero_offset() as usize;
        let yesterday = (today + 6) % 7;
        self.periods.iter().any(|p| {
            // Today's periods, and yesterday's that run past midnight.
            (self.days[today] && minute >= p.start && minute <= p.end)
                || (self.days[yesterday] && p.end >= 1440 && minute + 1440 <= p.end)
        })
    }

    /// The first instant at or after `now_ms` when dialing is allowed, searching up to 8
    /// days ahead (a window that never opens gives `None`). Minute resolution.
    pub fn next_open(&self, now_ms: u64) -> Option<u64> {
        if self.allows(now_ms) {
            return Some(now_ms);
        }
        let start = self.from_ms.map_or(now_ms, |f| f.max(now_ms));
        if self.allows(start) {
            return Some(start);
        }
        // Candidates: every period start on each of the next 8 local days.
        let local = self.local(start)?;
        let mut best: Option<u64> = None;
        for offset in 0..9i32 {
            let date: Date = local
                .date()
                .checked_add(jiff::Span::new().days(offset))
                .ok()?;
            for p in &self.periods {
                let t = Time::new((p.start / 60) as i8, (p.start % 60) as i8, 0, 0).ok()?;
                let Ok(z) = date.to_datetime(t).to_zoned(self.tz.clone()) else {
                    continue;
                };
                let Ok(ms) = u64::try_from(z.timestamp().as_millisecond()) else {
                    continue;
                };
                if ms >= start && self.allows(ms) && best.is_none_or(|b| ms < b) {
                    best = Some(ms);
                }
            }
            if best.is_some() {
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a local date-time in `zone`.
    fn at(zone: &str, s: &str) -> u64 {
        let tz = DayClock::new(zone).unwrap().time_zone().clone();
        parse_datetime(s, &tz, "t").unwrap()
    }

    #[test]
    fn the_seeds_example_allows_every_minute_of_the_week() {
        let w = CallingWindow::parse("Asia/Shanghai", "1|2|3|4|5|6|0", "00:00-23:59", None, None)
            .unwrap();
        for s in [
            "2026-11-21 00:00:00",
            "2026-11-22 23:59:30",
            "2026-11-23 12:00:00",
        ] {
            assert!(w.allows(at("Asia/Shanghai", s)), "{s}");
        }
    }

    #[test]
    fn weekdays_and_periods_in_the_campaigns_zone() {
        // Mon-Fri 09:00-12:00 and 13:30-21:06 (seed example's end time), Shanghai.
        let w = CallingWindow::parse(
            "Asia/Shanghai",
            "1|2|3|4|5",
            "09:00-12:00|13:30-21:06",
            None,
            None,
        )
        .unwrap();
        let z = "Asia/Shanghai";
        // 2026-11-23 is a Monday.
        assert!(w.allows(at(z, "2026-11-23 09:00:00")));
        assert!(
            w.allows(at(z, "2026-11-23 12:00:59")),
            "end minute inclusive"
        );
        assert!(!w.allows(at(z, "2026-11-23 12:01:00")));
        assert!(!w.allows(at(z, "2026-11-23 08:59:59")));
        assert!(w.allows(at(z, "2026-11-23 21:06:00")));
        assert!(!w.allows(at(z, "2026-11-23 21:07:00")));
        assert!(!w.allows(at(z, "2026-11-22 10:00:00")), "Sunday");
        // Judged in the campaign's zone whatever the server's: 04:10 UTC is 12:10 there.
        assert!(!w.allows(at("UTC", "2026-11-23 04:10:00")));
        assert!(w.allows(at("UTC", "2026-11-23 01:00:00")));
        // Next opening from Saturday evening: Monday 09:00.
        assert_eq!(
            w.next_open(at(z, "2026-11-21 20:00:00")),
            Some(at(z, "2026-11-23 09:00:00"))
        );
        assert_eq!(
            w.next_open(at(z, "2026-11-23 12:30:00")),
            Some(at(z, "2026-11-23 13:30:00"))
        );
        let inside = at(z, "2026-11-23 10:00:00");
        assert_eq!(w.next_open(inside), Some(inside));
    }

    #[test]
    fn periods_past_midnight_belong_to_the_day_they_start() {
        let w = CallingWindow::parse("UTC", "5", "21:00-02:00", None, None).unwrap();
        // 2026-11-27 is a Friday.
        assert!(w.allows(at("UTC", "2026-11-27 22:00:00")));
        assert!(
            w.allows(at("UTC", "2026-11-28 01:30:00")),
            "Saturday early is Friday's"
        );
        assert!(!w.allows(at("UTC", "2026-11-28 02:01:00")));
        assert!(
            !w.allows(at("UTC", "2026-11-28 22:00:00")),
            "Saturday evening"
        );
    }

    #[test]
    fn daylight_saving_changes_keep_local_hours() {
        let z = "America/New_York";
        let w = CallingWindow::parse(z, "0|1|2|3|4|5|6", "08:00-21:00", None, None).unwrap();
        // 2026-03-08: clocks jump 02:00 -> 03:00; 08:00 local is still the opening.
        assert!(w.allows(at(z, "2026-03-08 08:00:00")));
        assert!(!w.allows(at(z, "2026-03-08 07:59:00")));
        assert!(w.allows(at(z, "2026-11-01 20:59:00")));
        assert!(!w.allows(at(z, "2026-11-01 21:01:00")));
    }

    #[test]
    fn the_date_range_bounds_everything() {
        let z = "Asia/Shanghai";
        let w = CallingWindow::parse(
            z,
            "0|1|2|3|4|5|6",
            "00:00-23:59",
            Some("2026-12-01 09:00:00"),
            Some("2026-12-31 18:00:00"),
        )
        .unwrap();
        assert!(!w.allows(at(z, "2026-11-30 12:00:00")));
        assert!(w.allows(at(z, "2026-12-01 09:00:00")));
        assert!(!w.allows(at(z, "2026-12-31 18:00:01")));
        assert_eq!(
            w.next_open(at(z, "2026-11-20 00:00:00")),
            Some(at(z, "2026-12-01 09:00:00"))
        );
        assert_eq!(w.next_open(at(z, "2027-01-02 00:00:00")), None);
    }

    #[test]
    fn bad_strings_are_refused_by_name() {
        let p = |w: &str, t: &str| CallingWindow::parse("UTC", w, t, None, None);
        assert!(matches!(p("1|7", "09:00-10:00"), Err(WindowError::Week(_))));
        assert!(matches!(p("", "09:00-10:00"), Err(WindowError::Week(_))));
        assert!(matches!(p("x", "09:00-10:00"), Err(WindowError::Week(_))));
        for t in [
            "9:00-10:00",
            "09:00",
            "24:00-25:00",
            "09:60-10:00",
            "09:00-09:00",
            "",
            "a-b",
        ] {
            assert!(matches!(p("1", t), Err(WindowError::Time(_))), "{t}");
        }
        let many = vec!["09:00-09:01"; 49].join("|");
        assert!(matches!(p("1", &many), Err(WindowError::Time(_))));
        assert!(matches!(
            CallingWindow::parse("Mars/Base", "1", "09:00-10:00", None, None),
            Err(WindowError::Zone(_))
        ));
        assert!(matches!(
            CallingWindow::parse("UTC", "1", "09:00-10:00", Some("2026-13-01 00:00:00"), None),
            Err(WindowError::Date("startDate"))
        ));
        assert_eq!(
            CallingWindow::parse(
                "UTC",
                "1",
                "09:00-10:00",
                Some("2026-12-02 00:00:00"),
                Some("2026-12-01 00:00:00")
            ),
            Err(WindowError::Range)
        );
    }

    proptest::proptest! {
        /// next_open never returns an instant before `now` or one the window refuses.
        #[test]
        fn next_open_is_consistent(
            days in proptest::collection::vec(0usize..7, 1..7),
            a in 0u32..1440, len in 1u32..1439, now in 1_700_000_000_000u64..1_900_000_000_000,
        ) {
            let week = days.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("|");
            let b = (a + len) % 1440;
            let t = format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60);
            let w = CallingWindow::parse("Europe/London", &week, &t, None, None).unwrap();
            if let Some(open) = w.next_open(now) {
                proptest::prop_assert!(open >= now);
                proptest::prop_assert!(w.allows(open));
            }
        }
    }
}
