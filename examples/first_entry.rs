//! Time to first entry, for `scripts/bench-walk.sh`: runs a command
//! several times and measures, for each run, the time from just before the
//! spawn to the first byte arriving on the command's stdout (a pipe). The
//! child is killed once the first byte has arrived.
//!
//! ```text
//! first_entry [--runs N] [--warmup N] -- COMMAND [ARGS...]
//! ```
//!
//! Prints one line per run and then
//! `median_ms=... min_ms=... max_ms=... runs=N`.

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let mut runs = 11usize;
    let mut warmup = 1usize;
    let mut args = std::env::args_os().skip(1);
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--runs") => match args.next().and_then(|n| n.to_str()?.parse().ok()) {
                Some(n) if n > 0 => runs = n,
                _ => return usage(),
            },
            Some("--warmup") => match args.next().and_then(|n| n.to_str()?.parse().ok()) {
                Some(n) => warmup = n,
                None => return usage(),
            },
            Some("--") => {
                command.extend(args.by_ref());
                break;
            }
            _ => {
                command.push(a);
                command.extend(args.by_ref());
                break;
            }
        }
    }
    if command.is_empty() {
        return usage();
    }

    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let t = match first_byte(&command) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("first_entry: {}: {e}", command[0].to_string_lossy());
                return ExitCode::FAILURE;
            }
        };
        if i >= warmup {
            println!("run {}: {:.3} ms", i - warmup + 1, ms(t));
            times.push(t);
        }
    }
    times.sort();
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2
    };
    println!(
        "median_ms={:.3} min_ms={:.3} max_ms={:.3} runs={}",
        ms(median),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    );
    ExitCode::SUCCESS
}

/// Spawns the command and returns how long its first output byte took.
fn first_byte(command: &[std::ffi::OsString]) -> std::io::Result<Duration> {
    let t0 = Instant::now();
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut byte = [0u8; 1];
    let n = stdout.read(&mut byte)?;
    let elapsed = t0.elapsed();
    let _ = child.kill();
    drop(stdout);
    child.wait()?;
    if n == 0 {
        return Err(std::io::Error::other("the command wrote nothing"));
    }
    Ok(elapsed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn usage() -> ExitCode {
    eprintln!("usage: first_entry [--runs N] [--warmup N] -- COMMAND [ARGS...]");
    ExitCode::from(2)
}
