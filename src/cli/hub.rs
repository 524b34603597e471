//! `ferry hub`: run the coordinator, and manage its users.

use super::args::ConfigArg;
use super::exit::Failure;
use clap::{Args, Subcommand};
use ferry::config::hub::parse_database;
use ferry::hub::{auth, serve, store::Store};
use std::io::BufRead;

/// The coordinator of an installation's agents.
#[derive(Subcommand)]
pub enum HubCmd {
    Serve(ServeCmd),
    Adduser(AdduserCmd),
    /// Print the API's OpenAPI document (as served at /api/openapi.json).
    #[command(hide = true)]
    Openapi,
}

/// Serve the hub: the REST API (Ngenea Hub's shapes, under /api/), its
/// database, and the broker side that starts jobs and counts their
/// results.
///
/// Settings come from the `[hub]` section of the configuration file
/// (database, broker_url, listen, key_dir, node_health_last_heartbeat_interval,
/// task_invalidation_timeout, auto_create_sites); flags override them.
/// The database is created and migrated on first start: an SQLite file by
/// default (/var/lib/ferry/hub.db), or PostgreSQL by URL. Without TLS the
/// hub listens on 127.0.0.1:8000. Stops on SIGTERM or SIGINT; nothing is
/// lost by a stop or a crash (results wait in the broker's durable
/// queue). See docs/hub.md.
#[derive(Args)]
pub struct ServeCmd {
    #[command(flatten)]
    config: ConfigArg,

    /// Database: sqlite:///path, an absolute path, or postgres://user@host/db.
    #[arg(long, value_name = "URL", value_parser = |s: &str| parse_database(s).map_err(|e| e.to_string()))]
    database: Option<String>,

    /// Address to listen on, e.g. 0.0.0.0:8000.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
}

/// Create a user of the hub, or set an existing user's password.
///
/// The password is read from the first line of standard input (so it
/// never shows in the process list or the shell's history):
/// `echo "$PASSWORD" | ferry hub adduser admin --admin`.
#[derive(Args)]
pub struct AdduserCmd {
    #[command(flatten)]
    config: ConfigArg,

    /// Database (as for `ferry hub serve`).
    #[arg(long, value_name = "URL", value_parser = |s: &str| parse_database(s).map_err(|e| e.to_string()))]
    database: Option<String>,

    /// The user's name.
    username: String,

    /// The user administers the hub (sees every client key).
    #[arg(long)]
    admin: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferry-hub")
        .enable_all()
        .build()
        .map_err(|e| Failure::setup(format!("cannot start the runtime: {e}")))
}

/// Runs `ferry hub ...`.
pub fn run(c: HubCmd) -> Result<(), Failure> {
    match c {
        HubCmd::Serve(c) => run_serve(c),
        HubCmd::Adduser(c) => run_adduser(c),
        HubCmd::Openapi => {
            let spec = ferry::hub::api::openapi()
                .to_pretty_json()
                .map_err(|e| Failure::setup(format!("cannot write the document: {e}")))?;
            println!("{spec}");
            Ok(())
        }
    }
}

fn run_serve(c: ServeCmd) -> Result<(), Failure> {
    let mut config = c.config.load().map_err(Failure::setup)?;
    if let Some(d) = c.database {
        config.hub.database = d;
    }
    if c.listen.is_some() {
        config.hub.listen = c.listen;
    }
    super::logging::init("ferry-hub");
    runtime()?.block_on(async move {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop_tx.send_replace(true);
        });
        serve::serve(config, stop).await.map_err(Failure::setup)
    })
}

fn run_adduser(c: AdduserCmd) -> Result<(), Failure> {
    let mut config = c.config.load().map_err(Failure::setup)?;
    if let Some(d) = c.database {
        config.hub.database = d;
    }
    ferry::config::valid_name(&c.username).map_err(|e| Failure::setup(format!("username: {e}")))?;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("password for {}: ", c.username);
    }
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| Failure::setup(format!("cannot read the password: {e}")))?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.len() < 8 {
        return Err(Failure::setup("the password must have 8 characters or more"));
    }
    let hash = auth::hash_password(password).map_err(Failure::setup)?;
    runtime()?.block_on(async move {
        let store = Store::open(&config.hub.database).await.map_err(Failure::setup)?;
        let id = store
            .put_user(&c.username, &hash, c.admin)
            .await
            .map_err(Failure::setup)?;
        println!(
            "{}",
            serde_json::json!({"id": id, "username": c.username, "admin": c.admin})
        );
        Ok(())
    })
}
