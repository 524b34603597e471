//! The `ferry` command line: it turns flags into the library's requests,
//! runs them, and maps how they ended to one set of exit statuses:
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | done |
//! | 1 | done, but some of the paths it worked on failed (unreadable paths of a scan, failed files of an operation, a manifest that cannot be read or is damaged) |
//! | 2 | nothing done: bad usage or setup (arguments, configuration, an unusable fileset or endpoint) |
//! | 3 | nothing done: another run holds the fileset's lock |
//! | 4 | `ferry client`: the wait for a job ended (`--timeout`) before the job; it goes on on the hub |
//!
//! For `ferry client`, whose work is a job on a hub, 0 is a job that
//! succeeded, 1 a job that ended otherwise (FAILURE, CANCELLED), 2 bad
//! usage, configuration, credentials or an error answer of the hub.

mod agent;
mod args;
mod client;
mod endpoint;
mod exit;
mod hub;
mod logging;
mod ops;
mod scan;
mod snapdiff;

use clap::{Parser, Subcommand};
use exit::Status;
use std::process::ExitCode;

/// High-throughput filesystem discovery and sync for HPC storage.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Scan(scan::ScanCmd),
    Snapdiff(snapdiff::SnapdiffCmd),
    Rotate(snapdiff::RotateCmd),
    Manifest(snapdiff::ManifestCmd),
    Journal(snapdiff::JournalCmd),
    Migrate(ops::MigrateCmd),
    /// Copy files' data to an endpoint and keep it on disk too.
    ///
    /// Like `ferry migrate` without the final step: the files stay whole,
    /// and are recorded as premigrated, so a later migrate only has to stub
    /// them (after checking that their content still matches the object).
    Premigrate(ops::MigrateCmd),
    Recall(ops::RecallCmd),
    ReverseStub(ops::ReverseStubCmd),
    Import(ops::ImportCmd),
    ImportBytes(ops::ImportBytesCmd),
    Move(ops::MoveCmd),
    Delete(ops::DeleteCmd),
    Unmanage(ops::UnmanageCmd),
    Stat(ops::StatCmd),
    RemoveFromCloud(ops::RemoveFromCloudCmd),
    MoveInCloud(ops::MoveInCloudCmd),
    EnsureInCloud(ops::EnsureInCloudCmd),
    SyncMetadata(ops::SyncMetadataCmd),
    Agent(agent::AgentCmd),
    #[command(subcommand)]
    Hub(hub::HubCmd),
    Endpoint(endpoint::EndpointCmd),
    Client(client::ClientCmd),
    #[command(hide = true)]
    GenTree(scan::GenTreeCmd),
}

/// Parses the arguments, runs the command, and exits with its status.
pub fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Scan(c) => scan::run(c),
        Command::Snapdiff(c) => snapdiff::run_snapdiff(c),
        Command::Rotate(c) => snapdiff::run_rotate(c),
        Command::Manifest(c) => snapdiff::run_manifest(c),
        Command::Journal(c) => snapdiff::run_journal(c),
        Command::Migrate(c) => ops::run_migrate(c, false),
        Command::Premigrate(c) => ops::run_migrate(c, true),
        Command::Recall(c) => ops::run_recall(c),
        Command::ReverseStub(c) => ops::run_reverse_stub(c),
        Command::Import(c) => ops::run_import(c),
        Command::ImportBytes(c) => ops::run_import_bytes(c),
        Command::Move(c) => ops::run_move(c),
        Command::Delete(c) => ops::run_delete(c),
        Command::Unmanage(c) => ops::run_unmanage(c),
        Command::Stat(c) => ops::run_stat(c),
        Command::RemoveFromCloud(c) => ops::run_remove_from_cloud(c),
        Command::MoveInCloud(c) => ops::run_move_in_cloud(c),
        Command::EnsureInCloud(c) => ops::run_ensure_in_cloud(c),
        Command::SyncMetadata(c) => ops::run_sync_metadata(c),
        Command::Agent(c) => agent::run(c),
        Command::Hub(c) => hub::run(c),
        Command::Endpoint(c) => endpoint::run(c),
        Command::Client(c) => client::run(c),
        Command::GenTree(c) => scan::run_gen_tree(c),
    };
    let status = match result {
        Ok(()) => Status::Success,
        Err(f) => {
            eprintln!("ferry: {}", f.message);
            f.status
        }
    };
    ExitCode::from(status as u8)
}
