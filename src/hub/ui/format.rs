//! How the web page shows numbers, times, durations, states and paths:
//! small pure functions, so every page shows them alike and tests can
//! pin them down.

use crate::task::surrogate;

/// `1234567` as `1,234,567` (a storage admin reads counts of millions).
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units with three significant digits at most:
/// `512 B`, `1.5 KiB`, `4.85 GiB`, `12.3 TiB` (a storage admin's units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let text = match v {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    };
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    };
    format!("{text} {}", UNITS[unit])
}

/// `n` and its noun, singular or plural: `1 rule`, `2 rules`, `1,000 rules`.
pub fn count(n: i64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// A percentage with one decimal at most: `42.5 %`, `100 %`.
pub fn percent(p: f64) -> String {
    let p = (p * 10.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

/// A moment, as the page shows it: UTC ISO 8601 to the second, and its
/// age from now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    /// `2026-12-04T23:36:02Z`.
    pub iso: String,
    /// The full API form (`2026-12-04T23:36:02.896541Z`), for `datetime=`.
    pub exact: String,
    /// `3 min ago`.
    pub age: String,
}

/// The moment `us` (µs since the epoch) seen at `now` (µs).
pub fn moment(us: i64, now: i64) -> Moment {
    let t = jiff::Timestamp::from_microsecond(us).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Moment {
        iso: format!("{:.0}", t.round(jiff::Unit::Second).unwrap_or(t)),
        exact: format!("{t:.6}"),
        age: age(now - us),
    }
}

/// How long ago something was, `us` microseconds before now: `just now`,
/// `12 s ago`, `3 min ago`, `5 h ago`, `2 days ago` (`in 3 s` for a
/// moment ahead of the hub's clock).
pub fn age(us: i64) -> String {
    let s = us / 1_000_000;
    let ahead = s < 0;
    let s = s.abs();
    let text = match s {
        0..=1 if !ahead => return "just now".into(),
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        86_400..=172_799 => "1 day".into(),
        _ => format!("{} days", thousands(s / 86_400)),
    };
    if ahead {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A duration in seconds, in the two largest units: `0.4 s`, `42 s`,
/// `3 min 05 s`, `2 h 03 min`, `3 d 04 h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "—".into();
    }
    if secs < 10.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as i64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {:02} h", thousands(s / 86_400), s % 86_400 / 3600),
    }
}

/// The CSS class of a job or task state's badge (`st-success`); an
/// unknown state gets `st-unknown` (its name still shows in words).
pub fn state_class(state: &str) -> &'static str {
    match state {
        "PENDING" => "st-pending",
        "STARTED" => "st-started",
        "SUCCESS" => "st-success",
        "FAILURE" => "st-failure",
        "ERROR" => "st-error",
        "SKIPPED" => "st-skipped",
        "ABORTED" => "st-aborted",
        "PAUSING" => "st-pausing",
        "PAUSED" => "st-paused",
        "CANCELLED" => "st-cancelled",
        "DEQUEUING" => "st-dequeuing",
        _ => "st-unknown",
    }
}

/// Text to show in a page, with what would be invisible or misleading
/// made visible: a backslash as `\\`, control characters as JSON escapes
/// (`\n`, `\t`, `\u001b`), and the bidirectional overrides that could
/// make a name read backwards as `\u202e`. HTML escaping is the
/// template's job, not this.
pub fn visible(s: &str) -> String {
    if s.chars().all(|c| !c.is_control() && c != '\\' && !is_bidi(c)) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_bidi(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Path bytes as text: UTF-8 as [`visible`] shows it, every other byte as
/// the API's `\udcNN` escape (docs/json.md).
pub fn path_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&visible(chunk.valid()));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\udc{byte:02x}"));
        }
    }
    out
}

/// A path stored as JSON string text in the surrogateescape form (the
/// jobstats table), as text; text that is not such a string is shown as
/// it is.
pub fn json_path(text: &str) -> String {
    match surrogate::decode(text) {
        Ok(bytes) => path_bytes(&bytes),
        Err(_) => visible(text),
    }
}

/// A path held as a JSON value (a string, or a path object `{"path":
/// ...}`), as text.
pub fn value_path(v: &serde_json::Value) -> String {
    let p = v.get("path").unwrap_or(v);
    match p.as_str() {
        Some(s) => visible(s),
        None => visible(&p.to_string()),
    }
}

/// A JSON value as short text: strings without quotes, the rest as JSON.
pub fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => visible(s),
        serde_json::Value::Null => "—".into(),
        other => visible(&other.to_string()),
    }
}

/// JSON object `v` as an editor shows it: indented, its keys in `order`
/// (keys not named there are left out), each once.
pub fn ordered_json(v: &serde_json::Value, order: &[&str]) -> String {
    let keys: Vec<&str> = order.iter().copied().filter(|k| v.get(k).is_some()).collect();
    let mut out = String::from("{\n");
    for (i, k) in keys.iter().enumerate() {
        let value = serde_json::to_string_pretty(&v[k]).expect("JSON values serialize");
        out.push_str(&format!(
            "  {}: {}",
            serde_json::Value::from(*k),
            value.replace('\n', "\n  ")
        ));
        out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5_210_334_551), "4.85 GiB");
        assert_eq!(bytes(100 * 1024 * 1024), "100 MiB");
        assert_eq!(bytes(u64::MAX), "16 EiB");
    }

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-12_345), "-12,345");
        assert_eq!(thousands(i64::MIN), "-9,223,372,036,854,775,808");
        assert_eq!(count(1, "rule", "rules"), "1 rule");
        assert_eq!(count(0, "rule", "rules"), "0 rules");
        assert_eq!(count(1200, "consumer", "consumers"), "1,200 consumers");
        assert_eq!(percent(42.46), "42.5 %");
        assert_eq!(percent(100.0), "100 %");
        assert_eq!(percent(0.04), "0 %");
    }

    #[test]
    fn times_are_utc_iso_with_their_age() {
        let t = 1_764_890_162_896_541; // 2025-12-04T23:16:02.896541Z
        let m = moment(t, t + 185_000_000);
        assert_eq!(m.iso, "2025-12-04T23:16:03Z");
        assert_eq!(m.exact, "2025-12-04T23:16:02.896541Z");
        assert_eq!(m.age, "3 min ago");
        assert_eq!(age(500_000), "just now");
        assert_eq!(age(12_000_000), "12 s ago");
        assert_eq!(age(7_200_000_000), "2 h ago");
        assert_eq!(age(86_400_000_000), "1 day ago");
        assert_eq!(age(3 * 86_400_000_000), "3 days ago");
        assert_eq!(age(-3_000_000), "in 3 s");
    }

    #[test]
    fn durations_in_two_units() {
        assert_eq!(duration(0.42), "0.4 s");
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(7380.0), "2 h 03 min");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3 d 04 h");
        assert_eq!(duration(-1.0), "—");
    }

    #[test]
    fn paths_show_controls_and_foreign_bytes_as_escapes() {
        assert_eq!(visible("/data/a b"), "/data/a b");
        assert_eq!(visible("a\nb\t\\c\u{1b}"), "a\\nb\\t\\\\c\\u001b");
        assert_eq!(visible("evil\u{202e}txt.exe"), "evil\\u202etxt.exe");
        // Markup is left to the template's escaping.
        assert_eq!(visible("<b>\"'&"), "<b>\"'&");
        assert_eq!(path_bytes(b"/d/caf\xc3\xa9\xff\n"), "/d/café\\udcff\\n");
        assert_eq!(json_path(r#""/d/x\udcff<y>\n""#), "/d/x\\udcff<y>\\n");
        assert_eq!(json_path("not json"), "not json");
        assert_eq!(value_path(&serde_json::json!({"path": "/p\"q"})), "/p\"q");
        assert_eq!(value_path(&serde_json::json!("/p")), "/p");
        assert_eq!(value_text(&serde_json::json!(["a", 1])), "[\"a\",1]");
    }

    #[test]
    fn every_state_has_a_colour() {
        for st in crate::hub::store::jobs::state::ALL
            .iter()
            .chain(crate::hub::store::jobs::task_state::ALL)
        {
            assert_ne!(state_class(st), "st-unknown", "{st}");
        }
        assert_eq!(state_class("WHATEVER"), "st-unknown");
    }
}
