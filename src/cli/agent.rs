//! `ferry agent`: load the configuration, start logging, run the daemon
//! until SIGTERM or SIGINT.

use super::args::ConfigArg;
use super::exit::Failure;
use clap::Args;
use ferry::agent::{self, systemd};

/// Run the node-local agent: consume tasks from RabbitMQ and run them.
///
/// Serves one queue per enabled function of each configured queue,
/// `<site>.<queue>#<function>` (e.g. london.default#worker), speaking
/// Celery's message protocol v2, so a Celery client or a hub can send it
/// `dynamo.tasks.*` tasks. Results go to each task's `reply_to` queue as
/// Celery's rpc:// backend expects; heartbeats and task events go to the
/// `celeryev` exchange. Stops cleanly on SIGTERM or SIGINT: running tasks
/// finish and report, waiting ones go back to their queues.
///
/// Configuration: `[settings]` (site, broker_url, threads, batching) and
/// `[Queue <name>]` sections in /etc/ferry/ferry.conf; see
/// docs/configuration.md and docs/agent.md. Logs go to stderr (the journal
/// under systemd); RUST_LOG=debug shows more.
#[derive(Args)]
pub struct AgentCmd {
    #[command(flatten)]
    config: ConfigArg,

    /// Check the configuration, print the queues that would be consumed
    /// (as JSON), and exit.
    #[arg(long)]
    check: bool,
}

/// Runs `ferry agent`.
pub fn run(c: AgentCmd) -> Result<(), Failure> {
    let config = c.config.load().map_err(Failure::setup)?;
    let consumers = config.consumers().map_err(Failure::setup)?;
    if c.check {
        let list: Vec<_> = consumers
            .iter()
            .map(|s| serde_json::json!({"queue": s.queue, "function": s.function.as_str(), "threads": s.threads}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"node": agent::node_name(&config), "broker": agent::redact(&config.agent.broker_url), "consumers": list})
        );
        return Ok(());
    }
    super::logging::init("ferry-agent");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ferry-agent")
        .enable_all()
        .build()
        .map_err(|e| Failure::setup(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let (handle, serve) = agent::prepare(config).map_err(Failure::setup)?;
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            handle.stop();
        });
        systemd::ready();
        serve.await;
        Ok(())
    })
}
