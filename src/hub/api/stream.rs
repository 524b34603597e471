//! Lists read whole (`page_size=0`) written while they are read.
//!
//! The seed's `page_size=0` returns every row; a job's tasks or failed
//! files can be millions. The envelope is the paged one
//! (`{count, next: null, previous: null, results: [...], ...}`), but the
//! rows come from the store through a bounded channel
//! ([`crate::hub::store::jobs::Rows`]) and leave as chunks of about
//! [`CHUNK`] bytes through another, so the hub holds a few hundred rows
//! and a few chunks whatever the length, and a slow client slows the
//! read instead of growing a buffer.

use super::http::{ApiError, ApiResult, Paging};
use crate::hub::store::jobs::Rows;
use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use tokio::sync::mpsc;

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 64 << 10;

/// Chunks in flight to the client.
const CHUNKS: usize = 4;

/// Members written after `results`, once every row has been.
pub type Tail = Vec<(&'static str, Value)>;

/// Answers a whole list: `count` rows from `rows`, each turned into its
/// API object by `each`, then the members `tail` returns. A page other
/// than 1 does not exist (404, as for a paged list past its end). An
/// error after the first bytes cannot change the status any more: it is
/// logged, and the body is cut off, so the client sees invalid JSON
/// rather than a short list.
pub fn respond<T, O, F, Fut>(
    paging: &Paging,
    count: i64,
    mut rows: Rows<T>,
    mut each: F,
    tail: impl FnOnce() -> Tail + Send + 'static,
) -> ApiResult<Response>
where
    T: Send + 'static,
    O: Serialize + Send,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = ApiResult<O>> + Send,
{
    if paging.page > 1 {
        return Err(ApiError::not_found("page: Invalid page."));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS);
    let mut w = Writer {
        tx,
        buf: format!("{{\"count\":{count},\"next\":null,\"previous\":null,\"results\":[").into_bytes(),
        first: true,
    };
    tokio::spawn(async move {
        while let Some(row) = rows.recv().await {
            let out = match row {
                Ok(r) => each(r).await,
                Err(e) => return w.fail(e.to_string()).await,
            };
            match out {
                Ok(o) => w.push(&o),
                Err(e) => return w.fail(e.detail).await,
            }
            if w.buf.len() >= CHUNK && !w.flush().await {
                // The client is gone.
                return;
            }
        }
        w.finish(tail()).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Ok(Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .expect("a valid response"))
}

struct Writer {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    first: bool,
}

impl Writer {
    /// Adds one result.
    fn push<O: Serialize>(&mut self, o: &O) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        serde_json::to_writer(&mut self.buf, o).expect("API objects serialize");
    }

    /// Sends what is gathered; false once the client is gone.
    async fn flush(&mut self) -> bool {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
        self.tx.send(Ok(Bytes::from(chunk))).await.is_ok()
    }

    async fn finish(mut self, tail: Tail) {
        self.buf.push(b']');
        for (k, v) in tail {
            self.buf.extend_from_slice(format!(",\"{k}\":").as_bytes());
            serde_json::to_writer(&mut self.buf, &v).expect("JSON values serialize");
        }
        self.buf.push(b'}');
        self.flush().await;
    }

    async fn fail(self, e: String) {
        tracing::warn!(error = %e, "a list read whole failed midway; its response is cut off");
        let _ = self.tx.send(Err(std::io::Error::other(e))).await;
    }
}
