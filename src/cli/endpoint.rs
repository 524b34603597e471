//! `ferry endpoint`: looking after an endpoint's store.

use super::args::ConfigArg;
use super::exit::Failure;
use clap::{Args, Subcommand};
use ferry::config::defaults;
use ferry::config::ini::parse_whole_seconds;
use ferry::endpoint::LeftoverKind;
use ferry::ops::OpContext;
use ferry::ops::check::{Action, CheckOptions, CheckReport, check};
use std::io::Write;
use std::time::Duration;

/// Look after an endpoint's store: find and remove what interrupted
/// writes left behind.
#[derive(Args)]
pub struct EndpointCmd {
    #[command(subcommand)]
    command: EndpointSub,
}

#[derive(Subcommand)]
enum EndpointSub {
    Check(CheckCmd),
}

/// List what interrupted writes left in an endpoint's store and, with
/// --repair, remove it.
///
/// The whole store is listed: a directory store's tree, or the S3 prefix and
/// its unfinished multipart uploads. Leftovers are staging files no upload
/// holds (`#staging/…`, and the `name#N` files older ferry versions
/// left beside objects), metadata sidecars no object names (`…#m`), multipart uploads never
/// completed, and objects whose metadata is missing or does not verify
/// (uncommitted). A repair removes a leftover only once it has stood for
/// --grace seconds, and an object only after reading every file under the
/// endpoint's root and finding none whose location points at it; S3 objects
/// without ferry's metadata are not ferry's and are only reported.
///
/// Exit status: 0 when nothing is left (or all of it was removed), 1 when
/// leftovers remain or part of the store could not be read, 2 on bad
/// usage or configuration.
#[derive(Args)]
pub struct CheckCmd {
    #[command(flatten)]
    config: ConfigArg,

    /// The endpoint (an [Endpoint NAME] section of the configuration).
    #[arg(long, value_name = "NAME")]
    endpoint: String,

    /// Remove the leftovers that may go.
    #[arg(long)]
    repair: bool,

    /// Seconds a leftover must have stood untouched before --repair
    /// removes it (writes still under way are younger).
    #[arg(long, value_name = "SECONDS", value_parser = grace_seconds,
          default_value_t = defaults::ENDPOINT_CHECK_GRACE.as_secs())]
    grace: u64,

    /// Write the report as one JSON document.
    #[arg(long)]
    json: bool,
}

fn grace_seconds(s: &str) -> Result<u64, String> {
    parse_whole_seconds(s).map(|d| d.as_secs()).map_err(|e| e.to_string())
}

/// `ferry endpoint …`.
pub fn run(c: EndpointCmd) -> Result<(), Failure> {
    match c.command {
        EndpointSub::Check(c) => run_check(c),
    }
}

fn run_check(c: CheckCmd) -> Result<(), Failure> {
    let config = c.config.load().map_err(Failure::setup)?;
    let ctx = OpContext::new(config, None).map_err(|e| Failure::setup(format!("cannot start: {e}")))?;
    let opts = CheckOptions {
        repair: c.repair,
        grace: Duration::from_secs(c.grace),
    };
    let report = check(&ctx, &c.endpoint, opts).map_err(Failure::setup)?;
    let mut out = std::io::stdout().lock();
    let written = if c.json {
        serde_json::to_writer(&mut out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        write_text(&mut out, &report)
    };
    written.map_err(|e| Failure::setup(format!("writing the report: {e}")))?;
    let remaining = report
        .leftovers
        .iter()
        .filter(|l| l.leftover.kind != LeftoverKind::Foreign && l.action != Action::Removed)
        .count();
    if remaining > 0 || !report.errors.is_empty() {
        return Err(Failure::paths(format!(
            "endpoint `{}`: {remaining} leftover(s) remain, {} part(s) unreadable",
            report.endpoint,
            report.errors.len()
        )));
    }
    Ok(())
}

fn write_text(out: &mut impl Write, r: &CheckReport) -> std::io::Result<()> {
    writeln!(
        out,
        "endpoint `{}`: {} committed object(s), {} byte(s); {} upload(s) under way; {} leftover(s)",
        r.endpoint,
        r.objects,
        r.bytes,
        r.in_progress,
        r.leftovers.len()
    )?;
    for l in &r.leftovers {
        let kind = serde_json::to_value(l.leftover.kind).unwrap_or_default();
        let action = serde_json::to_value(l.action).unwrap_or_default();
        write!(
            out,
            "{:<18} {:<16} {:>12} {:>8}s  {}",
            kind.as_str().unwrap_or("?"),
            action.as_str().unwrap_or("?"),
            l.leftover.size,
            l.leftover.age.as_secs(),
            l.leftover.name
        )?;
        if let Some(d) = &l.leftover.detail {
            write!(out, "  ({d})")?;
        }
        if let Some(e) = &l.error {
            write!(out, "  error: {e}")?;
        }
        writeln!(out)?;
    }
    if let Some(n) = r.files_scanned {
        writeln!(out, "read the location xattrs of {n} local file(s)")?;
    }
    for e in &r.errors {
        writeln!(out, "unreadable: {e}")?;
    }
    Ok(())
}
