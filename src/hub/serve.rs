//! `ferry hub serve`: one process holding the HTTP API, the database, the
//! broker session (results, events, outbox) and the monitor.

use super::api::{ApiState, router};
use super::auth::{AuthError, Keys};
use super::metrics::HubMetrics;
use super::store::{Store, StoreError};
use super::{control, ingest, monitor, schedule, submit, workflows};
use crate::agent::broker::Session;
use crate::agent::{redact, systemd};
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// Why the hub cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The database cannot be opened or migrated.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The signing key cannot be read or made.
    #[error("{0}")]
    Key(#[from] AuthError),
    /// The address cannot be served.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// HTTPS is configured but the certificate or key cannot be used.
    #[error("{source_file}: tls_certificate/tls_key: {error}")]
    Tls {
        /// The configuration file.
        source_file: String,
        /// Why.
        error: super::tls::TlsError,
    },
}

/// Runs the hub until `stop` turns true.
pub async fn serve(config: Config, mut stop: watch::Receiver<bool>) -> Result<(), HubError> {
    let settings = config.hub.clone();
    let tls = match &settings.tls {
        Some((cert, key)) => Some(super::tls::acceptor(cert, key).map_err(|error| HubError::Tls {
            source_file: config.source.clone(),
            error,
        })?),
        None => None,
    };
    let broker_url = settings
        .broker_url
        .clone()
        .unwrap_or_else(|| config.agent.broker_url.clone());
    info!(database = %redact(&settings.database), broker = %redact(&broker_url), "ferry hub starting");
    let store = Store::open(&settings.database).await?;
    workflows::install_builtins(&store).await?;
    let key_dir = settings.key_dir.clone();
    let keys = tokio::task::spawn_blocking(move || Keys::load_or_create(&key_dir))
        .await
        .expect("key thread")?;
    let addr = settings.listen();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Listen { addr, source })?;
    let (session_tx, sessions) = watch::channel::<Option<Arc<Session>>>(None);
    let (up_tx, broker_up) = watch::channel(false);
    let outbox = Arc::new(Notify::new());
    let schedules = Arc::new(Notify::new());
    let metrics = Arc::new(HubMetrics::default());
    let configs = Arc::new(crate::hub::configs::Live::load(&store, &settings).await?);
    let heard = monitor::Shared::default();
    monitor::remember(&heard, &store).await?;
    let state = Arc::new(ApiState {
        store: store.clone(),
        keys,
        settings: settings.clone(),
        outbox: outbox.clone(),
        schedules: schedules.clone(),
        broker_up,
        session: sessions.clone(),
        tls: tls.is_some(),
        metrics: metrics.clone(),
        configs: configs.clone(),
    });
    tokio::spawn(submit::publish_outbox(
        store.clone(),
        outbox.clone(),
        sessions.clone(),
        settings.results_queue(),
    ));
    let online = monitor::Online::default();
    tokio::spawn(control::snapshots(
        store.clone(),
        settings.clone(),
        sessions.clone(),
        online.clone(),
    ));
    tokio::spawn(control::unparking(store.clone(), settings.clone(), sessions.clone()));
    tokio::spawn(crate::hub::alerts::run(
        store.clone(),
        settings.clone(),
        configs.clone(),
        sessions.clone(),
    ));
    tokio::spawn(crate::hub::housekeeping::run(store.clone(), configs.clone()));
    tokio::spawn(schedule::run(store.clone(), configs.clone(), outbox.clone(), schedules));
    tokio::spawn(crate::hub::bisync::run(store.clone(), outbox.clone()));
    tokio::spawn(monitor::flush(
        heard.clone(),
        store.clone(),
        configs.clone(),
        settings.auto_create_sites,
    ));
    tokio::spawn(
        metrics
            .clone()
            .refresh(store.clone(), configs.clone(), Duration::from_secs(5), sessions.clone()),
    );
    tokio::spawn(broker(
        broker_url,
        settings.clone(),
        store.clone(),
        session_tx,
        up_tx,
        (heard, online),
        metrics,
    ));
    tokio::spawn(systemd::watchdog());
    let app = router(state.clone(), super::ui::routes(state));
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(%addr, scheme, "serving the API");
    systemd::ready();
    systemd::status(&format!("serving on {addr} ({scheme})"));
    match tls {
        Some(acceptor) => super::tls::serve(listener, acceptor, app, stop).await,
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }
    }
    .map_err(|source| HubError::Listen { addr, source })?;
    systemd::stopping();
    info!("stopped");
    Ok(())
}

/// Keeps a broker session, and the results and events consumers on it,
/// reconnecting with backoff (0.1 s doubling to 30 s).
async fn broker(
    url: String,
    settings: crate::config::HubSettings,
    store: Store,
    sessions: watch::Sender<Option<Arc<Session>>>,
    up: watch::Sender<bool>,
    (heard, online): (monitor::Shared, monitor::Online),
    metrics: Arc<HubMetrics>,
) {
    let node = submit::origin();
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = match Session::connect(&url, &node).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "cannot reach the broker; jobs submitted meanwhile wait in the outbox");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        info!(broker = %redact(&url), "connected to the broker");
        sessions.send_replace(Some(session.clone()));
        up.send_replace(true);
        let queues = ingest::Queues {
            results: settings.results_queue(),
            rejected: settings.rejected_queue(),
        };
        let results = tokio::spawn(ingest::run(store.clone(), session.clone(), metrics.clone(), queues));
        let events = tokio::spawn(monitor::run(
            heard.clone(),
            online.clone(),
            session.clone(),
            settings.events_queue(),
        ));
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if !session.alive() || results.is_finished() || events.is_finished() {
                break;
            }
        }
        up.send_replace(false);
        sessions.send_replace(None);
        for (what, t) in [("results", results), ("events", events)] {
            if t.is_finished() {
                match t.await {
                    Ok(Err(e)) => warn!(consumer = what, error = %e, "a consumer stopped"),
                    Err(e) => warn!(consumer = what, error = %e, "a consumer failed"),
                    Ok(Ok(())) => {}
                }
            } else {
                t.abort();
            }
        }
        let _ = session.conn.close(200, "ferry hub: reconnecting".into()).await;
        warn!("lost the broker; reconnecting (unacknowledged results return to the queue)");
    }
}
