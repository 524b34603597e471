//! The hub's crontab evaluator (src/hub/cron.rs) against Celery itself:
//! a few hundred seeded schedules, well-formed, mutated and hand-picked,
//! are given to the installed Celery (tests/hub/cron_oracle.py) and to
//! `Cron`; both must accept or refuse each alike, expand it to the same
//! sets, and give the same next runs from starts in zones with and
//! without daylight saving time (some within hours of a transition, some
//! at a month's or year's end), each run chained from the one before.
//!
//! The one expected difference, counted and checked: from inside the
//! second pass of a repeated hour Celery answers an instant before its
//! `last_run_at`; `Cron::next_after` answers the first run after `after`.
//!
//! Without python3 and Celery (`python3 -m pip install celery` is tried)
//! the test is skipped loudly, or fails under `CI=true`.

mod common;

use ferry::hub::cron::{Cron, Field};
use jiff::Timestamp;
use jiff::civil::date;
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const SEED: u64 = 0x0c0f_fee5_c4ed_2024;

/// Zones: none, Europe's and America's hour of DST, Lord Howe's half hour,
/// a half-hour offset without DST, Chile's transitions at midnight,
/// Chatham's at 02:45, and Troll's two hours.
const ZONES: [&str; 8] = [
    "UTC",
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
    "Antarctica/Troll",
];

/// Runs chained from each start.
const CHAIN: usize = 4;

const FIELDS: [(Field, &str); 5] = [
    (Field::Minute, "minute"),
    (Field::Hour, "hour"),
    (Field::DayOfWeek, "day_of_week"),
    (Field::DayOfMonth, "day_of_month"),
    (Field::MonthOfYear, "month_of_year"),
];

/// splitmix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// A number or (for days and months) a name of `field`, in range.
fn value(rng: &mut Rng, field: Field) -> String {
    let v = rng.range(field.min().into(), field.max().into());
    let names: &[&str] = match field {
        Field::DayOfWeek => &DAYS,
        Field::MonthOfYear => &MONTHS,
        _ => &[],
    };
    if !names.is_empty() && rng.below(2) == 0 {
        let full = names[(v - i64::from(field.min())) as usize];
        let name = if rng.below(3) == 0 { full } else { &full[..3] };
        return match rng.below(4) {
            0 => name.to_uppercase(),
            1 => name[..1].to_uppercase() + &name[1..],
            _ => name.to_string(),
        };
    }
    if rng.below(10) == 0 {
        format!("0{v}")
    } else {
        v.to_string()
    }
}

/// One list item: `*`, `*/s`, a value, `a-b` (wrapping when b < a) or
/// `a-b/s`.
fn item(rng: &mut Rng, field: Field) -> String {
    let span = i64::from(field.max() - field.min()) + 1;
    match rng.below(10) {
        0 => "*".into(),
        1 | 2 => format!("*/{}", rng.range(1, span + 2)),
        3 | 4 => value(rng, field),
        5..=7 => format!("{}-{}", value(rng, field), value(rng, field)),
        _ => format!(
            "{}-{}/{}",
            value(rng, field),
            value(rng, field),
            rng.range(1, span / 2 + 2)
        ),
    }
}

/// A well-formed field; the day and month fields are mostly `*`, so that
/// most schedules run often enough to be stepped through.
fn field_text(rng: &mut Rng, field: Field) -> String {
    let star = match field {
        Field::Minute => 15,
        Field::Hour => 25,
        _ => 55,
    };
    if rng.below(100) < star {
        return "*".into();
    }
    let n = rng.pick(&[1, 1, 1, 2, 3]);
    (0..n).map(|_| item(rng, field)).collect::<Vec<_>>().join(",")
}

/// `text` with one insertion, deletion or replacement, to probe the
/// parser's edges.
fn mutate(rng: &mut Rng, text: &str) -> String {
    const NOISE: [&str; 24] = [
        " ", "-", "/", ",", "*", "x", "_", "+", "\n", "\t", "0", "9", "a", "mon", "jan", "/0", "--", "//", ",,", "60",
        "7", "32", "13", ".",
    ];
    let mut s = text.to_string();
    let at = rng.below(s.len() as u64 + 1) as usize;
    match rng.below(3) {
        0 => s.insert_str(at, rng.pick(&NOISE)),
        1 if at < s.len() => {
            s.remove(at);
        }
        _ if at < s.len() => s.replace_range(at..=at, rng.pick(&NOISE)),
        _ => s.push_str(rng.pick(&NOISE)),
    }
    s
}

/// Hand-picked schedules (API order: minute, hour, day_of_week,
/// day_of_month, month_of_year): every error Celery knows, its quirks, and
/// the sparse and DST-sensitive ones.
const PICKED: &[[&str; 5]] = &[
    ["*", "*", "7", "*", "*"],
    ["*", "*", "1-7", "*", "*"],
    ["*", "*", "0-6", "*", "*"],
    ["*", "*", "6-0", "*", "*"],
    ["60", "*", "*", "*", "*"],
    ["*", "24", "*", "*", "*"],
    ["*", "*", "*", "0", "*"],
    ["*", "*", "*", "32", "*"],
    ["*", "*", "*", "*", "0"],
    ["*", "*", "*", "*", "13"],
    ["*/0", "*", "*", "*", "*"],
    ["*/", "*", "*", "*", "*"],
    ["1-5/", "*", "*", "*", "*"],
    ["*/-1", "*", "*", "*", "*"],
    ["1-", "*", "*", "*", "*"],
    ["-1", "*", "*", "*", "*"],
    ["-0", "*", "*", "*", "*"],
    [" -0", "*", "*", "*", "*"],
    ["", "*", "*", "*", "*"],
    [",", "*", "*", "*", "*"],
    ["1,,2", "*", "*", "*", "*"],
    ["1,", "*", "*", "*", "*"],
    ["*", "*", "mon-frx", "*", "*"],
    ["5/15", "*", "*", "*", "*"],
    ["*-5", "*", "*", "*", "*"],
    ["abc", "*", "*", "*", "*"],
    ["1.5", "*", "*", "*", "*"],
    ["**", "*", "*", "*", "*"],
    ["1-5/x", "*", "*", "*", "*"],
    ["*/x", "*", "*", "*", "*"],
    [" 5", "*", "*", "*", "*"],
    ["5 ", "*", "*", "*", "*"],
    ["\t5\n", "*", "*", "*", "*"],
    ["\x0b5\x0c", "*", "*", "*", "*"],
    ["\x1c5", "*", "*", "*", "*"],
    ["+5", "*", "*", "*", "*"],
    ["+-5", "*", "*", "*", "*"],
    ["1_0", "*", "*", "*", "*"],
    ["1__0", "*", "*", "*", "*"],
    ["_1", "*", "*", "*", "*"],
    ["*/1_5", "*", "*", "*", "*"],
    ["*/99999999999999999999", "*", "*", "*", "*"],
    ["99999999999999999999", "*", "*", "*", "*"],
    ["1-5 junk", "*", "*", "*", "*"],
    ["1-5junk", "*", "*", "*", "*"],
    ["1-2-3", "*", "*", "*", "*"],
    ["1-5/2-3", "*", "*", "*", "*"],
    ["*/5/2", "*", "*", "*", "*"],
    ["*/5 junk", "*", "*", "*", "*"],
    ["*\n", "*", "*", "*", "*"],
    ["* ", "*", "*", "*", "*"],
    [" *", "*", "*", "*", "*"],
    ["*", "*", "monkey", "*", "*"],
    ["*", "*", "Mon!", "*", "*"],
    ["*", "*", "ma", "*", "*"],
    ["*", "*", "mar", "*", "*"],
    ["*", "*", "dec", "*", "*"],
    ["*", "*", "*", "*", "mon"],
    ["*", "*", "*", "*", "sun"],
    ["jan", "*", "*", "*", "*"],
    ["0", "0", "*", "30", "feb"],
    ["0", "0", "*", "31", "apr,jun,sep,nov"],
    ["0", "0", "*", "31", "apr,jun,sep,nov,dec"],
    ["0", "0", "*", "29", "2"],
    ["0", "0", "mon", "29", "feb"],
    ["0", "0", "fri", "13", "*"],
    ["0", "8", "mon", "1-7", "*"],
    ["0", "0", "sunday", "1", "jan"],
    ["0", "0", "*", "31", "*"],
    ["59", "23", "*", "31", "12"],
    ["0", "0", "*", "1", "1"],
    ["30", "2", "*", "*", "*"],
    ["30", "1", "*", "*", "*"],
    ["30", "2,3", "*", "*", "*"],
    ["*/15", "*", "*", "*", "*"],
    ["*/15", "1", "*", "*", "*"],
    ["0", "*", "*", "*", "*"],
    ["45", "2", "*", "*", "*"],
    ["50", "3", "*", "*", "*"],
    ["0", "23", "*", "*", "*"],
    ["0", "0", "*", "*", "*"],
    ["10,35", "2", "*", "*", "*"],
    ["*/7", "*/5", "*", "*/10", "*/3"],
    ["*", "*", "*", "*", "*"],
    ["0", "0", "*", "*/1", "*"],
    ["0", "0", "*", "*", "*/1"],
];

/// Four starts in `tz`: anywhere in 2000-2040; within three hours of a
/// transition and within 40 minutes before one (when the zone has them);
/// around a month's last evening.
fn starts(rng: &mut Rng, tz: &TimeZone) -> Vec<i64> {
    let align = |rng: &mut Rng, t: i64| if rng.below(2) == 0 { t - t.rem_euclid(60) } else { t };
    let mut out = Vec::new();
    let t = rng.range(946_684_800, 2_208_988_800);
    out.push(align(rng, t));
    let from = Timestamp::from_second(rng.range(1_420_070_400, 2_051_222_400)).unwrap();
    match tz.following(from).next().map(|tr| tr.timestamp().as_second()) {
        Some(tr) => {
            let near = tr + rng.range(-3 * 3600, 3 * 3600);
            out.push(align(rng, near));
            let just_before = tr - rng.range(1, 40 * 60);
            out.push(align(rng, just_before));
        }
        None => {
            for _ in 0..2 {
                let t = rng.range(946_684_800, 2_208_988_800);
                out.push(align(rng, t));
            }
        }
    }
    let (y, m) = (rng.range(2001, 2039) as i16, rng.range(1, 12) as i8);
    let last = date(y, m, 1).last_of_month().at(23, 0, 0, 0);
    let t = tz.to_timestamp(last).unwrap().as_second() + rng.range(-2 * 3600, 2 * 3600);
    out.push(align(rng, t));
    out
}

/// Whether `t` is in the second pass of a repeated (fall back) local time.
fn second_pass(tz: &TimeZone, t: Timestamp) -> bool {
    match tz.to_ambiguous_timestamp(tz.to_datetime(t)).offset() {
        AmbiguousOffset::Fold { after, .. } => tz.to_offset(t) == after,
        _ => false,
    }
}

struct Case {
    fields: [String; 5],
    zone: &'static str,
    starts: Vec<i64>,
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(SEED);
    let mut specs: Vec<[String; 5]> = Vec::new();
    for _ in 0..320 {
        specs.push(FIELDS.map(|(f, _)| field_text(&mut rng, f)));
    }
    for _ in 0..200 {
        let mut s = FIELDS.map(|(f, _)| field_text(&mut rng, f));
        let i = rng.below(5) as usize;
        s[i] = mutate(&mut rng, &s[i]);
        specs.push(s);
    }
    specs.extend(PICKED.iter().map(|p| p.map(str::to_string)));
    specs
        .into_iter()
        .map(|fields| {
            let zone = rng.pick(&ZONES);
            let starts = starts(&mut rng, &TimeZone::get(zone).unwrap());
            Case { fields, zone, starts }
        })
        .collect()
}

/// Whether python3 can import Celery, installing it with pip if not.
fn celery_ready() -> bool {
    let import = || {
        Command::new("python3")
            .args(["-c", "import celery"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if import() {
        return true;
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "celery"])
        .status();
    common::require(
        import(),
        "the differential test of hub::cron needs python3 with Celery (python3 -m pip install celery failed)",
    )
}

fn local(t: i64, tz: &TimeZone) -> String {
    Timestamp::from_second(t)
        .unwrap()
        .to_zoned_datetime(tz.clone())
        .to_string()
}

#[test]
fn cron_agrees_with_celery() {
    if !celery_ready() {
        return;
    }
    let cases = cases();
    let input = json!({
        "cases": cases.iter().map(|c| json!({
            "fields": c.fields,
            "tz": c.zone,
            "starts": c.starts,
            "chain": CHAIN,
        })).collect::<Vec<_>>()
    });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hub/cron_oracle.py");
    let out = common::run_within(
        Command::new("python3").arg(&script),
        Some(input.to_string().as_bytes()),
        Duration::from_secs(600),
        Some("tests/hub/cron_oracle.py"),
    );
    assert!(
        out.status.success(),
        "cron_oracle.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oracle: Value = serde_json::from_slice(&out.stdout).expect("cron_oracle.py's JSON");
    let results = oracle["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len());

    let (mut refused, mut runs, mut second_pass_answers) = (0, 0, 0);
    // Runs across a transition, runs shifted out of a spring-forward gap
    // (their wall clock does not match the schedule), and runs at a
    // repeated local time.
    let (mut crossing, mut shifted, mut repeated) = (0, 0, 0);
    for (i, (case, theirs)) in cases.iter().zip(results).enumerate() {
        let [minute, hour, dow, dom, moy] = &case.fields;
        let what = format!(
            "spec #{i} minute={minute:?} hour={hour:?} day_of_week={dow:?} day_of_month={dom:?} month_of_year={moy:?}"
        );
        let cron = match (Cron::parse(minute, hour, dow, dom, moy), theirs.get("error")) {
            (Err(_), Some(_)) => {
                refused += 1;
                continue;
            }
            (Ok(c), None) => c,
            (Err(e), None) => panic!("{what}: ferry refuses it ({e}), Celery accepts it: {}", theirs["sets"]),
            (Ok(c), Some(e)) => panic!("{what}: ferry accepts it as {c:?}, Celery refuses it: {e}"),
        };
        for (field, name) in FIELDS {
            let ours: Vec<u64> = cron.values(field).map(u64::from).collect();
            let celery: Vec<u64> = theirs["sets"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(ours, celery, "{what}: the {name} sets differ (ferry, Celery)");
        }
        let tz = TimeZone::get(case.zone).unwrap();
        for (start, chain) in case.starts.iter().zip(theirs["runs"].as_array().unwrap()) {
            let mut after = *start;
            for celery in chain.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()) {
                let ts = Timestamp::from_second(after).unwrap();
                let ours = cron.next_after(ts, &tz).map(Timestamp::as_second);
                if celery <= after {
                    assert!(
                        second_pass(&tz, ts),
                        "{what} in {}: after {}, Celery answers {}, not later, outside a repeated hour",
                        case.zone,
                        local(after, &tz),
                        local(celery, &tz)
                    );
                    assert!(
                        ours.is_some_and(|o| o > after),
                        "{what}: ferry's {ours:?} after {after}"
                    );
                    second_pass_answers += 1;
                    break;
                }
                assert_eq!(
                    ours.map(|o| local(o, &tz)),
                    Some(local(celery, &tz)),
                    "{what} in {}: the next run after {} (ferry, Celery)",
                    case.zone,
                    local(after, &tz)
                );
                runs += 1;
                let at = Timestamp::from_second(celery).unwrap();
                if tz.following(ts).next().is_some_and(|tr| tr.timestamp() <= at) {
                    crossing += 1;
                }
                if !cron.matches(&at.to_zoned_datetime(tz.clone())) {
                    shifted += 1;
                }
                if tz.to_ambiguous_timestamp(tz.to_datetime(at)).is_ambiguous() {
                    repeated += 1;
                }
                after = celery;
            }
        }
    }
    eprintln!(
        "hub_cron: Celery {}: {} specs ({} refused by both, {} accepted with the same sets), \
         {runs} next runs equal ({crossing} across a transition, {shifted} shifted out of a gap, {repeated} at a repeated time), \
         {second_pass_answers} Celery answers before last_run_at in a repeated hour",
        oracle["celery"],
        cases.len(),
        refused,
        cases.len() - refused
    );
    assert!(runs > 3000, "only {runs} runs compared");
    assert!(refused > 60, "only {refused} refusals compared");
    assert!(
        crossing > 100 && shifted > 0 && repeated > 0,
        "too few runs near transitions"
    );
}
