//! [`HubClient`]: one method per call of the hub's REST API the client
//! makes, JSON over HTTP(S), with every failure a [`ClientError`] that
//! names the URL, the status and the hub's `detail`.
//!
//! HTTP is reqwest (rustls; already in the crate's tree through
//! object_store). Certificates are checked against the system's roots
//! (rustls-platform-verifier, which on Linux reads them with
//! rustls-native-certs, so `SSL_CERT_FILE` and `SSL_CERT_DIR` apply);
//! [`ClientOptions::verify_tls`] `false` accepts any certificate.

use super::error::ClientError;
use super::views::{FileRecordView, Job, NewClientKey, ProgressView, Submission, Tokens};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::time::Duration;

/// The API's base URL when none is configured (the seed's).
pub const DEFAULT_BASE_URL: &str = "http://localhost:8000/api";

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request may take, answer included (a long job list on a
/// slow hub is the longest).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// How the client presents itself.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Nothing (token issue only).
    None,
    /// `Authorization: Api-Key <key>`: a client key.
    ClientKey(String),
    /// `Authorization: Bearer <token>`: an access token (JWT); needed to
    /// make client keys.
    Bearer(String),
}

/// Where the hub is and how to talk to it.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The API's base URL (`https://hub:8000/api`). A URL without a path
    /// gets `/api`, as the seed's client does.
    pub base_url: String,
    /// Check the hub's certificate (false: accept any, for a self-signed
    /// hub; the connection is then open to a man in the middle).
    pub verify_tls: bool,
    /// The credentials sent with every request.
    pub credentials: Credentials,
}

/// What `POST /api/jobs/{id}/<action>/` asks of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// Stop it: queued tasks are refused, running ones finish.
    Cancel,
    /// Hold its tasks that have not started.
    Pause,
    /// Release a paused job.
    Resume,
    /// Run it again; `failed_only`: only the paths that failed.
    Resubmit {
        /// Only the paths that failed (`?failed_only=true`).
        failed_only: bool,
    },
}

impl JobAction {
    /// The path segment of the action.
    pub fn name(self) -> &'static str {
        match self {
            JobAction::Cancel => "cancel",
            JobAction::Pause => "pause",
            JobAction::Resume => "resume",
            JobAction::Resubmit { .. } => "resubmit",
        }
    }
}

/// Which jobs to list (`GET /api/jobs/`), newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    /// Any of these states (upper or lower case).
    pub states: Vec<String>,
    /// The workflow's name.
    pub workflow: Option<String>,
    /// The site's name.
    pub site: Option<String>,
    /// The queue's name.
    pub queue: Option<String>,
    /// At most this many (0: all).
    pub limit: usize,
}

/// A client of one hub's REST API.
pub struct HubClient {
    http: reqwest::Client,
    /// The base URL, ending in `/`.
    base: Url,
    auth: Option<String>,
}

/// A list page, as the hub pages lists.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    next: Option<String>,
    results: Vec<Box<RawValue>>,
}

/// The API's base URL with a trailing `/`; a URL without a path gets
/// `/api/`.
pub fn normalize_base_url(given: &str) -> Result<Url, ClientError> {
    let bad = |reason: String| ClientError::BadBaseUrl {
        url: given.to_string(),
        reason,
    };
    let mut url = Url::parse(given.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("no query or fragment, please".into()));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&match path.as_str() {
        "" => "/api/".to_string(),
        p => format!("{p}/"),
    });
    Ok(url)
}

/// The lowest-level cause of an HTTP error, the one that says what
/// happened (`Connection refused (os error 111)`).
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl HubClient {
    /// A client for the hub at `opts.base_url`.
    pub fn new(opts: &ClientOptions) -> Result<HubClient, ClientError> {
        let base = normalize_base_url(&opts.base_url)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("ferry-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tls_danger_accept_invalid_certs(!opts.verify_tls)
            .build()
            .map_err(|e| ClientError::Setup(root_cause(&e)))?;
        let auth = match &opts.credentials {
            Credentials::None => None,
            Credentials::ClientKey(k) => Some(format!("Api-Key {}", k.trim())),
            Credentials::Bearer(t) => Some(format!("Bearer {}", t.trim())),
        };
        Ok(HubClient { http, base, auth })
    }

    /// The API's base URL, ending in `/`.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("API paths are relative URLs")
    }

    /// Sends a request; the body of a 2xx answer, else the error.
    async fn send(&self, method: Method, url: Url, body: Option<&Value>) -> Result<bytes::Bytes, ClientError> {
        let shown = url.to_string();
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("accept", "application/json");
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("JSON values serialize"));
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: shown.clone(),
            reason: root_cause(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(bytes);
        }
        #[derive(Deserialize)]
        struct Detail {
            detail: Value,
        }
        let detail = match serde_json::from_slice::<Detail>(&bytes) {
            Ok(Detail {
                detail: Value::String(s),
            }) => s,
            Ok(Detail { detail }) => detail.to_string(),
            Err(_) => {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.trim();
                match text.char_indices().nth(200) {
                    Some((i, _)) => format!("{}...", &text[..i]),
                    None if text.is_empty() => "(no detail)".into(),
                    None => text.to_string(),
                }
            }
        };
        Err(ClientError::Status {
            method: method.to_string(),
            url: shown,
            status: status.as_u16(),
            detail,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let shown = url.to_string();
        let bytes = self.send(method, url, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url: shown,
            reason: e.to_string(),
        })
    }

    async fn job_call(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Job, ClientError> {
        let shown = url.to_string();
        let raw: Box<RawValue> = self.call(method, url, body).await?;
        Job::from_raw(raw, &shown)
    }

    /// Every item of a list, page by page (`page_size=0`: one page of
    /// all), up to `limit` (0: no limit).
    async fn list(&self, path: &str, query: &[(&str, &str)], limit: usize) -> Result<Vec<Box<RawValue>>, ClientError> {
        let mut url = self.url(path);
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
            let size = if limit == 0 { 0 } else { limit.min(100) };
            q.append_pair("page_size", &size.to_string());
        }
        let mut out = Vec::new();
        loop {
            let page: Page = self.call(Method::GET, url, None).await?;
            out.extend(page.results);
            if limit != 0 && out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
            match page.next {
                Some(next) => {
                    // The hub's `next` is built from its public URL, which
                    // may not be the one this client reaches it at: keep
                    // ours and take only the query.
                    let next = Url::parse(&next).map_err(|e| ClientError::BadAnswer {
                        url: path.to_string(),
                        reason: format!("`next` is not a URL: {e}"),
                    })?;
                    url = self.url(path);
                    url.set_query(next.query());
                }
                None => return Ok(out),
            }
        }
    }

    /// An access and a refresh token for a user's name and password.
    pub async fn tokens(&self, username: &str, password: &str) -> Result<Tokens, ClientError> {
        let body = json!({"username": username, "password": password});
        self.call(Method::POST, self.url("auth/token/"), Some(&body)).await
    }

    /// Makes a client key called `name` (the client must hold an access
    /// token: client keys cannot make client keys).
    pub async fn create_client_key(&self, name: &str) -> Result<NewClientKey, ClientError> {
        let url = self.url("auth/clientkeys/");
        let shown = url.to_string();
        let raw: Box<RawValue> = self.call(Method::POST, url, Some(&json!({"name": name}))).await?;
        #[derive(Deserialize)]
        struct Key {
            api_key: String,
        }
        let key: Key = serde_json::from_str(raw.get()).map_err(|e| ClientError::BadAnswer {
            url: shown,
            reason: format!("no client key: {e}"),
        })?;
        Ok(NewClientKey {
            api_key: key.api_key,
            raw,
        })
    }

    /// Runs a workflow on paths: the new job.
    pub async fn submit(&self, s: &Submission) -> Result<Job, ClientError> {
        let body = serde_json::to_value(s).expect("submissions serialize");
        self.job_call(Method::POST, self.url("file/workflow/"), Some(&body))
            .await
    }

    /// A job.
    pub async fn job(&self, id: i64) -> Result<Job, ClientError> {
        self.job_call(Method::GET, self.url(&format!("jobs/{id}/")), None).await
    }

    /// How far a job is.
    pub async fn progress(&self, id: i64) -> Result<ProgressView, ClientError> {
        self.call(Method::GET, self.url(&format!("jobs/{id}/progress/")), None)
            .await
    }

    /// Jobs, newest first.
    pub async fn jobs(&self, f: &JobFilter) -> Result<Vec<Job>, ClientError> {
        let mut query: Vec<(&str, &str)> = f.states.iter().map(|s| ("state", s.as_str())).collect();
        for (k, v) in [("workflow", &f.workflow), ("site", &f.site), ("queue", &f.queue)] {
            if let Some(v) = v {
                query.push((k, v));
            }
        }
        let url = self.url("jobs/").to_string();
        self.list("jobs/", &query, f.limit)
            .await?
            .into_iter()
            .map(|raw| Job::from_raw(raw, &url))
            .collect()
    }

    /// Cancels, pauses, resumes or resubmits a job: the job the hub
    /// answers with.
    pub async fn job_action(&self, id: i64, action: JobAction) -> Result<Job, ClientError> {
        let mut url = self.url(&format!("jobs/{id}/{}/", action.name()));
        if let JobAction::Resubmit { failed_only: true } = action {
            url.set_query(Some("failed_only=true"));
        }
        self.job_call(Method::POST, url, None).await
    }

    /// Up to `limit` failed and aborted files of a job.
    pub async fn failed_files(&self, id: i64, limit: usize) -> Result<Vec<FileRecordView>, ClientError> {
        let url = self.url("jobstats/").to_string();
        self.list("jobstats/", &[("job", &id.to_string())], limit)
            .await?
            .into_iter()
            .map(|raw| {
                serde_json::from_str(raw.get()).map_err(|e| ClientError::BadAnswer {
                    url: url.clone(),
                    reason: format!("not a file record: {e}"),
                })
            })
            .collect()
    }

    /// Every workflow, as the hub sends them.
    pub async fn workflows(&self) -> Result<Vec<Box<RawValue>>, ClientError> {
        self.list("workflows/", &[], 0).await
    }

    /// One workflow.
    pub async fn workflow(&self, id: i64) -> Result<Box<RawValue>, ClientError> {
        self.call(Method::GET, self.url(&format!("workflows/{id}/")), None)
            .await
    }

    /// Creates a workflow from its definition: the workflow.
    pub async fn create_workflow(&self, definition: &Value) -> Result<Box<RawValue>, ClientError> {
        self.call(Method::POST, self.url("workflows/"), Some(definition)).await
    }

    /// Changes a workflow (`fields` and `filter_rules` are replaced
    /// whole): the workflow.
    pub async fn update_workflow(&self, id: i64, changes: &Value) -> Result<Box<RawValue>, ClientError> {
        self.call(Method::PATCH, self.url(&format!("workflows/{id}/")), Some(changes))
            .await
    }

    /// Every task type with its pause, as the hub sends them.
    pub async fn tasktypes(&self) -> Result<Vec<Box<RawValue>>, ClientError> {
        self.list("tasktypes/", &[], 0).await
    }

    /// Pauses task type `name` cluster-wide (`reason` shown beside it), or
    /// resumes it: the type as the hub now has it.
    pub async fn tasktype_action(&self, name: &str, pause: Option<&str>) -> Result<Box<RawValue>, ClientError> {
        let (verb, body) = match pause {
            Some(reason) => ("pause", serde_json::json!({"reason": reason})),
            None => ("resume", serde_json::json!({})),
        };
        self.call(
            Method::POST,
            self.url(&format!("tasktypes/{name}/{verb}/")),
            Some(&body),
        )
        .await
    }

    /// Deletes a workflow.
    pub async fn delete_workflow(&self, id: i64) -> Result<(), ClientError> {
        self.send(Method::DELETE, self.url(&format!("workflows/{id}/")), None)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_get_api_when_they_have_no_path_and_a_trailing_slash() {
        let n = |s: &str| normalize_base_url(s).map(|u| u.to_string());
        assert_eq!(n("http://localhost:8000/api").unwrap(), "http://localhost:8000/api/");
        assert_eq!(n("http://10.0.0.1:8000").unwrap(), "http://10.0.0.1:8000/api/");
        assert_eq!(n("https://hub/").unwrap(), "https://hub/api/");
        assert_eq!(n("https://proxy/hub/api//").unwrap(), "https://proxy/hub/api/");
        assert!(n("ftp://hub/api").is_err());
        assert!(n("hub:8000").is_err());
        assert!(n("http://hub/api?x=1").is_err());
    }

    #[test]
    fn calls_join_the_base_path() {
        let c = HubClient::new(&ClientOptions {
            base_url: "https://proxy/hub/api".into(),
            verify_tls: true,
            credentials: Credentials::None,
        })
        .unwrap();
        assert_eq!(c.url("jobs/3/").as_str(), "https://proxy/hub/api/jobs/3/");
    }
}
