//! Crontab schedules evaluated exactly as Celery's `crontab` evaluates
//! them: the five fields of Ngenea Hub's `/api/schedules/` (`minute`,
//! `hour`, `day_of_week`, `day_of_month`, `month_of_year`, each a string),
//! parsed by the rules of `celery/schedules.py` (`crontab_parser`,
//! `crontab.__init__`) and stepped by the rules of
//! `crontab.remaining_delta` and `crontab._delta_to_next`, in the site's
//! time zone. Read from Celery 5.7.0 (the release `pip install celery`
//! gives) and checked against it by `tests/hub_cron.rs`.
//!
//! What Celery does, and so what this does:
//!
//! - **Syntax** (`crontab_parser`). A field is a comma-separated list;
//!   each item is `*`, `*/step`, a number or name, `from-to` or
//!   `from-to/step`. A range whose end is below its start wraps past the
//!   field's maximum (`22-2` hours is 22, 23, 0, 1, 2; `fri-mon` is 5, 6,
//!   0, 1); a step takes every step-th value of the expanded range in that
//!   order. `day_of_week` runs 0-6 with 0 = Sunday, and **7 is an error**
//!   (`_expand_number`: "Invalid end range: 7 > 6"). `day_of_month` is
//!   1-31, `month_of_year` 1-12. A name is any word whose first three
//!   letters, in any case, name a month (`jan`..`dec`, tried first) or a
//!   day (`sun`..`sat`) (`celery/utils/time.py`: `yearmonth`, `weekday`),
//!   in any field: `monday` is 1, `mar` is 3 even as a day of the week,
//!   `mon` in `month_of_year` is January. A lone number is read as
//!   Python's `int()` reads it (surrounding spaces, a `+`, `_` between
//!   digits). `5/15` (a step after a plain number) is an error, and so are
//!   empty items, a missing or zero step, and a leading `-`.
//! - **Quirks kept.** Celery matches each item with `re.match`, which does
//!   not anchor at the end, so text after a complete `a-b`, `a-b/s` or
//!   `*/s` is ignored (`1-5 junk` is 1-5, `1-2-3` is 1-2), and `*` may be
//!   followed by one newline. Ferry accepts the same, so a schedule Ngenea
//!   Hub stored is never refused here. The one difference: ferry refuses
//!   any non-ASCII text, where Python's `\w` and `int()` also take Unicode
//!   letters and digits (`١٥` is 15 to Celery, `1-5 é` is 1-5).
//! - **Impossible dates** (`crontab.__init__`, `CRON_DAYS_IN_MONTH`): a
//!   schedule none of whose days occurs in any of its months (the 30th of
//!   February) is an error. Older Celery accepted it and raised
//!   `RuntimeError` ("unable to rollover") when asked for the next run.
//! - **Day of month and day of week combine by AND**, unlike Vixie cron's
//!   OR: a day runs when its month, its day of the month *and* its day of
//!   the week are all in their sets (`remaining_delta`: `execute_this_date
//!   = month in month_of_year and day in day_of_month and dow in
//!   day_of_week`; `_delta_to_next` walks days in `day_of_month` and keeps
//!   the first whose weekday is in `day_of_week`). `13` with `fri` is every
//!   Friday the 13th, not every 13th and every Friday.
//! - **Time zones.** Celery steps the wall clock of `last_run_at` in the
//!   schedule's zone (5.7 converts it there: `remaining_delta`,
//!   `astimezone(schedule_tz)`; django-celery-beat's `TzAwareCrontab` did
//!   the same) and turns the chosen local minute back into an instant with
//!   Python's `fold=0`: `ffwd.__radd__` ends with `+ timedelta(...)`, which
//!   resets `fold`. So a local minute that does not exist (spring forward)
//!   runs at the same minute of the old offset, i.e. shifted forward by the
//!   gap (02:30 in New York on 2024-03-10 runs at 03:30 EDT), and a local
//!   minute that occurs twice (fall back) runs at its first occurrence
//!   only. That is jiff's `compatible` disambiguation (RFC 5545), used
//!   here. Walking the wall clock, the repeated hour of a fall back is not
//!   run again: `*/15` runs 01:45 EDT, then 02:00 EST. Celery issue #10107
//!   (open) is about exactly that skip; ferry follows the released Celery.
//! - **Missed runs** (`crontab.is_due`): beat asks whether the next run
//!   after `last_run_at` is at or before now; if so the task runs *once*
//!   and `last_run_at` becomes now, so any number of missed runs collapse
//!   into one. With `beat_cron_starting_deadline` set, a missed run older
//!   than the deadline is dropped instead. That is the scheduler's part:
//!   [`Cron::next_after`] is the "next run after `last_run_at`" it needs.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use std::fmt;
use std::str::FromStr;

/// One of the five fields of a schedule, named as in Ngenea Hub's API and
/// Celery's `crontab` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// Minute of the hour, 0-59.
    Minute,
    /// Hour of the day, 0-23.
    Hour,
    /// Day of the week, 0-6, 0 = Sunday.
    DayOfWeek,
    /// Day of the month, 1-31.
    DayOfMonth,
    /// Month of the year, 1-12.
    MonthOfYear,
}

impl Field {
    /// The API's name of the field (`day_of_week`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfWeek => "day_of_week",
            Field::DayOfMonth => "day_of_month",
            Field::MonthOfYear => "month_of_year",
        }
    }

    /// The smallest value (Celery's `min_`).
    pub fn min(self) -> u8 {
        match self {
            Field::DayOfMonth | Field::MonthOfYear => 1,
            _ => 0,
        }
    }

    /// The largest value (Celery's `min_ + max_ - 1`).
    pub fn max(self) -> u8 {
        match self {
            Field::Minute => 59,
            Field::Hour => 23,
            Field::DayOfWeek => 6,
            Field::DayOfMonth => 31,
            Field::MonthOfYear => 12,
        }
    }

    /// Every value, as a bit set.
    fn full(self) -> u64 {
        (u64::MAX >> (63 - self.max())) & !((1u64 << self.min()) - 1)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a schedule is refused; its text says which field and what in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// A field that does not parse, e.g. `day_of_week "mon-frx": unknown
    /// name "frx"`.
    #[error("{field} {text:?}: {reason}")]
    Field {
        /// The field.
        field: Field,
        /// Its whole text.
        text: String,
        /// What is wrong in it.
        reason: String,
    },
    /// No day of the month in `day_of_month` occurs in any month of
    /// `month_of_year` (Celery 5.7's `CRON_INVALID_DATE`).
    #[error("day_of_month {day_of_month:?} never occurs in month_of_year {month_of_year:?}")]
    NeverOccurs {
        /// The `day_of_month` text.
        day_of_month: String,
        /// The `month_of_year` text.
        month_of_year: String,
    },
    /// A crontab line (`"0 9 * * 1-5".parse::<Cron>()`) without exactly
    /// five fields separated by single spaces.
    #[error("crontab line {text:?}: {found} fields, not 5 separated by single spaces")]
    Line {
        /// The line.
        text: String,
        /// How many fields the single spaces made.
        found: usize,
    },
}

/// A parsed schedule: the set of values of each field, as Celery expands
/// them (`crontab.minute`, `.hour`, ... are these sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cron {
    minute: u64,
    hour: u64,
    day_of_week: u64,
    day_of_month: u64,
    month_of_year: u64,
}

/// Years [`Cron::next_after`] looks ahead. The Gregorian calendar repeats
/// every 400 years, so a date the schedule can match (checked by
/// [`Cron::parse`]) comes within them; the longest real wait is a 29th of
/// February on a given weekday, up to 40 years.
const SEARCH_YEARS: i32 = 401;

/// Longest length of each month (February in a leap year); Celery 5.7's
/// `CRON_DAYS_IN_MONTH`.
const DAYS_IN_MONTH: [u8; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

impl Cron {
    /// Parses the five fields in the API's order, as Celery's
    /// `crontab(minute, hour, day_of_week, day_of_month, month_of_year)`
    /// does: the same texts are accepted, to the same sets (see the module
    /// documentation). Fields are checked in Celery's order (hour, minute,
    /// day_of_week, day_of_month, month_of_year), so the error names the
    /// field Celery would fail on first.
    pub fn parse(
        minute: &str,
        hour: &str,
        day_of_week: &str,
        day_of_month: &str,
        month_of_year: &str,
    ) -> Result<Cron, CronError> {
        let field = |f: Field, text: &str| {
            parse_field(f, text).map_err(|reason| CronError::Field {
                field: f,
                text: text.to_string(),
                reason,
            })
        };
        let hour = field(Field::Hour, hour)?;
        let minute = field(Field::Minute, minute)?;
        let dow = field(Field::DayOfWeek, day_of_week)?;
        let dom = field(Field::DayOfMonth, day_of_month)?;
        let moy = field(Field::MonthOfYear, month_of_year)?;
        let possible = bits(moy).any(|m| bits(dom).any(|d| d <= DAYS_IN_MONTH[usize::from(m)]));
        if !possible {
            return Err(CronError::NeverOccurs {
                day_of_month: day_of_month.to_string(),
                month_of_year: month_of_year.to_string(),
            });
        }
        Ok(Cron {
            minute,
            hour,
            day_of_week: dow,
            day_of_month: dom,
            month_of_year: moy,
        })
    }

    /// The values of `field`, ascending (for the API to show, and to
    /// compare with Celery's sets).
    pub fn values(&self, field: Field) -> impl Iterator<Item = u8> + use<> {
        bits(self.set(field))
    }

    fn set(&self, field: Field) -> u64 {
        match field {
            Field::Minute => self.minute,
            Field::Hour => self.hour,
            Field::DayOfWeek => self.day_of_week,
            Field::DayOfMonth => self.day_of_month,
            Field::MonthOfYear => self.month_of_year,
        }
    }

    /// Whether `date` is a day to run on: month, day of the month and day
    /// of the week all match (Celery's AND: `execute_this_date`).
    fn runs_on(&self, date: Date) -> bool {
        has(self.month_of_year, date.month())
            && has(self.day_of_month, date.day())
            && has(self.day_of_week, date.weekday().to_sunday_zero_offset())
    }

    /// Whether the local minute containing `t`, in `t`'s own time zone,
    /// matches every field. This is a wall-clock test: both occurrences of
    /// a repeated minute (fall back) match, and a minute skipped by a
    /// spring forward is never a `t`. Which instants a schedule runs at is
    /// [`Cron::next_after`]'s to say.
    pub fn matches(&self, t: &ZonedDateTime) -> bool {
        let dt = t.datetime();
        self.runs_on(dt.date()) && has(self.hour, dt.hour()) && has(self.minute, dt.minute())
    }

    /// The first run strictly after `after`, in the time zone `tz`: the
    /// instant Celery's `remaining_delta` gives for `last_run_at = after`.
    ///
    /// Local minutes are walked from the one after `after`'s local minute
    /// (seconds do not count: after 10:05:30, 10:05 is past) and the first
    /// that matches is turned into an instant by jiff's `compatible`
    /// disambiguation, which is what Celery's `fold=0` does: a local time
    /// skipped by a spring forward runs shifted forward by the gap, one
    /// repeated by a fall back runs at its first occurrence. Each local
    /// minute runs at most once, so the repeated hour does not run again.
    ///
    /// One deliberate difference: when `after` lies in the second pass of
    /// a repeated hour, Celery answers the first occurrence of a later
    /// minute of that hour, an instant *before* `after` (so beat fires at
    /// once, and again at every tick until the hour ends). Ferry skips
    /// those and answers the first run after the repeated hour, keeping
    /// "strictly after".
    ///
    /// `None` when there is no such run before jiff's last date (year
    /// 9999); a schedule that [`Cron::parse`] accepts always has one within
    /// 401 years of any earlier time.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after);
        let last_year = i32::from(start.year()) + SEARCH_YEARS;
        let mut date = start.date();
        // Only on `after`'s own date are some minutes already past.
        let mut first_day = true;
        while i32::from(date.year()) <= last_year {
            if !has(self.month_of_year, date.month()) {
                date = first_of_next_month(date)?;
                first_day = false;
                continue;
            }
            if self.runs_on(date) {
                for hour in bits(self.hour).map(|h| h as i8) {
                    if first_day && hour < start.hour() {
                        continue;
                    }
                    for minute in bits(self.minute).map(|m| m as i8) {
                        if first_day && hour == start.hour() && minute <= start.minute() {
                            continue;
                        }
                        let local: DateTime = date.at(hour, minute, 0, 0);
                        let at = tz.to_ambiguous_timestamp(local).compatible().ok()?;
                        // Only in the second pass of a repeated hour can a
                        // later local minute be an earlier instant.
                        if at > after {
                            return Some(at);
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
            first_day = false;
        }
        None
    }
}

/// The canonical crontab line, in crontab's (and Celery's
/// `crontab.from_string`'s) order: `minute hour day_of_month month_of_year
/// day_of_week`. Each field is `*` when it holds every value, else its
/// values ascending with runs of three or more written `a-b`, numbers
/// only (`0 9 * * 1-5`). It parses back (`FromStr`) to the same
/// schedule.
impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = [
            Field::Minute,
            Field::Hour,
            Field::DayOfMonth,
            Field::MonthOfYear,
            Field::DayOfWeek,
        ];
        for (i, field) in order.into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write_field(f, field, self.set(field))?;
        }
        Ok(())
    }
}

/// Parses a crontab line as Celery's `crontab.from_string` does: exactly
/// five fields separated by single spaces, in crontab's order `minute hour
/// day_of_month month_of_year day_of_week`.
impl FromStr for Cron {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Cron, CronError> {
        let parts: Vec<&str> = s.split(' ').collect();
        match parts[..] {
            [minute, hour, dom, moy, dow] => Cron::parse(minute, hour, dow, dom, moy),
            _ => Err(CronError::Line {
                text: s.to_string(),
                found: parts.len(),
            }),
        }
    }
}

fn write_field(f: &mut fmt::Formatter<'_>, field: Field, set: u64) -> fmt::Result {
    if set == field.full() {
        return f.write_str("*");
    }
    let values: Vec<u8> = bits(set).collect();
    let mut i = 0;
    let mut first = true;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        if !first {
            f.write_str(",")?;
        }
        first = false;
        if j - i >= 2 {
            write!(f, "{}-{}", values[i], values[j])?;
            i = j + 1;
        } else {
            write!(f, "{}", values[i])?;
            i += 1;
        }
    }
    Ok(())
}

fn has(set: u64, value: i8) -> bool {
    (0..64).contains(&value) && set & (1u64 << value) != 0
}

/// The members of a bit set, ascending.
fn bits(set: u64) -> impl Iterator<Item = u8> {
    (0u8..64).filter(move |&b| set & (1u64 << b) != 0)
}

fn first_of_next_month(date: Date) -> Option<Date> {
    let (y, m) = if date.month() == 12 {
        (date.year().checked_add(1)?, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    Date::new(y, m, 1).ok()
}

// ---------------------------------------------------------------------------
// Parsing: a port of `crontab_parser` (celery/schedules.py), whose patterns
// are, tried in this order with `re.match` (anchored at the start only):
//   (\w+?)-(\w+)/(\w+)?   _range_steps
//   (\w+?)-(\w+)          _expand_range
//   \*/(\w+)?             _star_steps
//   ^\*$                  _expand_star
// and otherwise `_expand_range((part,))`, i.e. one number or name.

/// A field's text as a bit set (`crontab_parser.parse`).
fn parse_field(field: Field, spec: &str) -> Result<u64, String> {
    if !spec.is_ascii() {
        return Err("only ASCII text is accepted".into());
    }
    let mut set = 0u64;
    for part in spec.split(',') {
        if part.is_empty() {
            // Celery: ParseException('empty part').
            return Err("empty item in the list".into());
        }
        for v in parse_part(field, part)? {
            set |= 1u64 << v;
        }
    }
    Ok(set)
}

/// How many bytes of `s` from `at` are Python's ASCII `\w`.
fn word_len(s: &[u8], at: usize) -> usize {
    s.get(at..).map_or(0, |t| {
        t.iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_')
            .count()
    })
}

/// One list item (`crontab_parser._parse_part`).
fn parse_part(field: Field, part: &str) -> Result<Vec<u8>, String> {
    let b = part.as_bytes();
    let w1 = word_len(b, 0);
    if w1 > 0 && b.get(w1) == Some(&b'-') {
        let w2 = word_len(b, w1 + 1);
        if w2 > 0 {
            let from = &part[..w1];
            let end = w1 + 1 + w2;
            let to = &part[w1 + 1..end];
            if b.get(end) == Some(&b'/') {
                // _range_steps
                let w3 = word_len(b, end + 1);
                if w3 == 0 {
                    return Err(format!("no step after '/' in {part:?}"));
                }
                let values = expand_range(field, from, Some(to))?;
                let step = parse_step(&part[end + 1..end + 1 + w3])?;
                return Ok(values.into_iter().step_by(step).collect());
            }
            // _expand_range
            return expand_range(field, from, Some(to));
        }
    }
    if let Some(rest) = part.strip_prefix("*/") {
        // _star_steps
        let w = word_len(rest.as_bytes(), 0);
        if w == 0 {
            return Err(format!("no step after '/' in {part:?}"));
        }
        let step = parse_step(&rest[..w])?;
        return Ok(star(field).into_iter().step_by(step).collect());
    }
    // `^\*$`: Python's `$` also matches before a final newline.
    if part == "*" || part == "*\n" {
        return Ok(star(field));
    }
    expand_range(field, part, None)
}

/// `_expand_star`: every value of the field.
fn star(field: Field) -> Vec<u8> {
    (field.min()..=field.max()).collect()
}

/// `_expand_range`: `from`, or `from` to `to` inclusive, wrapping past the
/// field's maximum to its minimum when `to < from`.
fn expand_range(field: Field, from: &str, to: Option<&str>) -> Result<Vec<u8>, String> {
    let fr = expand_number(field, from)?;
    let Some(to) = to else { return Ok(vec![fr]) };
    let to = expand_number(field, to)?;
    if to < fr {
        Ok((fr..=field.max()).chain(field.min()..=to).collect())
    } else {
        Ok((fr..=to).collect())
    }
}

/// A step: `int()` of a `\w+` word, used as a slice step (0 is Python's
/// "slice step cannot be zero"). A step beyond any range keeps only the
/// first value, as Python's slice does.
fn parse_step(word: &str) -> Result<usize, String> {
    match python_int(word) {
        Some(0) => Err("a step of 0".into()),
        Some(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(format!("step {word:?} is not a number")),
    }
}

/// `_expand_number`: a number, else a month name, else a day name, then
/// checked against the field's bounds.
fn expand_number(field: Field, s: &str) -> Result<u8, String> {
    if s.starts_with('-') {
        return Err("negative numbers are not supported".into());
    }
    let n = match python_int(s) {
        Some(n) => n,
        None => match name_value(s) {
            Some(n) => n,
            None if s.starts_with(|c: char| c.is_ascii_alphabetic()) => return Err(format!("unknown name {s:?}")),
            None => return Err(format!("not a number or a name: {s:?}")),
        },
    };
    if n > i64::from(field.max()) {
        return Err(format!("{n} is above the maximum {}", field.max()));
    }
    if n < i64::from(field.min()) {
        return Err(format!("{n} is below the minimum {}", field.min()));
    }
    Ok(n as u8)
}

/// `yearmonth`, then `weekday` (celery/utils/time.py): the first three
/// letters of `s`, in any case, as a month (1-12) or a day (0-6, Sunday
/// 0).
fn name_value(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let abbr = s.get(..3.min(s.len()))?.to_ascii_lowercase();
    if let Some(i) = MONTHS.iter().position(|m| *m == abbr) {
        return Some(i as i64 + 1);
    }
    DAYS.iter().position(|d| *d == abbr).map(|i| i as i64)
}

/// Python's `int(s)` for ASCII text: spaces, tabs, newlines, `\v`, `\f`
/// and `\r` around; an optional sign; digits with single `_` between
/// them. Values too large for an `i64` saturate (they are out of every
/// field's range either way).
fn python_int(s: &str) -> Option<i64> {
    let t = s.trim_matches(|c: char| matches!(c, ' ' | '\t'..='\r'));
    let (negative, digits) = match t.as_bytes().first()? {
        b'+' => (false, &t[1..]),
        b'-' => (true, &t[1..]),
        _ => (false, t),
    };
    let d = digits.as_bytes();
    if !d.first()?.is_ascii_digit() || !d.last()?.is_ascii_digit() || digits.contains("__") {
        return None;
    }
    let mut n: i64 = 0;
    for &c in d {
        match c {
            b'0'..=b'9' => n = n.saturating_mul(10).saturating_add(i64::from(c - b'0')),
            b'_' => {}
            _ => return None,
        }
    }
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn set(text: &str, field: Field) -> Result<Vec<u8>, String> {
        parse_field(field, text).map(|s| bits(s).collect())
    }

    fn ok(text: &str, field: Field) -> Vec<u8> {
        set(text, field).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
    }

    fn err(text: &str, field: Field) -> String {
        match set(text, field) {
            Ok(v) => panic!("{field} {text:?} parsed to {v:?}"),
            Err(e) => e,
        }
    }

    fn cron(line: &str) -> Cron {
        line.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// `line`'s next run after `after` in `zone`, as an RFC 3339 UTC text.
    fn next(line: &str, zone: &str, after: &str) -> String {
        cron(line).next_after(ts(after), &tz(zone)).unwrap().to_string()
    }

    /// The next `n` runs, each after the one before.
    fn runs(line: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        let (c, z) = (cron(line), tz(zone));
        let mut t = ts(after);
        (0..n)
            .map(|_| {
                t = c.next_after(t, &z).unwrap();
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn stars_and_steps() {
        use Field::*;
        assert_eq!(ok("*", Minute), (0..60).collect::<Vec<_>>());
        assert_eq!(ok("*", DayOfWeek), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(ok("*", DayOfMonth), (1..=31).collect::<Vec<_>>());
        assert_eq!(ok("*", MonthOfYear), (1..=12).collect::<Vec<_>>());
        assert_eq!(ok("*/15", Minute), vec![0, 15, 30, 45]);
        assert_eq!(ok("*/4", Hour), vec![0, 4, 8, 12, 16, 20]);
        // Celery's docstring examples: steps count from the field's minimum.
        assert_eq!(ok("*/3", DayOfMonth), vec![1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31]);
        assert_eq!(ok("*/2", MonthOfYear), vec![1, 3, 5, 7, 9, 11]);
        assert_eq!(ok("2-12/2", MonthOfYear), vec![2, 4, 6, 8, 10, 12]);
        assert_eq!(ok("1-10/2", Minute), vec![1, 3, 5, 7, 9]);
        assert_eq!(ok("*/1", Hour), (0..24).collect::<Vec<_>>());
        assert_eq!(ok("*/100", Minute), vec![0]);
        assert_eq!(ok("*/99999999999999999999", Minute), vec![0]);
        assert_eq!(ok("*/1_5", Minute), vec![0, 15, 30, 45]);
        assert_eq!(ok("*\n", Hour).len(), 24);
    }

    #[test]
    fn numbers_lists_and_ranges() {
        use Field::*;
        assert_eq!(ok("5", Minute), vec![5]);
        assert_eq!(ok("05", Minute), vec![5]);
        assert_eq!(ok("0", DayOfWeek), vec![0]);
        assert_eq!(ok("1,15", DayOfMonth), vec![1, 15]);
        assert_eq!(ok("15,1,15", DayOfMonth), vec![1, 15]);
        assert_eq!(ok("1,13,30-45,50-59/2", Minute).len(), 2 + 16 + 5);
        assert_eq!(ok("0,8-17/2", Hour), vec![0, 8, 10, 12, 14, 16]);
        assert_eq!(ok("5-5", Hour), vec![5]);
        // Python's int(): spaces, a plus sign, underscores between digits.
        assert_eq!(ok(" 5", Minute), vec![5]);
        assert_eq!(ok("\t5\n", Minute), vec![5]);
        assert_eq!(ok(" +5 ", Minute), vec![5]);
        assert_eq!(ok("1_0", Minute), vec![10]);
        assert_eq!(ok(" -0", Minute), vec![0]);
    }

    #[test]
    fn ranges_wrap_past_the_maximum() {
        use Field::*;
        assert_eq!(ok("22-2", Hour), vec![0, 1, 2, 22, 23]);
        // The step walks the wrapped order: 22, 0, 2.
        assert_eq!(ok("22-2/2", Hour), vec![0, 2, 22]);
        assert_eq!(ok("50-10/7", Minute), vec![4, 50, 57]);
        assert_eq!(ok("fri-mon", DayOfWeek), vec![0, 1, 5, 6]);
        assert_eq!(ok("nov-feb", MonthOfYear), vec![1, 2, 11, 12]);
        assert_eq!(ok("30-2", DayOfMonth), vec![1, 2, 30, 31]);
    }

    #[test]
    fn names() {
        use Field::*;
        assert_eq!(ok("mon-fri", DayOfWeek), vec![1, 2, 3, 4, 5]);
        assert_eq!(ok("sun", DayOfWeek), vec![0]);
        assert_eq!(ok("sat,sun", DayOfWeek), vec![0, 6]);
        assert_eq!(ok("Monday", DayOfWeek), vec![1]);
        assert_eq!(ok("FRI", DayOfWeek), vec![5]);
        assert_eq!(ok("jan-mar", MonthOfYear), vec![1, 2, 3]);
        assert_eq!(ok("december", MonthOfYear), vec![12]);
        assert_eq!(ok("mon-fri/2", DayOfWeek), vec![1, 3, 5]);
        // Only three letters count, and months are tried before days, in
        // any field.
        assert_eq!(ok("monkey", DayOfWeek), vec![1]);
        assert_eq!(ok("Mon!", DayOfWeek), vec![1]);
        assert_eq!(ok("mar", DayOfWeek), vec![3]);
        assert_eq!(ok("mon", MonthOfYear), vec![1]);
        assert_eq!(ok("jan", Minute), vec![1]);
    }

    #[test]
    fn text_after_a_complete_item_is_ignored_as_by_celery() {
        use Field::*;
        assert_eq!(ok("1-5 junk", Minute), vec![1, 2, 3, 4, 5]);
        assert_eq!(ok("1-2-3", Minute), vec![1, 2]);
        assert_eq!(ok("1-5/2-3", Minute), vec![1, 3, 5]);
        assert_eq!(ok("*/5 junk", Hour), vec![0, 5, 10, 15, 20]);
        assert_eq!(ok("1-5\n", Minute), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn errors() {
        use Field::*;
        assert_eq!(err("7", DayOfWeek), "7 is above the maximum 6");
        assert_eq!(err("60", Minute), "60 is above the maximum 59");
        assert_eq!(err("24", Hour), "24 is above the maximum 23");
        assert_eq!(err("32", DayOfMonth), "32 is above the maximum 31");
        assert_eq!(err("0", DayOfMonth), "0 is below the minimum 1");
        assert_eq!(err("13", MonthOfYear), "13 is above the maximum 12");
        assert_eq!(err("sun", MonthOfYear), "0 is below the minimum 1");
        assert_eq!(err("dec", DayOfWeek), "12 is above the maximum 6");
        assert_eq!(err("5-7", DayOfWeek), "7 is above the maximum 6");
        assert_eq!(err("", Minute), "empty item in the list");
        assert_eq!(err(",", Minute), "empty item in the list");
        assert_eq!(err("1,,2", Minute), "empty item in the list");
        assert_eq!(err("1,", Minute), "empty item in the list");
        assert_eq!(err("*/", Minute), "no step after '/' in \"*/\"");
        assert_eq!(err("*/-1", Minute), "no step after '/' in \"*/-1\"");
        assert_eq!(err("1-5/", Minute), "no step after '/' in \"1-5/\"");
        assert_eq!(err("*/0", Minute), "a step of 0");
        assert_eq!(err("1-5/0", Minute), "a step of 0");
        assert_eq!(err("*/x", Minute), "step \"x\" is not a number");
        assert_eq!(err("1-5/x", Minute), "step \"x\" is not a number");
        assert_eq!(err("-1", Minute), "negative numbers are not supported");
        assert_eq!(err("-0", Minute), "negative numbers are not supported");
        assert_eq!(err(" -5", Minute), "-5 is below the minimum 0");
        assert_eq!(err("5/15", Minute), "not a number or a name: \"5/15\"");
        assert_eq!(err("*-5", Minute), "not a number or a name: \"*-5\"");
        assert_eq!(err("**", Minute), "not a number or a name: \"**\"");
        assert_eq!(err("* ", Minute), "not a number or a name: \"* \"");
        assert_eq!(err("1.5", Minute), "not a number or a name: \"1.5\"");
        assert_eq!(err("5-", Minute), "not a number or a name: \"5-\"");
        assert_eq!(err("1__0", Minute), "not a number or a name: \"1__0\"");
        assert_eq!(err("_1", Minute), "not a number or a name: \"_1\"");
        assert_eq!(err("1_", Minute), "not a number or a name: \"1_\"");
        assert_eq!(err("\x1c5", Minute), "not a number or a name: \"\\u{1c}5\"");
        assert_eq!(err("ma", DayOfWeek), "unknown name \"ma\"");
        assert_eq!(err("a1-5", Minute), "unknown name \"a1\"");
        assert_eq!(err("mon-frx", DayOfWeek), "unknown name \"frx\"");
        assert_eq!(err("١٥", Minute), "only ASCII text is accepted");
        assert_eq!(
            Cron::parse("*", "*", "mon-frx", "*", "*").unwrap_err().to_string(),
            "day_of_week \"mon-frx\": unknown name \"frx\""
        );
        // Celery checks the hour before the minute.
        let e = Cron::parse("60", "24", "*", "*", "*").unwrap_err();
        assert!(matches!(e, CronError::Field { field: Field::Hour, .. }), "{e}");
    }

    #[test]
    fn dates_that_never_occur_are_errors() {
        let e = Cron::parse("0", "0", "*", "30", "feb").unwrap_err();
        assert_eq!(
            e.to_string(),
            "day_of_month \"30\" never occurs in month_of_year \"feb\""
        );
        assert!(Cron::parse("0", "0", "*", "31", "apr,jun,sep,nov").is_err());
        assert!(Cron::parse("0", "0", "*", "31", "apr,jun,sep,nov,dec").is_ok());
        assert!(Cron::parse("0", "0", "*", "29", "2").is_ok());
        assert!(Cron::parse("0", "0", "*", "29-31", "2").is_ok());
    }

    #[test]
    fn crontab_lines_round_trip() {
        for (line, canonical) in [
            ("* * * * *", "* * * * *"),
            ("*/15 9-17 * * mon-fri", "0,15,30,45 9-17 * * 1-5"),
            ("0 22-2 1,15 jan-mar sun", "0 0-2,22,23 1,15 1-3 0"),
            ("0,1 0 */1 * */1", "0,1 0 * * *"),
            ("5 4 29 2 fri-mon", "5 4 29 2 0,1,5,6"),
        ] {
            let c = cron(line);
            assert_eq!(c.to_string(), canonical, "{line}");
            assert_eq!(cron(&c.to_string()), c, "{line}");
        }
        assert_eq!(
            "0 0  * * *".parse::<Cron>().unwrap_err().to_string(),
            "crontab line \"0 0  * * *\": 6 fields, not 5 separated by single spaces"
        );
        assert!("0 0 * *".parse::<Cron>().is_err());
        let c = cron("*/20 8 * * *");
        assert_eq!(c.values(Field::Minute).collect::<Vec<_>>(), vec![0, 20, 40]);
        assert_eq!(c.values(Field::DayOfWeek).count(), 7);
    }

    #[test]
    fn steps_within_the_hour_and_day() {
        assert_eq!(
            next("*/15 * * * *", "UTC", "2024-05-01T10:05:30Z"),
            "2024-05-01T10:15:00Z"
        );
        // Strictly after, and seconds do not count.
        assert_eq!(
            next("*/15 * * * *", "UTC", "2024-05-01T10:15:00Z"),
            "2024-05-01T10:30:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2024-05-01T10:15:59Z"),
            "2024-05-01T10:30:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2024-05-01T10:14:59Z"),
            "2024-05-01T10:15:00Z"
        );
        assert_eq!(
            next("0 9,17 * * *", "UTC", "2024-05-01T09:00:00Z"),
            "2024-05-01T17:00:00Z"
        );
        assert_eq!(
            next("0 9,17 * * *", "UTC", "2024-05-01T17:00:00Z"),
            "2024-05-02T09:00:00Z"
        );
        // 2024-05-03 is a Friday.
        assert_eq!(
            next("0 9 * * mon-fri", "UTC", "2024-05-03T09:00:00Z"),
            "2024-05-06T09:00:00Z"
        );
        assert_eq!(
            next("0 9 * * fri", "UTC", "2024-05-03T09:00:00Z"),
            "2024-05-10T09:00:00Z"
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_combine_by_and() {
        // Friday the 13th: 2024-09-13 and then 2024-12-13, not the 13ths
        // in between nor the Fridays (Vixie cron would run both).
        assert_eq!(
            runs("0 0 13 * fri", "UTC", "2024-01-01T00:00:00Z", 2),
            ["2024-09-13T00:00:00Z", "2024-12-13T00:00:00Z"]
        );
        let c = cron("0 0 13 * fri");
        let utc = TimeZone::UTC;
        let at = |s: &str| ts(s).to_zoned_datetime(utc.clone());
        assert!(c.matches(&at("2024-09-13T00:00:30Z")));
        assert!(!c.matches(&at("2024-09-06T00:00:00Z")), "a Friday, not the 13th");
        assert!(!c.matches(&at("2024-08-13T00:00:00Z")), "the 13th, a Tuesday");
        assert!(!c.matches(&at("2024-09-13T00:01:00Z")));
        // The first Monday of each month.
        assert_eq!(
            runs("0 8 1-7 * mon", "UTC", "2024-01-01T12:00:00Z", 3),
            ["2024-02-05T08:00:00Z", "2024-03-04T08:00:00Z", "2024-04-01T08:00:00Z"]
        );
    }

    #[test]
    fn year_ends_and_leap_years() {
        assert_eq!(next("0 0 1 1 *", "UTC", "2024-12-31T23:59:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(
            next("59 23 31 12 *", "UTC", "2024-12-31T23:59:00Z"),
            "2025-12-31T23:59:00Z"
        );
        assert_eq!(next("* * * * *", "UTC", "2024-12-31T23:59:59Z"), "2025-01-01T00:00:00Z");
        assert_eq!(
            next("0 12 29 2 *", "UTC", "2024-03-01T00:00:00Z"),
            "2028-02-29T12:00:00Z"
        );
        assert_eq!(
            next("0 12 29 2 *", "UTC", "2096-03-01T00:00:00Z"),
            "2104-02-29T12:00:00Z"
        );
        // The 29th of February on a Monday: 2044, then 2072.
        assert_eq!(
            runs("0 0 29 feb mon", "UTC", "2024-03-01T00:00:00Z", 2),
            ["2044-02-29T00:00:00Z", "2072-02-29T00:00:00Z"]
        );
        assert_eq!(date(2044, 2, 29).weekday(), jiff::civil::Weekday::Monday);
        // The 31st only where the month has one.
        assert_eq!(
            runs("0 0 31 * *", "UTC", "2024-01-31T00:00:00Z", 3),
            ["2024-03-31T00:00:00Z", "2024-05-31T00:00:00Z", "2024-07-31T00:00:00Z"]
        );
        // Local new year, not UTC's.
        assert_eq!(
            next("0 0 1 1 *", "America/New_York", "2024-12-31T23:59:00Z"),
            "2025-01-01T05:00:00Z"
        );
        // Near jiff's last date there is no next run.
        assert_eq!(cron("0 0 1 1 *").next_after(Timestamp::MAX, &TimeZone::UTC), None);
        assert_eq!(cron("* * * * *").next_after(Timestamp::MAX, &TimeZone::UTC), None);
    }

    #[test]
    fn spring_forward_runs_skipped_minutes_shifted_by_the_gap() {
        // New York, 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00Z).
        assert_eq!(
            runs("30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z", 3),
            [
                "2024-03-10T07:30:00Z", // 02:30 "EST" = 03:30 EDT
                "2024-03-11T06:30:00Z", // 02:30 EDT
                "2024-03-12T06:30:00Z",
            ]
        );
        assert_eq!(
            runs("*/15 * * * *", "America/New_York", "2024-03-10T06:40:00Z", 3),
            ["2024-03-10T06:45:00Z", "2024-03-10T07:00:00Z", "2024-03-10T07:15:00Z"]
        );
        // 02:30 and 03:30 are the same instant that day: it runs once.
        assert_eq!(
            runs("30 2,3 * * *", "America/New_York", "2024-03-10T06:00:00Z", 3),
            ["2024-03-10T07:30:00Z", "2024-03-11T06:30:00Z", "2024-03-11T07:30:00Z"]
        );
        // London, 2024-03-31: 01:00 GMT becomes 02:00 BST (01:00Z).
        assert_eq!(
            runs("30 1 * * *", "Europe/London", "2024-03-30T12:00:00Z", 2),
            ["2024-03-31T01:30:00Z", "2024-04-01T00:30:00Z"]
        );
        assert_eq!(
            runs("0 * * * *", "Europe/London", "2024-03-30T23:30:00Z", 3),
            ["2024-03-31T00:00:00Z", "2024-03-31T01:00:00Z", "2024-03-31T02:00:00Z"]
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_minute_once_at_its_first_occurrence() {
        // New York, 2024-11-03: 02:00 EDT becomes 01:00 EST (06:00Z), so
        // 01:00-01:59 happens at 05:xxZ (EDT) and again at 06:xxZ (EST).
        assert_eq!(
            runs("30 1 * * *", "America/New_York", "2024-11-02T12:00:00Z", 3),
            ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z", "2024-11-05T06:30:00Z"]
        );
        // The repeated hour is not run again: 01:45 EDT, then 02:00 EST.
        assert_eq!(
            runs("*/15 * * * *", "America/New_York", "2024-11-03T05:40:00Z", 3),
            ["2024-11-03T05:45:00Z", "2024-11-03T07:00:00Z", "2024-11-03T07:15:00Z"]
        );
        // From inside the second pass: the first run after it, not (as
        // Celery) 01:15 EDT, which is before `after`.
        assert_eq!(
            next("*/15 * * * *", "America/New_York", "2024-11-03T06:05:00Z"),
            "2024-11-03T07:00:00Z"
        );
        // London, 2024-10-27: 02:00 BST becomes 01:00 GMT (01:00Z).
        assert_eq!(
            runs("30 1 * * *", "Europe/London", "2024-10-26T12:00:00Z", 2),
            ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"]
        );
        assert_eq!(
            runs("0 * * * *", "Europe/London", "2024-10-26T23:30:00Z", 3),
            ["2024-10-27T00:00:00Z", "2024-10-27T02:00:00Z", "2024-10-27T03:00:00Z"]
        );
        // Both passes match the wall clock.
        let c = cron("30 1 * * *");
        let ny = tz("America/New_York");
        assert!(c.matches(&ts("2024-11-03T05:30:00Z").to_zoned_datetime(ny.clone())));
        assert!(c.matches(&ts("2024-11-03T06:30:00Z").to_zoned_datetime(ny)));
    }

    #[test]
    fn python_int_follows_python() {
        for (s, v) in [
            ("0", Some(0)),
            ("007", Some(7)),
            ("+5", Some(5)),
            ("-5", Some(-5)),
            (" \t\n\x0b\x0c\r5\r", Some(5)),
            ("1_000", Some(1000)),
            ("1__0", None),
            ("_1", None),
            ("1_", None),
            ("+_1", None),
            ("+", None),
            ("", None),
            ("  ", None),
            ("1 2", None),
            ("+ 1", None),
            ("0x10", None),
            ("99999999999999999999999", Some(i64::MAX)),
        ] {
            assert_eq!(python_int(s), v, "{s:?}");
        }
    }
}
