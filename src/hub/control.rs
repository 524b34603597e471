//! Cancelling jobs on the agents: control messages on the fanout
//! exchange every agent listens to ([`CONTROL_EXCHANGE`]). A cancel names
//! the job's root task ids (unique across hubs sharing a broker, unlike
//! job ids); every task of the job carries its root's id, so an agent
//! refuses each one it is given (answering REVOKED) and a running
//! discovery stops publishing. The active set is repeated every
//! [`SNAPSHOT_EVERY`], so an agent that starts after the cancel learns
//! it too.

use super::store::{Store, now_us};
use crate::agent::broker::Session;
use crate::config::defaults::{CANCEL_MEMORY, CONTROL_EXCHANGE};
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How often the set of cancelled roots is sent again.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// How long after a job ended as CANCELLED its roots are still sent (a
/// discovery that ran twice may have left children of its other run
/// queued).
const KEEP_AFTER_END: Duration = Duration::from_secs(3600);

fn until() -> u64 {
    jiff::Timestamp::now().as_second() as u64 + CANCEL_MEMORY.as_secs()
}

/// The cancel message for `roots`.
pub fn cancel_message(roots: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"op": "cancel", "roots": roots, "until": until()})).expect("json")
}

/// The snapshot message for `roots`.
pub fn snapshot_message(roots: &[String]) -> Vec<u8> {
    let u = until();
    let cancel: Vec<_> = roots
        .iter()
        .map(|r| serde_json::json!({"root": r, "until": u}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"op": "snapshot", "cancel": cancel})).expect("json")
}

/// Publishes a control message, confirmed.
pub async fn publish(session: &Session, body: &[u8]) -> Result<(), crate::agent::broker::BrokerError> {
    let ch = session.channel().await?;
    ch.exchange_declare(
        CONTROL_EXCHANGE.into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "declared".into()).await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(1);
    session.publish_confirmed(CONTROL_EXCHANGE, "", body, props).await
}

/// Sends the snapshot of cancelled roots every [`SNAPSHOT_EVERY`] (when
/// there are any), and at once when a node comes online (it may have been
/// away for a cancel, and waits for this answer before taking tasks).
pub async fn snapshots(
    store: Store,
    sessions: watch::Receiver<Option<Arc<Session>>>,
    online: Arc<tokio::sync::Notify>,
) {
    loop {
        // A node coming online waits for a snapshot before it takes tasks
        // (the agent's `control_wait`): it gets one even when empty.
        let asked = tokio::select! {
            _ = tokio::time::sleep(SNAPSHOT_EVERY) => false,
            _ = online.notified() => true,
        };
        let Some(session) = sessions.borrow().clone() else {
            continue;
        };
        let since = now_us() - KEEP_AFTER_END.as_micros() as i64;
        match store.cancelled_roots(since).await {
            Ok(roots) if roots.is_empty() && !asked => {}
            Ok(roots) => {
                if let Err(e) = publish(&session, &snapshot_message(&roots)).await {
                    warn!(error = %e, "cannot send the cancel snapshot; next time");
                }
            }
            Err(e) => warn!(error = %e, "cannot read cancelled jobs"),
        }
    }
}
