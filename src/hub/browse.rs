//! Asking a site to list a directory (`GET /api/file/`): a
//! `dynamo.tasks.browse` task on the site's `default#interactive` queue
//! (003:L9942), answered to a private queue of this request and waited for
//! up to `stat_timeout`.
//!
//! The question is not work of any job: it has no job id, the hub records
//! nothing of it, and it expires in the broker with the wait, so a site
//! that is down does not find a pile of old questions when it comes back.
//! It is published `mandatory`: with no agent of the site ever started
//! (no queue to take it), the answer is at once that nobody serves it.

use crate::agent::broker::{BrokerError, Session, task_properties};
use crate::agent::celery::root_task;
use crate::config::{Function, queue_name};
use crate::task::TaskName;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;

/// Why a site gave no listing.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// The broker is down or refused the question.
    #[error("cannot ask site {site}: {source}")]
    Broker {
        /// The site.
        site: String,
        /// What the broker said.
        #[source]
        source: BrokerError,
    },
    /// No agent of the site has ever served browsing.
    #[error("no agent of site {0} serves browsing (its default#interactive queue does not exist)")]
    NoQueue(String),
    /// The broker connection went while waiting.
    #[error("lost the broker while waiting for site {0}")]
    Lost(String),
    /// No answer in time.
    #[error("site {site} did not answer within {seconds} s (stat_timeout)")]
    Timeout {
        /// The site.
        site: String,
        /// The wait.
        seconds: u64,
    },
    /// The site answered that it could not list the path.
    #[error("{message}")]
    Failed {
        /// The agent's reason (with its `(os error N)`).
        message: String,
    },
}

impl From<(String, lapin::Error)> for BrowseError {
    fn from((site, e): (String, lapin::Error)) -> BrowseError {
        BrowseError::Broker {
            site,
            source: BrokerError::Amqp(e),
        }
    }
}

/// A Celery result document, as much as is read here.
#[derive(Deserialize)]
struct Answer<'a> {
    status: String,
    task_id: String,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

/// An exception document's message.
#[derive(Deserialize)]
struct Exception {
    #[serde(default)]
    exc_message: Vec<String>,
}

/// Asks `site` to browse with `kwargs` (a JSON object: `paths` and the
/// listing's arguments); the agent's listing document.
pub async fn ask(
    session: &Session,
    site: &str,
    kwargs: &str,
    origin: &str,
    timeout: Duration,
) -> Result<Vec<u8>, BrowseError> {
    let broker = |e| BrowseError::from((site.to_string(), e));
    let ch = session.channel().await.map_err(broker)?;
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let reply = ch
        .queue_declare("".into(), private, FieldTable::default())
        .await
        .map_err(broker)?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut answers = ch
        .basic_consume(reply.name().clone(), "".into(), no_ack, FieldTable::default())
        .await
        .map_err(broker)?;
    let id = uuid::Uuid::new_v4().to_string();
    let msg = root_task(id.clone(), TaskName::Browse.as_str(), kwargs, &[], origin);
    let props = task_properties(&id, Some(reply.name().as_str()), &msg.headers)
        .with_expiration(timeout.as_millis().to_string().into());
    let queue = queue_name(site, "default", Function::Interactive);
    match session.publish_mandatory_confirmed("", &queue, &msg.body, props).await {
        Ok(()) => {}
        Err(BrokerError::Unroutable) => return Err(BrowseError::NoQueue(site.to_string())),
        Err(e) => {
            return Err(BrowseError::Broker {
                site: site.to_string(),
                source: e,
            });
        }
    }
    let waited = tokio::time::timeout(timeout, async {
        while let Some(d) = answers.next().await {
            let d = d.map_err(broker)?;
            let Ok(a) = serde_json::from_slice::<Answer<'_>>(&d.data) else {
                continue;
            };
            if a.task_id != id {
                continue;
            }
            let result = a.result.map_or("null", RawValue::get);
            return match a.status.as_str() {
                "SUCCESS" => Ok(result.as_bytes().to_vec()),
                _ => Err(BrowseError::Failed {
                    message: serde_json::from_str::<Exception>(result)
                        .ok()
                        .and_then(|e| e.exc_message.into_iter().next())
                        .unwrap_or_else(|| format!("the browse task ended {}", a.status)),
                }),
            };
        }
        Err(BrowseError::Lost(site.to_string()))
    })
    .await;
    let _ = ch.close(200, "browse answered".into()).await;
    waited.unwrap_or_else(|_| {
        Err(BrowseError::Timeout {
            site: site.to_string(),
            seconds: timeout.as_secs(),
        })
    })
}
