//! Logging of the daemons (`ferry agent`, `ferry hub serve`): structured
//! fields to the journal under systemd, text lines on stderr otherwise.

/// Starts logging for the daemon `identifier` (the journal's
/// `SYSLOG_IDENTIFIER`): to the journal with structured fields when
/// systemd connected stderr to it (`JOURNAL_STREAM`), otherwise as text
/// lines on stderr, coloured only when [`colour`] says so.
pub fn init(identifier: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,lapin=warn".into());
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| tracing_journald::layer().ok())
        .map(|l| l.with_syslog_identifier(identifier.into()));
    match journald {
        Some(layer) => tracing_subscriber::registry().with(filter).with(layer).init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
            .init(),
    }
}

/// Whether log lines carry ANSI colour: only on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
/// tracing-subscriber colours by default wherever the lines go, so a log
/// file, a pipe or the journal reading plain stderr would get escape
/// codes.
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
        assert!(!colour(false, Some("1".into())));
    }
}
