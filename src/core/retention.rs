//! Retention of a schedule's snapshots: which to keep and which to delete,
//! as a pure function of (snapshots, policy, time zone, now).
//!
//! The policy means what restic's `forget --keep-*` means, so that people
//! who know restic can predict it:
//!
//! - `keepLast N` keeps the N newest snapshots.
//! - `keepHourly`/`keepDaily`/`keepWeekly`/`keepMonthly`/`keepYearly N`:
//!   going from the newest snapshot to the oldest, keep the newest snapshot
//!   of each of the last N distinct hours/days/ISO weeks/months/years *that
//!   have a snapshot* (a gap of empty days does not use up the count).
//! - A rule that still has counts left when it reaches the oldest snapshot
//!   keeps that one too, even if its period already has a kept snapshot
//!   (current restic: it stretches the history kept while it is short).
//! - A snapshot kept by any rule is kept; 0 turns a rule off.
//!
//! Periods are calendar periods in the schedule's time zone (what people
//! read on their clocks): a DST day of 23 or 25 hours is one day, the two
//! 02:30s of a fall-back night are one hour, a week is an ISO week (so
//! 2024-12-30 is in 2025-W01), months end when the calendar says so.
//!
//! What volsnap adds, because its snapshots can fail, run and be created by
//! a clock that jumps:
//!
//! - Only [`State::Succeeded`] snapshots created at or before `now` are
//!   *counted*: they alone use up rule counts and are kept by rules.
//! - A failed snapshot is deleted once a later counted snapshot succeeded,
//!   and kept until then: the failure of the newest attempts stays visible
//!   (all failures since the last success are kept, not only the newest).
//! - A running snapshot is never deleted (its capture may still succeed).
//! - A snapshot created after `now` (the clock jumped backwards) is kept
//!   and counts for nothing: it neither uses up a rule nor supersedes a
//!   failure, so a wrong clock cannot make the function delete more.
//! - The newest counted success is always kept, whatever the rules say.
//!
//! Deviations from restic, and why:
//!
//! - An empty policy (every rule 0): restic keeps everything; [`plan`] keeps
//!   only the newest success and [`Plan::limit`] refuses to hand out any
//!   deletion for it. Validation refuses such a policy, and a schedule
//!   without `retention` keeps everything, so the caller does not call
//!   [`plan`] for it at all; the two guards are for when that goes wrong.
//! - Snapshots with the same creation time are ordered by name (the larger
//!   name is the newer) instead of by input order, so a pass does not
//!   depend on the order a list call returned.
//! - restic compares a period with the last kept one; here a period is
//!   counted once even if local time revisits it (a zone whose clocks fall
//!   back across midnight). For ordinary zones the two are the same.
//! - No `unlimited` (-1) counts and no `--keep-within*`/`--keep-tag`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

use crate::api::Retention;

/// How many snapshots of each kind to keep (0: the rule is off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: u32,
    /// The newest of each of the last N hours that have a snapshot.
    pub hourly: u32,
    /// The newest of each of the last N days that have a snapshot.
    pub daily: u32,
    /// The newest of each of the last N ISO weeks that have a snapshot.
    pub weekly: u32,
    /// The newest of each of the last N months that have a snapshot.
    pub monthly: u32,
    /// The newest of each of the last N years that have a snapshot.
    pub yearly: u32,
}

impl Policy {
    /// Whether every rule is off: such a policy explains no deletion.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

impl From<&Retention> for Policy {
    /// The API's retention; an absent count is 0.
    fn from(r: &Retention) -> Self {
        Policy {
            last: r.keep_last.unwrap_or(0),
            hourly: r.keep_hourly.unwrap_or(0),
            daily: r.keep_daily.unwrap_or(0),
            weekly: r.keep_weekly.unwrap_or(0),
            monthly: r.keep_monthly.unwrap_or(0),
            yearly: r.keep_yearly.unwrap_or(0),
        }
    }
}

/// Where a snapshot's capture stands, as far as retention cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Completed: the archive can be restored from.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Not finished (pending or in progress, or failed and retried).
    Running,
}

/// One snapshot the schedule created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The snapshot's name (unique within the schedule's namespace).
    pub name: String,
    /// When it was created.
    pub created: Timestamp,
    /// Where its capture stands.
    pub state: State,
}

/// A calendar period in the schedule's time zone: what the period rules
/// count. Ordered by time, newest last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// A local date and hour (`keepHourly`).
    Hour(Date, i8),
    /// A local date (`keepDaily`).
    Day(Date),
    /// An ISO week: week-numbering year and week (`keepWeekly`).
    Week(i16, i8),
    /// A local year and month (`keepMonthly`).
    Month(i16, i8),
    /// A local year (`keepYearly`).
    Year(i16),
}

impl Bucket {
    fn hour(t: DateTime) -> Self {
        Bucket::Hour(t.date(), t.hour())
    }

    fn day(t: DateTime) -> Self {
        Bucket::Day(t.date())
    }

    fn week(t: DateTime) -> Self {
        let w = t.date().iso_week_date();
        Bucket::Week(w.year(), w.week())
    }

    fn month(t: DateTime) -> Self {
        Bucket::Month(t.year(), t.month())
    }

    fn year(t: DateTime) -> Self {
        Bucket::Year(t.year())
    }

    /// The rule that counts this kind of period, as in reasons and logs.
    pub fn rule(&self) -> &'static str {
        match self {
            Bucket::Hour(..) => "hourly",
            Bucket::Day(_) => "daily",
            Bucket::Week(..) => "weekly",
            Bucket::Month(..) => "monthly",
            Bucket::Year(_) => "yearly",
        }
    }
}

impl fmt::Display for Bucket {
    /// ISO 8601 style: `2026-11-30T14`, `2026-11-30`, `2026-W48`, `2026-11`, `2026`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bucket::Hour(d, h) => write!(f, "{d}T{h:02}"),
            Bucket::Day(d) => write!(f, "{d}"),
            Bucket::Week(y, w) => write!(f, "{y:04}-W{w:02}"),
            Bucket::Month(y, m) => write!(f, "{y:04}-{m:02}"),
            Bucket::Year(y) => write!(f, "{y:04}"),
        }
    }
}

/// A period rule: its count in the policy and the period of a local time.
struct Period {
    keep: fn(&Policy) -> u32,
    bucket: fn(DateTime) -> Bucket,
}

/// The period rules, in the order their reasons are listed.
const PERIODS: [Period; 5] = [
    Period { keep: |p| p.hourly, bucket: Bucket::hour },
    Period { keep: |p| p.daily, bucket: Bucket::day },
    Period { keep: |p| p.weekly, bucket: Bucket::week },
    Period { keep: |p| p.monthly, bucket: Bucket::month },
    Period { keep: |p| p.yearly, bucket: Bucket::year },
];

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// One of the `keepLast` newest successes.
    Last,
    /// The newest success of a period a period rule keeps; `oldest`: the
    /// oldest success, kept because the rule had counts left (restic).
    Period {
        /// The period.
        bucket: Bucket,
        /// Kept as the oldest success, not as its period's newest.
        oldest: bool,
    },
    /// The newest success, which no rule kept (an empty policy).
    NewestSuccess,
    /// Not finished: never touched.
    Running,
    /// Created after `now` (the clock jumped back): never touched.
    Future,
    /// Failed, and no later snapshot succeeded: the failure stays visible.
    FailedNotSuperseded,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Last => f.write_str("last"),
            KeepReason::Period { bucket, oldest: false } => write!(f, "{} {bucket}", bucket.rule()),
            KeepReason::Period { bucket, oldest: true } => write!(f, "{} {bucket} (oldest)", bucket.rule()),
            KeepReason::NewestSuccess => f.write_str("newest successful"),
            KeepReason::Running => f.write_str("running"),
            KeepReason::Future => f.write_str("created in the future"),
            KeepReason::FailedNotSuperseded => f.write_str("failed, no later success"),
        }
    }
}

/// Why a snapshot is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// A success that no rule keeps.
    NotKept,
    /// A failure after which `by` succeeded (the nearest later success).
    FailedSuperseded {
        /// The name of the later success.
        by: String,
    },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::NotKept => f.write_str("not kept by any rule"),
            DeleteReason::FailedSuperseded { by } => write!(f, "failed, superseded by {by}"),
        }
    }
}

/// What to do with one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep it, for these reasons (never empty).
    Keep(Vec<KeepReason>),
    /// Delete it (with its archive).
    Delete(DeleteReason),
}

impl fmt::Display for Action {
    /// `keep: last, daily 2026-11-30` or `delete: not kept by any rule`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Keep(reasons) => {
                f.write_str("keep: ")?;
                for (i, r) in reasons.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
            Action::Delete(why) => write!(f, "delete: {why}"),
        }
    }
}

/// The decision for one snapshot, with the facts it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot's name.
    pub name: String,
    /// When it was created.
    pub created: Timestamp,
    /// Where its capture stood.
    pub state: State,
    /// Keep or delete, and why.
    pub action: Action,
}

impl Decision {
    /// Whether the snapshot is to be deleted.
    pub fn is_delete(&self) -> bool {
        matches!(self.action, Action::Delete(_))
    }
}

/// A pass of retention: one decision per snapshot, newest first. Read it
/// with [`Plan::decisions`] (logs, status); delete only what
/// [`Plan::limit`] returns.
#[derive(Clone, Debug)]
pub struct Plan {
    decisions: Vec<Decision>,
    policy: Policy,
    tz: TimeZone,
    now: Timestamp,
}

/// Why [`Plan::limit`] refused to hand out a plan's deletions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Every rule is off: nothing explains a deletion.
    #[error("the retention policy keeps nothing; refusing to delete {0} snapshot(s)")]
    EmptyPolicy(usize),
    /// The plan deletes a snapshot that must stay: running, from the
    /// future, a failure not superseded, or a success the rules keep.
    #[error("refusing to delete {name}: {why}")]
    Protected {
        /// The snapshot.
        name: String,
        /// Why it must stay.
        why: &'static str,
    },
}

/// Decides which snapshots to keep and which to delete (see the module
/// documentation for the rules). Periods are read in `tz`; `now` tells
/// snapshots from a clock that jumped back. Never fails: any input gets a
/// decision per snapshot, and unknown situations keep.
pub fn plan(candidates: &[Candidate], policy: &Policy, tz: &TimeZone, now: Timestamp) -> Plan {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| newest_first((a.created, &a.name), (b.created, &b.name)));
    let counted: Vec<usize> = (0..sorted.len()).filter(|&i| counts(sorted[i].state, sorted[i].created, now)).collect();
    let local: Vec<DateTime> = counted.iter().map(|&i| tz.to_datetime(sorted[i].created)).collect();
    let mut reasons = vec![Vec::new(); sorted.len()];
    for (k, reason) in rule_keeps(&local, policy) {
        reasons[counted[k]].push(reason);
    }
    if let Some(&newest) = counted.first()
        && reasons[newest].is_empty()
    {
        reasons[newest].push(KeepReason::NewestSuccess);
    }
    Plan { decisions: decide(&sorted, reasons, now), policy: policy.clone(), tz: tz.clone(), now }
}

/// Newest first: by creation time, then by name (the larger is the newer),
/// so equal times still give one order whatever the input order.
fn newest_first(a: (Timestamp, &str), b: (Timestamp, &str)) -> Ordering {
    b.0.cmp(&a.0).then_with(|| b.1.cmp(a.1))
}

/// Whether a snapshot counts: only successes, and only those not from a
/// clock that has since jumped back.
fn counts(state: State, created: Timestamp, now: Timestamp) -> bool {
    state == State::Succeeded && created <= now
}

/// What each rule keeps among the counted successes (`local`: their local
/// times, newest first), as (index into `local`, reason), rule by rule.
fn rule_keeps(local: &[DateTime], policy: &Policy) -> Vec<(usize, KeepReason)> {
    let last = usize::try_from(policy.last).unwrap_or(usize::MAX).min(local.len());
    let mut keeps: Vec<(usize, KeepReason)> = (0..last).map(|k| (k, KeepReason::Last)).collect();
    for period in &PERIODS {
        keeps.extend(walk_period(local, (period.keep)(policy), period.bucket));
    }
    keeps
}

/// restic's walk for one period rule: newest to oldest, keep the first
/// snapshot of each period not seen yet while counts are left, and the
/// oldest snapshot if counts are still left when it is reached.
fn walk_period(local: &[DateTime], keep: u32, bucket_of: fn(DateTime) -> Bucket) -> Vec<(usize, KeepReason)> {
    let mut left = keep;
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    let oldest = local.len().checked_sub(1);
    for (k, &t) in local.iter().enumerate() {
        if left == 0 {
            break;
        }
        let bucket = bucket_of(t);
        let new = seen.insert(bucket);
        if new || Some(k) == oldest {
            kept.push((k, KeepReason::Period { bucket, oldest: !new }));
            left -= 1;
        }
    }
    kept
}

/// Turns the rules' reasons into decisions (`sorted` newest first):
/// running and future snapshots are kept, successes without a reason are
/// deleted, failures are deleted once a later counted success exists.
fn decide(sorted: &[&Candidate], reasons: Vec<Vec<KeepReason>>, now: Timestamp) -> Vec<Decision> {
    let mut later_success: Option<&str> = None;
    let mut decisions = Vec::with_capacity(sorted.len());
    for (c, mut keep) in sorted.iter().zip(reasons) {
        let action = if c.state == State::Running || c.created > now {
            if c.state == State::Running {
                keep.push(KeepReason::Running);
            }
            if c.created > now {
                keep.push(KeepReason::Future);
            }
            Action::Keep(keep)
        } else if c.state == State::Succeeded {
            later_success = Some(&c.name);
            if keep.is_empty() { Action::Delete(DeleteReason::NotKept) } else { Action::Keep(keep) }
        } else {
            match later_success {
                Some(by) => Action::Delete(DeleteReason::FailedSuperseded { by: by.to_string() }),
                None => Action::Keep(vec![KeepReason::FailedNotSuperseded]),
            }
        };
        decisions.push(Decision { name: c.name.clone(), created: c.created, state: c.state, action });
    }
    decisions
}

impl Plan {
    /// Every decision, newest snapshot first.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// The decision for the snapshot named `name`.
    pub fn decision(&self, name: &str) -> Option<&Decision> {
        self.decisions.iter().find(|d| d.name == name)
    }

    /// The guard a caller applies before deleting anything: the names to
    /// delete (newest first) if the plan deletes no more than the rules can
    /// explain, an error otherwise (then delete nothing this pass).
    ///
    /// It re-derives what must stay from the decisions' recorded facts, by
    /// grouping rather than by [`plan`]'s walk, so a bug in one is caught
    /// by the other:
    /// - an empty policy explains no deletion;
    /// - running snapshots, snapshots from the future, and failures with no
    ///   later counted success are never deleted;
    /// - the rules require the newest counted success, the `keepLast`
    ///   newest, and the newest of each of the N newest periods of each
    ///   period rule: none of those is deleted. So every deletion is
    ///   explained, and at most `successes - required` successes go (a
    ///   count alone would miss a plan that deletes a required snapshot
    ///   and keeps another instead).
    pub fn limit(&self) -> Result<Vec<&str>, LimitError> {
        let deleting: Vec<&Decision> = self.decisions.iter().filter(|d| d.is_delete()).collect();
        if deleting.is_empty() {
            return Ok(Vec::new());
        }
        if self.policy.is_empty() {
            return Err(LimitError::EmptyPolicy(deleting.len()));
        }
        let mut successes: Vec<&Decision> =
            self.decisions.iter().filter(|d| counts(d.state, d.created, self.now)).collect();
        successes.sort_by(|a, b| newest_first((a.created, &a.name), (b.created, &b.name)));
        for k in self.required(&successes) {
            if successes[k].is_delete() {
                let name = successes[k].name.clone();
                return Err(LimitError::Protected { name, why: "the retention rules keep it" });
            }
        }
        let newest_success = successes.first();
        for d in &deleting {
            if let Some(why) = self.protected(d, newest_success) {
                return Err(LimitError::Protected { name: d.name.clone(), why });
            }
        }
        Ok(deleting.iter().map(|d| d.name.as_str()).collect())
    }

    /// Why `d` may never be deleted whatever the rules say, if so.
    fn protected(&self, d: &Decision, newest_success: Option<&&Decision>) -> Option<&'static str> {
        let superseded =
            newest_success.is_some_and(|s| newest_first((s.created, &s.name), (d.created, &d.name)).is_lt());
        match d.state {
            State::Running => Some("it is still running"),
            _ if d.created > self.now => Some("it was created after now"),
            State::Failed if !superseded => Some("it failed and no later snapshot succeeded"),
            _ => None,
        }
    }

    /// The counted successes (`successes`, newest first) the policy must
    /// keep, as indices: the newest, the `keepLast` newest, and for each
    /// period rule the newest of each of its N newest periods.
    fn required(&self, successes: &[&Decision]) -> BTreeSet<usize> {
        let last = usize::try_from(self.policy.last).unwrap_or(usize::MAX).max(1);
        let mut required: BTreeSet<usize> = (0..successes.len().min(last)).collect();
        for period in &PERIODS {
            let keep = usize::try_from((period.keep)(&self.policy)).unwrap_or(usize::MAX);
            // Each period's newest member is its first, since `successes` is newest first.
            let mut newest_of: BTreeMap<Bucket, usize> = BTreeMap::new();
            for (k, s) in successes.iter().enumerate() {
                newest_of.entry((period.bucket)(self.tz.to_datetime(s.created))).or_insert(k);
            }
            let mut newest: Vec<usize> = newest_of.into_values().collect();
            newest.sort_unstable();
            required.extend(newest.into_iter().take(keep));
        }
        required
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use State::{Failed as FAIL, Running as RUN, Succeeded as OK};

    /// A snapshot row: name, RFC 3339 creation time (the offset shows which
    /// side of a DST change it is on), state.
    type Row = (&'static str, &'static str, State);

    /// The expected decisions: (name, "keep: ..." / "delete: ..."), newest first.
    type Want = &'static [(&'static str, &'static str)];

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("test timestamp {s:?}: {e}"))
    }

    fn candidates(rows: &[Row]) -> Vec<Candidate> {
        rows.iter().map(|&(name, at, state)| Candidate { name: name.into(), created: ts(at), state }).collect()
    }

    /// Europe/Berlin's current rule as a POSIX TZ string, so the tests do
    /// not depend on the host's tzdb.
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("Berlin POSIX TZ")
    }

    /// Each decision as (name, "keep: ..." / "delete: ..."), newest first.
    fn verdicts(plan: &Plan) -> Vec<(String, String)> {
        plan.decisions().iter().map(|d| (d.name.clone(), d.action.to_string())).collect()
    }

    fn expected(rows: &[(&str, &str)]) -> Vec<(String, String)> {
        rows.iter().map(|&(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// Runs one table row: `rows` planned with `policy` in `tz` at `now`
    /// must give `want` (newest first), and the guard must accept it.
    fn check(case: &str, rows: &[Row], policy: Policy, tz: &TimeZone, now: &str, want: &[(&str, &str)]) {
        let plan = plan(&candidates(rows), &policy, tz, ts(now));
        assert_eq!(verdicts(&plan), expected(want), "{case}");
        assert!(plan.limit().is_ok(), "{case}: {:?}", plan.limit());
    }

    #[test]
    fn keep_last_only() {
        let five: &[Row] = &[
            ("a", "2026-01-01T03:00:00Z", OK),
            ("b", "2026-01-02T03:00:00Z", OK),
            ("c", "2026-01-03T03:00:00Z", OK),
            ("d", "2026-01-04T03:00:00Z", OK),
            ("e", "2026-01-05T03:00:00Z", OK),
        ];
        let table: &[(&str, u32, Want)] = &[
            (
                "keepLast 3 of 5",
                3,
                &[
                    ("e", "keep: last"),
                    ("d", "keep: last"),
                    ("c", "keep: last"),
                    ("b", "delete: not kept by any rule"),
                    ("a", "delete: not kept by any rule"),
                ],
            ),
            (
                "keepLast 10 of 5 keeps all",
                10,
                &[
                    ("e", "keep: last"),
                    ("d", "keep: last"),
                    ("c", "keep: last"),
                    ("b", "keep: last"),
                    ("a", "keep: last"),
                ],
            ),
        ];
        for &(case, last, want) in table {
            check(case, five, Policy { last, ..Policy::default() }, &TimeZone::UTC, "2026-02-01T00:00:00Z", want);
        }
    }

    #[test]
    fn keep_daily_and_hourly_follow_the_local_calendar_across_dst() {
        // 2026-03-29: Berlin springs forward 02:00 CET -> 03:00 CEST (a 23 h day).
        // 2026-10-25: Berlin falls back 03:00 CEST -> 02:00 CET (a 25 h day).
        let spring: &[Row] = &[
            ("m28-noon", "2026-03-28T12:00:00+01:00", OK),
            ("m29-0030", "2026-03-29T00:30:00+01:00", OK), // 2026-03-28 in UTC
            ("m29-2330", "2026-03-29T23:30:00+02:00", OK),
        ];
        let fall: &[Row] = &[
            ("o24", "2026-10-24T03:00:00+02:00", OK),
            ("o25-cest", "2026-10-25T02:30:00+02:00", OK), // the first 02:30
            ("o25-cet", "2026-10-25T02:30:00+01:00", OK),  // the second 02:30, an hour later
            ("o26-0030", "2026-10-26T00:30:00+01:00", OK), // 2026-10-25 in UTC
        ];
        let table: &[(&str, &[Row], Policy, Want)] = &[
            (
                "spring-forward day is one local day",
                spring,
                Policy { daily: 2, ..Policy::default() },
                &[
                    ("m29-2330", "keep: daily 2026-03-29"),
                    ("m29-0030", "delete: not kept by any rule"),
                    ("m28-noon", "keep: daily 2026-03-28"),
                ],
            ),
            (
                "fall-back day: both 02:30s are one day",
                fall,
                Policy { daily: 3, ..Policy::default() },
                &[
                    ("o26-0030", "keep: daily 2026-10-26"),
                    ("o25-cet", "keep: daily 2026-10-25"),
                    ("o25-cest", "delete: not kept by any rule"),
                    ("o24", "keep: daily 2026-10-24"),
                ],
            ),
            (
                "fall-back night: both 02:30s are one hour",
                fall,
                Policy { hourly: 2, ..Policy::default() },
                &[
                    ("o26-0030", "keep: hourly 2026-10-26T00"),
                    ("o25-cet", "keep: hourly 2026-10-25T02"),
                    ("o25-cest", "delete: not kept by any rule"),
                    ("o24", "delete: not kept by any rule"),
                ],
            ),
        ];
        for &(case, rows, ref policy, want) in table {
            check(case, rows, policy.clone(), &berlin(), "2026-12-01T00:00:00Z", want);
        }
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_across_the_year_boundary() {
        let table: &[(&str, &[Row], u32, Want)] = &[
            (
                // 2026-12-28 (Mon) .. 2027-01-03 (Sun) is 2026-W53.
                "early January in the previous year's last week",
                &[
                    ("dec27", "2026-12-27T12:00:00+01:00", OK),
                    ("dec28", "2026-12-28T12:00:00+01:00", OK),
                    ("jan01", "2027-01-01T12:00:00+01:00", OK),
                    ("jan03", "2027-01-03T12:00:00+01:00", OK),
                    ("jan04", "2027-01-04T00:30:00+01:00", OK), // a Sunday (2026-W53) in UTC
                ],
                3,
                &[
                    ("jan04", "keep: weekly 2027-W01"),
                    ("jan03", "keep: weekly 2026-W53"),
                    ("jan01", "delete: not kept by any rule"),
                    ("dec28", "delete: not kept by any rule"),
                    ("dec27", "keep: weekly 2026-W52"),
                ],
            ),
            (
                // 2024-12-30 (Mon) is in 2025-W01.
                "late December in the next year's first week",
                &[
                    ("dec29", "2024-12-29T12:00:00Z", OK),
                    ("dec30", "2024-12-30T12:00:00Z", OK),
                    ("jan01", "2025-01-01T12:00:00Z", OK),
                    ("jan06", "2025-01-06T12:00:00Z", OK),
                ],
                2,
                &[
                    ("jan06", "keep: weekly 2025-W02"),
                    ("jan01", "keep: weekly 2025-W01"),
                    ("dec30", "delete: not kept by any rule"),
                    ("dec29", "delete: not kept by any rule"),
                ],
            ),
        ];
        for &(case, rows, weekly, want) in table {
            check(case, rows, Policy { weekly, ..Policy::default() }, &berlin(), "2027-02-01T00:00:00Z", want);
        }
    }

    #[test]
    fn keep_monthly_at_month_ends() {
        let table: &[(&str, &[Row], u32, Want)] = &[
            (
                // 2024 is a leap year; 2024-03-31 is also the spring-forward day.
                "leap year",
                &[
                    ("jan31", "2024-01-31T23:30:00+01:00", OK),
                    ("feb01", "2024-02-01T00:30:00+01:00", OK), // January in UTC
                    ("feb29", "2024-02-29T23:30:00+01:00", OK),
                    ("mar01", "2024-03-01T00:15:00+01:00", OK), // February in UTC
                    ("mar31", "2024-03-31T23:30:00+02:00", OK),
                    ("apr01", "2024-04-01T00:30:00+02:00", OK), // March in UTC
                ],
                3,
                &[
                    ("apr01", "keep: monthly 2024-04"),
                    ("mar31", "keep: monthly 2024-03"),
                    ("mar01", "delete: not kept by any rule"),
                    ("feb29", "keep: monthly 2024-02"),
                    ("feb01", "delete: not kept by any rule"),
                    ("jan31", "delete: not kept by any rule"),
                ],
            ),
            (
                "common year",
                &[
                    ("jan31", "2025-01-31T23:30:00+01:00", OK),
                    ("feb28", "2025-02-28T23:30:00+01:00", OK),
                    ("mar01", "2025-03-01T00:30:00+01:00", OK),
                    ("mar31", "2025-03-31T23:30:00+02:00", OK),
                ],
                4,
                &[
                    ("mar31", "keep: monthly 2025-03"),
                    ("mar01", "delete: not kept by any rule"),
                    ("feb28", "keep: monthly 2025-02"),
                    ("jan31", "keep: monthly 2025-01"),
                ],
            ),
        ];
        for &(case, rows, monthly, want) in table {
            check(case, rows, Policy { monthly, ..Policy::default() }, &berlin(), "2025-06-01T00:00:00Z", want);
        }
    }

    #[test]
    fn keep_yearly_and_the_oldest_while_counts_are_left() {
        let rows: &[Row] = &[
            ("y24a", "2024-06-01T12:00:00+02:00", OK),
            ("y24b", "2024-12-31T23:30:00+01:00", OK),
            ("y25a", "2025-01-01T00:30:00+01:00", OK), // 2024 in UTC
            ("y25b", "2025-12-31T12:00:00+01:00", OK),
            ("y26", "2026-03-01T12:00:00+01:00", OK),
        ];
        let table: &[(&str, u32, Want)] = &[
            (
                "keepYearly 2: counts run out",
                2,
                &[
                    ("y26", "keep: yearly 2026"),
                    ("y25b", "keep: yearly 2025"),
                    ("y25a", "delete: not kept by any rule"),
                    ("y24b", "delete: not kept by any rule"),
                    ("y24a", "delete: not kept by any rule"),
                ],
            ),
            (
                // restic: a rule with counts left keeps the oldest snapshot too.
                "keepYearly 5: the oldest is kept as well",
                5,
                &[
                    ("y26", "keep: yearly 2026"),
                    ("y25b", "keep: yearly 2025"),
                    ("y25a", "delete: not kept by any rule"),
                    ("y24b", "keep: yearly 2024"),
                    ("y24a", "keep: yearly 2024 (oldest)"),
                ],
            ),
        ];
        for &(case, yearly, want) in table {
            check(case, rows, Policy { yearly, ..Policy::default() }, &berlin(), "2026-06-01T00:00:00Z", want);
        }
    }

    /// A snapshot at 03:00 Berlin time on every day of 2025, named by date.
    fn daily_2025() -> Vec<Candidate> {
        let tz = berlin();
        let first = jiff::civil::date(2025, 1, 1);
        (0..365)
            .map(|i| {
                let day = first.checked_add(jiff::Span::new().days(i)).expect("a day of 2025");
                let created = tz.to_ambiguous_timestamp(day.at(3, 0, 0, 0)).compatible().expect("03:00 exists");
                Candidate { name: format!("d{day}"), created, state: OK }
            })
            .collect()
    }

    #[test]
    fn gfs_over_a_year_of_daily_snapshots() {
        let policy = Policy { daily: 7, weekly: 4, monthly: 6, ..Policy::default() };
        let plan = plan(&daily_2025(), &policy, &berlin(), ts("2026-01-01T00:00:00Z"));
        let kept: Vec<&str> = plan.decisions().iter().filter(|d| !d.is_delete()).map(|d| d.name.as_str()).collect();
        // 7 days; ISO weeks 2026-W01 (Dec 29..), 2025-W52, W51, W50 add Dec 21 and
        // Dec 14; months add Nov 30, Oct 31, Sep 30, Aug 31 and Jul 31.
        let want = [
            "d2025-12-31",
            "d2025-12-30",
            "d2025-12-29",
            "d2025-12-28",
            "d2025-12-27",
            "d2025-12-26",
            "d2025-12-25",
            "d2025-12-21",
            "d2025-12-14",
            "d2025-11-30",
            "d2025-10-31",
            "d2025-09-30",
            "d2025-08-31",
            "d2025-07-31",
        ];
        assert_eq!(kept, want);
        let newest = plan.decision("d2025-12-31").map(|d| d.action.to_string());
        assert_eq!(newest.as_deref(), Some("keep: daily 2025-12-31, weekly 2026-W01, monthly 2025-12"));
        let deletions = plan.limit().expect("a consistent plan");
        assert_eq!(deletions.len(), 365 - 14);
    }

    #[test]
    fn failed_snapshots_never_count_and_go_once_superseded() {
        let rows: &[Row] = &[
            ("a", "2026-01-01T03:00:00Z", OK),
            ("b", "2026-01-02T03:00:00Z", OK),
            ("c", "2026-01-03T03:00:00Z", FAIL),
            ("d", "2026-01-04T03:00:00Z", OK),
            ("e", "2026-01-05T03:00:00Z", FAIL),
            ("f", "2026-01-06T03:00:00Z", FAIL),
        ];
        let table: &[(&str, Policy, Want)] = &[
            (
                "keepLast 2 skips the failures",
                Policy { last: 2, ..Policy::default() },
                &[
                    ("f", "keep: failed, no later success"),
                    ("e", "keep: failed, no later success"),
                    ("d", "keep: last"),
                    ("c", "delete: failed, superseded by d"),
                    ("b", "keep: last"),
                    ("a", "delete: not kept by any rule"),
                ],
            ),
            (
                // Days with only a failure have no snapshot for keepDaily.
                "keepDaily 2 counts only days with a success",
                Policy { daily: 2, ..Policy::default() },
                &[
                    ("f", "keep: failed, no later success"),
                    ("e", "keep: failed, no later success"),
                    ("d", "keep: daily 2026-01-04"),
                    ("c", "delete: failed, superseded by d"),
                    ("b", "keep: daily 2026-01-02"),
                    ("a", "delete: not kept by any rule"),
                ],
            ),
        ];
        for &(case, ref policy, want) in table {
            check(case, rows, policy.clone(), &TimeZone::UTC, "2026-02-01T00:00:00Z", want);
        }
    }

    #[test]
    fn running_snapshots_are_untouched() {
        let rows: &[Row] = &[
            ("a", "2026-01-01T03:00:00Z", OK),
            ("b", "2026-01-02T03:00:00Z", RUN),
            ("c", "2026-01-03T03:00:00Z", FAIL), // a running snapshot supersedes nothing
            ("d", "2026-01-04T03:00:00Z", RUN),
            ("e", "2026-01-05T03:00:00Z", OK),
            ("f", "2026-01-06T03:00:00Z", RUN),
        ];
        let want = &[
            ("f", "keep: running"),
            ("e", "keep: last"),
            ("d", "keep: running"),
            ("c", "delete: failed, superseded by e"),
            ("b", "keep: running"),
            ("a", "delete: not kept by any rule"),
        ];
        check(
            "keepLast 1",
            rows,
            Policy { last: 1, ..Policy::default() },
            &TimeZone::UTC,
            "2026-02-01T00:00:00Z",
            want,
        );
        let only_running: &[Row] = &[("r", "2026-01-01T03:00:00Z", RUN), ("x", "2026-01-01T02:00:00Z", FAIL)];
        let want = &[("r", "keep: running"), ("x", "keep: failed, no later success")];
        check(
            "no success yet",
            only_running,
            Policy { last: 1, ..Policy::default() },
            &TimeZone::UTC,
            "2026-02-01T00:00:00Z",
            want,
        );
    }

    #[test]
    fn all_rules_zero_keeps_only_the_newest_success_and_the_guard_refuses() {
        let rows = candidates(&[
            ("a", "2026-01-01T03:00:00Z", OK),
            ("b", "2026-01-02T03:00:00Z", OK),
            ("c", "2026-01-03T03:00:00Z", OK),
            ("d", "2026-01-04T03:00:00Z", FAIL),
            ("e", "2026-01-05T03:00:00Z", RUN),
        ]);
        let plan = plan(&rows, &Policy::default(), &TimeZone::UTC, ts("2026-02-01T00:00:00Z"));
        let want = expected(&[
            ("e", "keep: running"),
            ("d", "keep: failed, no later success"),
            ("c", "keep: newest successful"),
            ("b", "delete: not kept by any rule"),
            ("a", "delete: not kept by any rule"),
        ]);
        assert_eq!(verdicts(&plan), want);
        assert_eq!(plan.limit(), Err(LimitError::EmptyPolicy(2)));
    }

    #[test]
    fn snapshots_from_the_future_are_kept_and_count_for_nothing() {
        // The clock jumped back to 2026-01-10: "z" and "y" were made before the jump.
        let rows: &[Row] = &[
            ("a", "2026-01-01T03:00:00Z", OK),
            ("b", "2026-01-03T03:00:00Z", FAIL),
            ("c", "2026-01-05T03:00:00Z", OK),
            ("d", "2026-01-07T03:00:00Z", FAIL), // only the future "z" succeeded after it
            ("z", "2026-01-20T03:00:00Z", OK),
            ("y", "2026-01-30T03:00:00Z", FAIL),
        ];
        let want = &[
            ("y", "keep: created in the future"),
            ("z", "keep: created in the future"),
            ("d", "keep: failed, no later success"),
            ("c", "keep: last"),
            ("b", "delete: failed, superseded by c"),
            ("a", "delete: not kept by any rule"),
        ];
        check(
            "keepLast 1",
            rows,
            Policy { last: 1, ..Policy::default() },
            &TimeZone::UTC,
            "2026-01-10T00:00:00Z",
            want,
        );
    }

    #[test]
    fn ties_are_broken_by_name_whatever_the_input_order() {
        let at = "2026-01-01T03:00:00Z";
        let orders: [[Row; 3]; 3] = [
            [("s-a", at, OK), ("s-b", at, OK), ("s-c", at, OK)],
            [("s-c", at, OK), ("s-a", at, OK), ("s-b", at, OK)],
            [("s-b", at, OK), ("s-c", at, OK), ("s-a", at, OK)],
        ];
        let want =
            &[("s-c", "keep: last"), ("s-b", "delete: not kept by any rule"), ("s-a", "delete: not kept by any rule")];
        for rows in &orders {
            check(
                "keepLast 1",
                rows,
                Policy { last: 1, ..Policy::default() },
                &TimeZone::UTC,
                "2026-02-01T00:00:00Z",
                want,
            );
        }
        // A failure and a success at the same second: the larger name is the later.
        let table: &[(&str, &[Row], Want)] = &[
            (
                "failure named later",
                &[("s-a", at, OK), ("s-b", at, FAIL)],
                &[("s-b", "keep: failed, no later success"), ("s-a", "keep: last")],
            ),
            (
                "failure named earlier",
                &[("s-a", at, FAIL), ("s-b", at, OK)],
                &[("s-b", "keep: last"), ("s-a", "delete: failed, superseded by s-b")],
            ),
        ];
        for &(case, rows, want) in table {
            check(case, rows, Policy { last: 1, ..Policy::default() }, &TimeZone::UTC, "2026-02-01T00:00:00Z", want);
        }
    }

    #[test]
    fn the_guard_refuses_plans_the_rules_do_not_explain() {
        let policy = Policy { daily: 7, weekly: 4, monthly: 6, ..Policy::default() };
        let mut rows = daily_2025();
        rows.push(Candidate { name: "running".into(), created: ts("2025-12-31T12:00:00Z"), state: RUN });
        rows.push(Candidate { name: "failed".into(), created: ts("2025-12-31T13:00:00Z"), state: FAIL });
        rows.push(Candidate { name: "future".into(), created: ts("2026-03-01T00:00:00Z"), state: OK });
        let good = plan(&rows, &policy, &berlin(), ts("2026-01-01T00:00:00Z"));
        let delete = |plan: &mut Plan, name: &str| {
            for d in plan.decisions.iter_mut().filter(|d| d.name == name) {
                d.action = Action::Delete(DeleteReason::NotKept);
            }
        };
        type Tamper = fn(&mut Plan, &dyn Fn(&mut Plan, &str));
        let table: &[(&str, Tamper, &str)] = &[
            ("untouched", |_, _| {}, "ok"),
            (
                "deletes the newest success",
                |p, del| del(p, "d2025-12-31"),
                "refusing to delete d2025-12-31: the retention rules keep it",
            ),
            (
                "deletes a monthly keep",
                |p, del| del(p, "d2025-07-31"),
                "refusing to delete d2025-07-31: the retention rules keep it",
            ),
            (
                // Deletes no more than the good plan: only the guard's per-snapshot check sees it.
                "keeps another snapshot instead of a monthly keep",
                |p, del| {
                    del(p, "d2025-07-31");
                    for d in p.decisions.iter_mut().filter(|d| d.name == "d2025-07-30") {
                        d.action = Action::Keep(vec![KeepReason::Last]);
                    }
                },
                "refusing to delete d2025-07-31: the retention rules keep it",
            ),
            (
                "deletes a running snapshot",
                |p, del| del(p, "running"),
                "refusing to delete running: it is still running",
            ),
            (
                "deletes a future snapshot",
                |p, del| del(p, "future"),
                "refusing to delete future: it was created after now",
            ),
            (
                "deletes an unsuperseded failure",
                |p, del| del(p, "failed"),
                "refusing to delete failed: it failed and no later snapshot succeeded",
            ),
        ];
        for &(case, tamper, want) in table {
            let mut plan = good.clone();
            tamper(&mut plan, &delete);
            let got = match plan.limit() {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn policy_from_the_api_retention() {
        let r = Retention {
            keep_last: Some(7),
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: None,
            keep_monthly: Some(6),
            keep_yearly: Some(2),
        };
        let want = Policy { last: 7, hourly: 24, daily: 7, weekly: 0, monthly: 6, yearly: 2 };
        assert_eq!(Policy::from(&r), want);
        assert!(Policy::from(&Retention::default()).is_empty());
    }
}
