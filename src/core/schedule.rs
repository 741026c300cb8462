//! The timing decisions of a `VolumeSnapshotSchedule`: which instants its
//! cron expression names in its time zone, whether a run is due now, and
//! what the snapshot of a run is called.
//!
//! Pure: no clock reads (`now` is passed in), no I/O after parsing.
//! [`CronSchedule::parse`] looks the time zone up in the tz database once
//! (the system's `/usr/share/zoneinfo`, else the copy compiled into volsnap,
//! so that slim images without `tzdata` still know `Europe/Berlin`).
//!
//! # The expression
//!
//! Standard 5-field cron, as cronie (Vixie cron) reads it: `minute hour
//! day-of-month month day-of-week`, each field `*`, a number, a range `a-b`,
//! a step `*/n` or `a-b/n`, or a comma-separated list of those. Months and
//! weekdays may be given by their three-letter English names in any case
//! (`JAN`..`DEC`, `SUN`..`SAT`); day-of-week 0 and 7 are both Sunday, and a
//! weekday range may end on Sunday (`FRI-SUN`), as cronie allows. The
//! extensions of other dialects (`@daily`, `L`, `W`, `#`, `?`, a seconds or
//! years field) are refused with a message rather than read in a way the
//! writer may not have meant, and so is `5/15` (Kubernetes reads it as
//! `5-59/15`, cronie refuses it): the error says what to write instead.
//! Expressions that can never run (`0 0 30 2 *`) are refused at parse time,
//! so an accepted schedule always has a next run.
//!
//! **Day matching.** When both day-of-month and day-of-week are restricted, a
//! day matches if *either* does (`0 0 13 * FRI` runs on every 13th and on
//! every Friday), as POSIX and Vixie cron define it. A field counts as
//! unrestricted only when it is `*` (or `*/1`); `*/2` is a restriction.
//! Kubernetes CronJob (robfig/cron) reads it the same way; Vixie cron treats
//! any field starting with `*` as unrestricted, a quirk not copied here.
//!
//! The calendar search itself is croner's, run on civil (wall-clock) times;
//! this module parses the fields itself first, for messages that name the
//! field and value, and hands croner a plain numeric expression.
//!
//! # Time zones and daylight saving time
//!
//! The expression names wall-clock times in the schedule's zone (UTC by
//! default). Each wall-clock time it names becomes **at most one run**:
//!
//! - a time that does not exist (the spring-forward gap, e.g. 02:30 in
//!   `Europe/Berlin` on the last Sunday of March) runs at the first instant
//!   after the gap (03:00 CEST), and all the times a gap swallows collapse
//!   into that one run. This is what cronie does for jobs at a fixed time: a
//!   nightly snapshot is not silently skipped once a year (Kubernetes
//!   CronJob, through robfig/cron, skips it). It is the same rule as for
//!   missed runs below: the gap is an hour the clock was "down";
//! - a time that occurs twice (fall back) runs once, at its first
//!   occurrence: a nightly 02:30 snapshot is not taken twice (Kubernetes
//!   CronJob takes it twice, kubernetes/kubernetes#121594).
//!
//! Unlike cronie, the rule is the same for schedules that repeat within the
//! day: an hourly `30 * * * *` in Berlin runs at 03:00 and 03:30 CEST on the
//! spring-forward day, and skips the repeated 02:30 CET on the fall-back
//! day. One rule for every expression is easier to predict than cronie's
//! split between "fixed-time" and "wildcard" jobs, and an extra or a missing
//! snapshot within one hour a year costs nothing under retention.
//!
//! # Missed runs and clocks
//!
//! [`CronSchedule::due`] decides, from the last run and `now`, whether to run
//! now: runs missed while volsnap was down collapse into one run, for the
//! most recent missed slot (SPEC: "runs once at start-up, not once per
//! missed slot"). A slot is never run twice, even if the clock goes back.
//!
//! # Names
//!
//! [`snapshot_name`] is `<schedule>-<yyyymmddhhmmss>` of the slot in UTC.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

/// Why an expression or time zone was refused. The messages name the field
/// and the value and, where it helps, what to write instead; the caller adds
/// the path (`spec.schedule`, `spec.timeZone`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression does not have exactly five fields.
    #[error("must have 5 fields (minute hour day-of-month month day-of-week), found {found} in {expression:?}")]
    FieldCount {
        /// The expression as written.
        expression: String,
        /// How many whitespace-separated fields it has.
        found: usize,
    },
    /// One field is malformed or out of range.
    #[error("{field} field {value:?}: {problem}")]
    Field {
        /// `minute`, `hour`, `day-of-month`, `month` or `day-of-week`.
        field: &'static str,
        /// The field as written.
        value: String,
        /// What is wrong, and what to write instead where that is clear.
        problem: String,
    },
    /// A nickname such as `@daily`.
    #[error(
        "{expression:?}: nicknames such as @daily are not supported; write the 5 fields \
         (@hourly \"0 * * * *\", @daily \"0 0 * * *\", @weekly \"0 0 * * 0\", \
         @monthly \"0 0 1 * *\", @yearly \"0 0 1 1 *\")"
    )]
    Nickname {
        /// The expression as written.
        expression: String,
    },
    /// Every field is valid but no date matches them all.
    #[error("{expression:?} never runs: {reason}")]
    NeverRuns {
        /// The expression as written.
        expression: String,
        /// Which fields exclude each other.
        reason: String,
    },
    /// The cron library refused an expression these checks passed; not
    /// expected, kept so that such an expression is an error, not a panic.
    #[error("{expression:?} is not a supported cron expression: {reason}")]
    Rejected {
        /// The expression as written.
        expression: String,
        /// The library's message.
        reason: String,
    },
    /// The time zone is not in the tz database.
    #[error("unknown IANA time zone {name:?}: use a tz database name such as \"Europe/Berlin\" or \"UTC\"")]
    TimeZone {
        /// The name as written.
        name: String,
    },
}

impl ScheduleError {
    /// Whether the time zone, not the expression, was refused (so that
    /// validation can name `timeZone` rather than `schedule`).
    pub fn is_time_zone(&self) -> bool {
        matches!(self, ScheduleError::TimeZone { .. })
    }
}

/// A parsed schedule: a cron expression read in a time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    expression: String,
    cron: Cron,
    zone: TimeZone,
    zone_name: String,
}

/// What [`CronSchedule::due`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Take a snapshot now, for `slot`: the most recent slot after the last
    /// run, however many were missed before it.
    RunNow {
        /// The slot this run stands for: record it as the last run and name
        /// the snapshot after it ([`snapshot_name`]).
        slot: Timestamp,
        /// The slot after it (the next `nextScheduleTime`); `None` only past
        /// the end of the calendar the search covers.
        next: Option<Timestamp>,
    },
    /// Nothing is due; look again at this instant.
    WaitUntil(Timestamp),
    /// No slot remains before the end of the calendar the search covers
    /// (year 5000). Parsing refuses expressions that never run, so this is
    /// only reached by times in the far future.
    Never,
}

/// The fields of an expression, in order.
const FIELDS: [Field; 5] = [
    Field { name: "minute", min: 0, max: 59, names: &[], first_name: 0 },
    Field { name: "hour", min: 0, max: 23, names: &[], first_name: 0 },
    Field { name: "day-of-month", min: 1, max: 31, names: &[], first_name: 0 },
    Field { name: "month", min: 1, max: 12, names: &MONTHS, first_name: 1 },
    Field { name: "day-of-week", min: 0, max: 7, names: &WEEKDAYS, first_name: 0 },
];

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const DAY_OF_MONTH: usize = 2;
const MONTH: usize = 3;
const DAY_OF_WEEK: usize = 4;

/// One field's bounds and names.
#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    first_name: u32,
}

/// A field after checking: the numeric text handed to croner and the set of
/// values it matches (bit `v` for value `v`).
struct Parsed {
    text: String,
    values: u64,
}

impl CronSchedule {
    /// Parses `expr` (5-field cron) read in the IANA zone `tz` (UTC when
    /// `None`).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<CronSchedule, ScheduleError> {
        if expr.trim_start().starts_with('@') {
            return Err(ScheduleError::Nickname { expression: expr.into() });
        }
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != FIELDS.len() {
            return Err(ScheduleError::FieldCount { expression: expr.into(), found: fields.len() });
        }
        let mut parsed = Vec::with_capacity(FIELDS.len());
        for (text, field) in fields.iter().zip(&FIELDS) {
            parsed.push(parse_field(field, text)?);
        }
        never_runs(expr, &fields, &parsed)?;

        let numeric: Vec<&str> = parsed.iter().map(|p| p.text.as_str()).collect();
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&numeric.join(" "))
            .map_err(|e| ScheduleError::Rejected { expression: expr.into(), reason: e.to_string() })?;

        let (zone, zone_name) = match tz {
            None => (TimeZone::UTC, "UTC".to_string()),
            Some(name) => {
                let zone = TimeZone::get(name).map_err(|_| ScheduleError::TimeZone { name: name.into() })?;
                (zone, name.to_string())
            }
        };
        Ok(CronSchedule { expression: expr.into(), cron, zone, zone_name })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The time zone's name as written (`UTC` when none was given).
    pub fn time_zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The first run strictly after `t`, or `None` past the end of the
    /// calendar the search covers (year 5000).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // Walk the wall-clock slots from `t`'s wall-clock time. Slots whose
        // run is not after `t` are skipped: on a fall-back day, `t` in the
        // repeated hour reads a wall-clock time whose first occurrence (the
        // only one that runs) is already past.
        let mut cursor = self.zone.to_datetime(t);
        loop {
            let slot = self.cron.find_next_occurrence(&cursor, false).ok()?;
            let run = self.run_of(slot)?;
            if run > t {
                return Some(run);
            }
            cursor = slot;
        }
    }

    /// The latest run at or before `t`, or `None` if there is none in the
    /// calendar the search covers (year 1 onwards).
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        // The slot at or before `t`'s wall-clock time runs at or before `t`
        // (runs follow wall-clock order), but when `t` is in the repeated hour
        // of a fall-back day, later slots of that hour ran during its first
        // pass: step forward over them.
        let slot = self.cron.find_previous_occurrence(&self.zone.to_datetime(t), true).ok()?;
        let mut latest = self.run_of(slot)?;
        while let Some(next) = self.next_after(latest).filter(|n| *n <= t) {
            latest = next;
        }
        Some(latest)
    }

    /// Whether a snapshot is due at `now`.
    ///
    /// `last_run` is the slot of the last run (`status.lastScheduleTime`),
    /// `None` before the first; `created` is when the schedule was created,
    /// so that slots before it are not owed. The slots owed are those in
    /// `(last_run or created, now]`: if there are any, the most recent one
    /// runs now and the others are dropped (a daemon that was down takes one
    /// snapshot at start-up, not one per missed slot; the `next` it reports
    /// is after `now`). Otherwise the answer is the next slot.
    ///
    /// **Clock going backwards.** A `last_run` after `now` means the clock
    /// was set back after that run (or was ahead when it ran). Nothing runs,
    /// and the wait is until the first slot after `last_run`, not after
    /// `now`: slots up to `last_run` were taken, and taking one again would
    /// give a second snapshot of the same name. For an NTP step of seconds
    /// this is simply the next slot; a clock that was far ahead when it ran
    /// holds the schedule until that time, which the caller can tell (and
    /// report) by `last_run > now`.
    pub fn due(&self, last_run: Option<Timestamp>, created: Timestamp, now: Timestamp) -> Due {
        let since = last_run.unwrap_or(created);
        match self.latest_at_or_before(now) {
            Some(slot) if slot > since => Due::RunNow { slot, next: self.next_after(now) },
            _ => match self.next_after(since.max(now)) {
                Some(next) => Due::WaitUntil(next),
                None => Due::Never,
            },
        }
    }

    /// The instant a wall-clock slot runs at: the slot itself; its first
    /// occurrence if the clock shows it twice; the first instant after the
    /// gap if the clock skips it. `None` outside the supported range.
    fn run_of(&self, slot: DateTime) -> Option<Timestamp> {
        let ambiguous = self.zone.to_ambiguous_timestamp(slot);
        match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(slot).ok(),
            // The earlier occurrence is the one read with the offset in force
            // before the clock went back.
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(slot).ok(),
            // Read with the offset after the change, the slot is an instant
            // before the gap began; the first transition after that instant
            // is the end of the gap.
            AmbiguousOffset::Gap { after, .. } => {
                let before_gap = after.to_timestamp(slot).ok()?;
                self.zone.following(before_gap).next().map(|transition| transition.timestamp())
            }
        }
    }
}

/// The name of the snapshot a schedule takes for `slot`:
/// `<schedule>-<yyyymmddhhmmss>`, the slot in UTC.
///
/// UTC rather than the schedule's zone: the names then sort in the order the
/// snapshots were taken, across DST changes and edits of `timeZone`, and two
/// slots never share a name (in local time, the hour repeated on a fall-back
/// day reads the same twice).
pub fn snapshot_name(schedule_name: &str, slot: Timestamp) -> String {
    format!("{schedule_name}-{}", slot.strftime("%Y%m%d%H%M%S"))
}

/// Checks one field and turns names into numbers.
fn parse_field(field: &Field, text: &str) -> Result<Parsed, ScheduleError> {
    let error = |problem: String| ScheduleError::Field { field: field.name, value: text.into(), problem };
    let mut items = Vec::new();
    let mut values = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(error("empty list entry (a comma at either end, or two in a row)".into()));
        }
        if item.contains(['#', '?']) {
            return Err(error(extension(item)));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step = match step {
            None => 1,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=field.max).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(error(format!("step {s:?} must be a whole number from 1 to {}", field.max))),
            },
        };
        let (lo, hi, text) = if range == "*" {
            (field.min, field.max, "*".to_string())
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = value(field, a).map_err(&error)?;
            let mut hi = value(field, b).map_err(&error)?;
            // cronie: a weekday range may end on Sunday written as 0 or SUN.
            if field.name == FIELDS[DAY_OF_WEEK].name && hi == 0 && lo > 0 {
                hi = 7;
            }
            if lo > hi {
                return Err(error(format!(
                    "range {range:?} runs backwards ({lo} is after {hi}); write it as two ranges, e.g. \"{lo}-{},{}-{hi}\"",
                    field.max, field.min
                )));
            }
            (lo, hi, format!("{lo}-{hi}"))
        } else {
            let v = value(field, range).map_err(&error)?;
            if step != 1 {
                return Err(error(format!(
                    "a step needs a range: write \"{v}-{}/{step}\" for every {step} from {v}, or \"*/{step}\"",
                    field.max
                )));
            }
            (v, v, v.to_string())
        };
        for v in (lo..=hi).step_by(step as usize) {
            // Day-of-week 7 is Sunday.
            let v = if field.name == FIELDS[DAY_OF_WEEK].name { v % 7 } else { v };
            values |= 1 << v;
        }
        // `*/1` is `*`: it must stay unrestricted for day matching.
        items.push(if step == 1 { text } else { format!("{text}/{step}") });
    }
    Ok(Parsed { text: items.join(","), values })
}

/// A single value: a number in range or, in the month and day-of-week
/// fields, a three-letter name.
fn value(field: &Field, s: &str) -> Result<u32, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{s} is outside {}-{}{}",
                field.min,
                field.max,
                if field.max == 7 { " (0 and 7 are Sunday)" } else { "" }
            )),
        };
    }
    let upper = s.to_ascii_uppercase();
    if let Some(i) = field.names.iter().position(|n| *n == upper) {
        return Ok(field.first_name + i as u32);
    }
    let looks_like_extension =
        !upper.is_empty() && upper.trim_start_matches(|c: char| c.is_ascii_digit()).bytes().all(|b| b"LW".contains(&b));
    if looks_like_extension {
        return Err(extension(s));
    }
    // A name in a numeric field usually means a field is missing before it.
    let hint = FIELDS
        .iter()
        .find(|f| f.names.contains(&upper.as_str()))
        .map(|f| format!(" ({s} is a {} name: is a field missing or out of order?)", f.name))
        .unwrap_or_default();
    Err(match (field.names.first(), field.names.last()) {
        (Some(first), Some(last)) => {
            format!("{s:?} is neither a number from {} to {} nor a name {first}-{last}", field.min, field.max)
        }
        _ => format!("{s:?} is not a number from {} to {}{hint}", field.min, field.max),
    })
}

/// The message for a construct of another cron dialect.
fn extension(item: &str) -> String {
    format!("{item:?} uses L, W, # or ?, which other cron dialects define; volsnap reads standard 5-field cron")
}

/// Refuses expressions no date satisfies: a day-of-month that none of the
/// months has, with day-of-week unrestricted (a restricted day-of-week
/// matches some day of every month, and either field is then enough).
fn never_runs(expr: &str, fields: &[&str], parsed: &[Parsed]) -> Result<(), ScheduleError> {
    if parsed[DAY_OF_WEEK].text != "*" || parsed[DAY_OF_MONTH].text == "*" {
        return Ok(());
    }
    let longest = |month: u32| match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let possible = (1..=12u32)
        .filter(|m| parsed[MONTH].values & (1 << m) != 0)
        .any(|m| (1..=longest(m)).any(|d| parsed[DAY_OF_MONTH].values & (1 << d) != 0));
    if possible {
        return Ok(());
    }
    Err(ScheduleError::NeverRuns {
        expression: expr.into(),
        reason: format!("day-of-month {:?} does not occur in month {:?}", fields[DAY_OF_MONTH], fields[MONTH]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instant from RFC 3339 (local times with their offset read best in
    /// the DST tables).
    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn sched(expr: &str, tz: Option<&str>) -> CronSchedule {
        CronSchedule::parse(expr, tz).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
    }

    /// The first `n` runs after `from`.
    fn runs(s: &CronSchedule, from: Timestamp, n: usize) -> Vec<Timestamp> {
        std::iter::successors(s.next_after(from), |t| s.next_after(*t)).take(n).collect()
    }

    /// Checks `next_after` and `latest_at_or_before` against the runs listed:
    /// each run is the next after the one before, and the latest at or before
    /// itself and just before the next.
    fn check(expr: &str, tz: Option<&str>, from: &str, want: &[&str]) {
        let s = sched(expr, tz);
        let want: Vec<Timestamp> = want.iter().map(|w| ts(w)).collect();
        assert_eq!(runs(&s, ts(from), want.len()), want, "{expr:?} in {tz:?} after {from}");
        for pair in want.windows(2) {
            assert_eq!(s.latest_at_or_before(pair[0]), Some(pair[0]), "{expr:?}: latest at {}", pair[0]);
            let just_before = pair[1] - jiff::SignedDuration::from_nanos(1);
            assert_eq!(s.latest_at_or_before(just_before), Some(pair[0]), "{expr:?}: latest before {}", pair[1]);
        }
    }

    #[test]
    fn calendar() {
        // (expression, after, the runs that follow), all in UTC.
        let table: &[(&str, &str, &[&str])] = &[
            // Every minute; strictly after, sub-seconds ignored.
            ("* * * * *", "2026-01-01T00:00:30Z", &["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]),
            ("* * * * *", "2026-01-01T00:00:00Z", &["2026-01-01T00:01:00Z"]),
            ("* * * * *", "2026-12-31T23:59:59.5Z", &["2027-01-01T00:00:00Z", "2027-01-01T00:01:00Z"]),
            // Hourly.
            ("0 * * * *", "2026-01-01T00:00:00Z", &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"]),
            // Daily at 03:00.
            ("0 3 * * *", "2026-01-01T03:00:00Z", &["2026-01-02T03:00:00Z", "2026-01-03T03:00:00Z"]),
            ("0 3 * * *", "2026-01-01T02:59:59Z", &["2026-01-01T03:00:00Z"]),
            // Weekdays: Friday 2 January 2026, then Monday.
            (
                "0 9 * * 1-5",
                "2026-01-02T09:00:00Z",
                &["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z", "2026-01-07T09:00:00Z"],
            ),
            ("0 9 * * MON-FRI", "2026-01-02T09:00:00Z", &["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z"]),
            ("0 9 * * mon-fri", "2026-01-02T09:00:00Z", &["2026-01-05T09:00:00Z", "2026-01-06T09:00:00Z"]),
            // Weekends, with Sunday as 7, as 0 and as the end of a named range.
            ("0 9 * * 6,7", "2026-01-01T00:00:00Z", &["2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z"]),
            ("0 9 * * 0,6", "2026-01-01T00:00:00Z", &["2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z"]),
            (
                "0 9 * * FRI-SUN",
                "2026-01-01T00:00:00Z",
                &["2026-01-02T09:00:00Z", "2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z", "2026-01-09T09:00:00Z"],
            ),
            // Day-of-month OR day-of-week: Fridays (2, 9, 16 January) and the
            // 13th (a Tuesday).
            (
                "0 0 13 * FRI",
                "2026-01-01T00:00:00Z",
                &["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z"],
            ),
            // A stepped day-of-week is a restriction: the 1st or Sun/Tue/Thu/Sat.
            (
                "0 0 1 * */2",
                "2026-01-01T00:00:00Z",
                &["2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-06T00:00:00Z"],
            ),
            // `*` (and `*/1`) leaves the other field alone: only the 13th.
            ("0 0 13 * *", "2026-01-01T00:00:00Z", &["2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"]),
            ("0 0 13 * */1", "2026-01-01T00:00:00Z", &["2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"]),
            // Month ends: the 31st skips the short months.
            (
                "0 0 31 * *",
                "2026-01-31T00:00:00Z",
                &["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z", "2026-08-31T00:00:00Z"],
            ),
            // 29 February: leap years only.
            ("0 0 29 2 *", "2026-01-01T00:00:00Z", &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
            // Steps.
            (
                "*/15 * * * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z", "2026-01-01T00:45:00Z", "2026-01-01T01:00:00Z"],
            ),
            (
                "10-40/15 * * * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T00:10:00Z", "2026-01-01T00:25:00Z", "2026-01-01T00:40:00Z", "2026-01-01T01:10:00Z"],
            ),
            ("0 */6 * * *", "2026-01-01T00:00:00Z", &["2026-01-01T06:00:00Z", "2026-01-01T12:00:00Z"]),
            // Lists, month names.
            ("30 8,20 * * *", "2026-01-01T09:00:00Z", &["2026-01-01T20:30:00Z", "2026-01-02T08:30:00Z"]),
            ("0 0 1 JAN *", "2026-01-01T00:00:00Z", &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
            ("0 0 1 jan,Jul *", "2026-01-01T00:00:00Z", &["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"]),
            ("0 0 1 JAN-MAR/2 *", "2026-01-01T00:00:00Z", &["2026-03-01T00:00:00Z", "2027-01-01T00:00:00Z"]),
        ];
        for (expr, from, want) in table {
            check(expr, None, from, want);
        }
    }

    #[test]
    fn utc_is_the_default_and_has_no_dst() {
        let s = sched("30 2 * * *", None);
        assert_eq!(s.time_zone_name(), "UTC");
        check("30 2 * * *", None, "2026-03-28T12:00:00Z", &["2026-03-29T02:30:00Z", "2026-03-30T02:30:00Z"]);
        check("30 2 * * *", Some("UTC"), "2026-10-24T12:00:00Z", &["2026-10-25T02:30:00Z", "2026-10-26T02:30:00Z"]);
    }

    /// Europe/Berlin, 2026: clocks go 02:00 CET -> 03:00 CEST on 29 March
    /// (01:00 UTC) and 03:00 CEST -> 02:00 CET on 25 October (01:00 UTC).
    #[test]
    fn berlin_spring_forward() {
        let berlin = Some("Europe/Berlin");
        let table: &[(&str, &str, &[&str])] = &[
            // Daily at 03:00: unaffected, one hour earlier in UTC afterwards.
            (
                "0 3 * * *",
                "2026-03-27T12:00:00+01:00",
                &["2026-03-28T03:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T03:00:00+02:00"],
            ),
            // Daily at 02:30: the day without 02:30 runs at the end of the gap.
            (
                "30 2 * * *",
                "2026-03-27T12:00:00+01:00",
                &["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
            ),
            // Every slot the gap swallows collapses into one run, also with
            // the 03:00 slot itself.
            (
                "0,30 2,3 * * *",
                "2026-03-29T01:00:00+01:00",
                &["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:00:00+02:00"],
            ),
            (
                "*/15 * * * *",
                "2026-03-29T01:30:00+01:00",
                &["2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00"],
            ),
            // Hourly at :30: 02:30 runs at 03:00, then 03:30 as usual.
            (
                "30 * * * *",
                "2026-03-29T01:00:00+01:00",
                &["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"],
            ),
        ];
        for (expr, from, want) in table {
            check(expr, berlin, from, want);
        }
        // The gap's run is at 01:00 UTC, the transition itself.
        assert_eq!(
            sched("30 2 * * *", berlin).next_after(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn berlin_fall_back() {
        let berlin = Some("Europe/Berlin");
        let table: &[(&str, &str, &[&str])] = &[
            // Daily at 02:30: once, at the first (CEST) occurrence.
            ("30 2 * * *", "2026-10-24T12:00:00+02:00", &["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
            // Daily at 03:00: exists once, an hour later in UTC.
            (
                "0 3 * * *",
                "2026-10-24T00:00:00+02:00",
                &["2026-10-24T03:00:00+02:00", "2026-10-25T03:00:00+01:00", "2026-10-26T03:00:00+01:00"],
            ),
            // Every 30 minutes: the repeated hour is not run again.
            (
                "*/30 * * * *",
                "2026-10-25T01:45:00+02:00",
                &[
                    "2026-10-25T02:00:00+02:00",
                    "2026-10-25T02:30:00+02:00",
                    "2026-10-25T03:00:00+01:00",
                    "2026-10-25T03:30:00+01:00",
                ],
            ),
        ];
        for (expr, from, want) in table {
            check(expr, berlin, from, want);
        }
        // From inside the repeated hour (its second pass), the next run is
        // after it, and the latest is the last slot of its first pass.
        let s = sched("*/30 * * * *", berlin);
        let second_pass = ts("2026-10-25T02:10:00+01:00");
        assert_eq!(s.next_after(second_pass), Some(ts("2026-10-25T03:00:00+01:00")));
        assert_eq!(s.latest_at_or_before(second_pass), Some(ts("2026-10-25T02:30:00+02:00")));
        let daily = sched("30 2 * * *", berlin);
        assert_eq!(daily.next_after(ts("2026-10-25T02:30:00+02:00")), Some(ts("2026-10-26T02:30:00+01:00")));
        assert_eq!(daily.latest_at_or_before(ts("2026-10-25T02:45:00+01:00")), Some(ts("2026-10-25T02:30:00+02:00")));
    }

    #[test]
    fn other_zones() {
        // New York springs forward at 02:00 EST on 8 March 2026, and a
        // half-hour DST zone: Lord Howe goes 02:00 -> 02:30 on 4 October 2026.
        check(
            "30 2 * * *",
            Some("America/New_York"),
            "2026-03-07T12:00:00-05:00",
            &["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
        );
        check(
            "15 2 * * *",
            Some("Australia/Lord_Howe"),
            "2026-10-03T12:00:00+10:30",
            &["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
        );
        // Names are looked up as the tz database spells them.
        check("0 12 * * *", Some("Asia/Kolkata"), "2026-01-01T00:00:00Z", &["2026-01-01T12:00:00+05:30"]);
    }

    #[test]
    fn due() {
        let daily = sched("0 3 * * *", None);
        let created = ts("2026-01-01T10:00:00Z");
        let cases: &[(&str, Option<&str>, &str, Due)] = &[
            // No run yet; the 03:00 of the creation day is before it.
            ("created, nothing owed", None, "2026-01-01T10:05:00Z", Due::WaitUntil(ts("2026-01-02T03:00:00Z"))),
            // No run yet, the first slot has come (exactly, then later).
            (
                "first slot, on time",
                None,
                "2026-01-02T03:00:00Z",
                Due::RunNow { slot: ts("2026-01-02T03:00:00Z"), next: Some(ts("2026-01-03T03:00:00Z")) },
            ),
            (
                "first slot, late",
                None,
                "2026-01-02T07:00:00Z",
                Due::RunNow { slot: ts("2026-01-02T03:00:00Z"), next: Some(ts("2026-01-03T03:00:00Z")) },
            ),
            // Up to date.
            (
                "ran, next tomorrow",
                Some("2026-01-02T03:00:00Z"),
                "2026-01-02T03:00:01Z",
                Due::WaitUntil(ts("2026-01-03T03:00:00Z")),
            ),
            // One missed slot.
            (
                "one missed",
                Some("2026-01-02T03:00:00Z"),
                "2026-01-03T05:00:00Z",
                Due::RunNow { slot: ts("2026-01-03T03:00:00Z"), next: Some(ts("2026-01-04T03:00:00Z")) },
            ),
            // 100 missed slots: one run, for the latest.
            (
                "100 missed",
                Some("2026-01-02T03:00:00Z"),
                "2026-04-12T04:00:00Z",
                Due::RunNow { slot: ts("2026-04-12T03:00:00Z"), next: Some(ts("2026-04-13T03:00:00Z")) },
            ),
            // The clock went back a minute after the 03:00 run: that slot is
            // not taken again.
            (
                "clock back a minute",
                Some("2026-01-02T03:00:00Z"),
                "2026-01-02T02:59:30Z",
                Due::WaitUntil(ts("2026-01-03T03:00:00Z")),
            ),
            // Back three days: wait for the first slot after the last run.
            (
                "clock back days",
                Some("2026-01-05T03:00:00Z"),
                "2026-01-02T12:00:00Z",
                Due::WaitUntil(ts("2026-01-06T03:00:00Z")),
            ),
        ];
        for (what, last, now, want) in cases {
            assert_eq!(daily.due(last.map(ts), created, ts(now)), *want, "{what}");
        }
        // Created "in the future" (the API server's clock ahead of ours).
        assert_eq!(
            daily.due(None, ts("2026-01-02T03:30:00Z"), ts("2026-01-02T03:10:00Z")),
            Due::WaitUntil(ts("2026-01-03T03:00:00Z"))
        );
    }

    #[test]
    fn due_collapses_many_missed_slots() {
        // 100 hourly slots missed: one run, then nothing until the next slot.
        let hourly = sched("0 * * * *", None);
        let last = ts("2026-01-01T00:00:00Z");
        let now = ts("2026-01-05T04:30:00Z");
        let Due::RunNow { slot, next } = hourly.due(Some(last), last, now) else { panic!("nothing due") };
        assert_eq!(slot.duration_since(last).as_hours(), 100);
        assert_eq!(next, Some(ts("2026-01-05T05:00:00Z")));
        assert_eq!(hourly.due(Some(slot), last, now), Due::WaitUntil(ts("2026-01-05T05:00:00Z")));
        // A year of every-minute slots (525,600) costs no more than one.
        let minutely = sched("* * * * *", None);
        let start = ts("2025-06-01T00:00:00Z");
        assert_eq!(
            minutely.due(Some(start), start, ts("2026-06-01T00:00:30Z")),
            Due::RunNow { slot: ts("2026-06-01T00:00:00Z"), next: Some(ts("2026-06-01T00:01:00Z")) }
        );
    }

    #[test]
    fn due_across_dst() {
        let berlin = Some("Europe/Berlin");
        // Down across the fall-back night: the 02:30 slot runs once, at its
        // first occurrence; after it, the repeated 02:30 is not due.
        let daily = sched("30 2 * * *", berlin);
        let last = ts("2026-10-24T02:30:00+02:00");
        let first = ts("2026-10-25T02:30:00+02:00");
        assert_eq!(
            daily.due(Some(last), last, ts("2026-10-25T02:40:00+01:00")),
            Due::RunNow { slot: first, next: Some(ts("2026-10-26T02:30:00+01:00")) }
        );
        assert_eq!(
            daily.due(Some(first), last, ts("2026-10-25T02:40:00+01:00")),
            Due::WaitUntil(ts("2026-10-26T02:30:00+01:00"))
        );
        // Every 30 minutes, woken in the second pass of the repeated hour:
        // the latest slot is the 02:30 of the first pass.
        let half_hourly = sched("*/30 * * * *", berlin);
        let last = ts("2026-10-25T02:00:00+02:00");
        assert_eq!(
            half_hourly.due(Some(last), last, ts("2026-10-25T02:10:00+01:00")),
            Due::RunNow { slot: ts("2026-10-25T02:30:00+02:00"), next: Some(ts("2026-10-25T03:00:00+01:00")) }
        );
        // Spring forward: the 02:30 slot is due from the end of the gap.
        let last = ts("2026-03-28T02:30:00+01:00");
        assert_eq!(
            daily.due(Some(last), last, ts("2026-03-29T01:59:59+01:00")),
            Due::WaitUntil(ts("2026-03-29T03:00:00+02:00"))
        );
        assert_eq!(
            daily.due(Some(last), last, ts("2026-03-29T03:00:00+02:00")),
            Due::RunNow { slot: ts("2026-03-29T03:00:00+02:00"), next: Some(ts("2026-03-30T02:30:00+02:00")) }
        );
    }

    #[test]
    fn names_are_utc() {
        let slot = ts("2026-10-25T02:30:00+02:00");
        assert_eq!(snapshot_name("nightly", slot), "nightly-20261025003000");
        assert_eq!(snapshot_name("nightly", ts("2026-01-02T03:04:05.678Z")), "nightly-20260102030405");
        // The two 02:30s of a fall-back night have different names.
        assert_ne!(snapshot_name("n", slot), snapshot_name("n", ts("2026-10-25T02:30:00+01:00")));
        assert_eq!("-yyyymmddhhmmss".len(), snapshot_name("", slot).len());
    }

    #[test]
    fn invalid_expressions() {
        // (expression, parts of the message)
        let table: &[(&str, &[&str])] = &[
            ("0 3 * * * *", &["must have 5 fields", "found 6"]),
            ("0 3 * *", &["must have 5 fields", "found 4"]),
            ("", &["found 0"]),
            ("   ", &["found 0"]),
            ("60 3 * * *", &["minute field \"60\"", "60 is outside 0-59"]),
            ("0 24 * * *", &["hour field \"24\"", "outside 0-23"]),
            ("0 0 0 * *", &["day-of-month field \"0\"", "outside 1-31"]),
            ("0 0 32 * *", &["day-of-month", "outside 1-31"]),
            ("0 0 * 13 *", &["month field \"13\"", "outside 1-12"]),
            ("0 0 * * 8", &["day-of-week field \"8\"", "0 and 7 are Sunday"]),
            ("0 0-70 * * *", &["hour field \"0-70\"", "70 is outside 0-23"]),
            ("every day at 3 am", &["minute field \"every\"", "is not a number from 0 to 59"]),
            ("x * * * *", &["minute field \"x\""]),
            ("-1 * * * *", &["minute field \"-1\""]),
            ("1.5 * * * *", &["minute field \"1.5\""]),
            ("0 0 * * JAN", &["day-of-week field \"JAN\"", "nor a name SUN-SAT"]),
            ("0 0 * MON *", &["month field \"MON\"", "nor a name JAN-DEC"]),
            ("0 0 * * Monday", &["day-of-week field \"Monday\""]),
            ("MON 0 * * *", &["minute field \"MON\"", "is a day-of-week name"]),
            ("*/0 3 * * *", &["minute field \"*/0\"", "step \"0\""]),
            ("*/x 3 * * *", &["step \"x\""]),
            ("*/60 3 * * *", &["step \"60\"", "from 1 to 59"]),
            ("5/15 * * * *", &["minute field \"5/15\"", "write \"5-59/15\""]),
            ("30-10 * * * *", &["range \"30-10\" runs backwards", "\"30-59,0-10\""]),
            ("0 0 * * 5-2", &["day-of-week", "runs backwards"]),
            ("0 0 1,,2 * *", &["day-of-month field \"1,,2\"", "empty list entry"]),
            ("0 0 1, * *", &["empty list entry"]),
            ("0 0 1-2-3 * *", &["day-of-month field \"1-2-3\""]),
            ("0 0 L * *", &["\"L\" uses L, W, # or ?"]),
            ("0 0 15W * *", &["\"15W\" uses L, W, # or ?"]),
            ("0 0 * * 5#2", &["\"5#2\" uses"]),
            ("0 0 ? * *", &["\"?\" uses"]),
            ("0 0 * * 5L", &["\"5L\" uses"]),
            ("@daily", &["nicknames such as @daily are not supported", "\"0 0 * * *\""]),
            ("0 0 30 2 *", &["never runs", "day-of-month \"30\" does not occur in month \"2\""]),
            ("0 0 31 4,6,9,11 *", &["never runs"]),
            ("0 0 31 APR-JUN/2 *", &["never runs"]),
        ];
        for (expr, parts) in table {
            let err = CronSchedule::parse(expr, None).expect_err(expr).to_string();
            for part in *parts {
                assert!(err.contains(part), "{expr:?}: {err:?} lacks {part:?}");
            }
            assert!(!CronSchedule::parse(expr, None).unwrap_err().is_time_zone());
        }
        // Possible somewhere is enough: the 31st of April or May; the 30th
        // of February or of any month on a Monday.
        for ok in ["0 0 31 4,5 *", "0 0 30 2 MON", "0 0 29 2 *"] {
            sched(ok, None);
        }
    }

    #[test]
    fn invalid_time_zones() {
        for tz in ["Mars/Olympus_Mons", "", "Europe/Berlin ", "+02:00", "CEST-2"] {
            let err = CronSchedule::parse("0 3 * * *", Some(tz)).expect_err(tz);
            assert!(err.is_time_zone());
            let msg = err.to_string();
            assert!(msg.contains(&format!("unknown IANA time zone {tz:?}")) && msg.contains("Europe/Berlin"), "{msg}");
        }
        // The expression is checked first.
        assert!(!CronSchedule::parse("0 3 * *", Some("Nowhere")).unwrap_err().is_time_zone());
        assert_eq!(sched("0 3 * * *", Some("Europe/Berlin")).time_zone_name(), "Europe/Berlin");
    }
}
