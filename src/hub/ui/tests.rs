//! The web page through the hub's whole router, in process: log in and
//! its cookies, redirects to the log in page, CSRF and origin checks,
//! escaping, static files, the workflow editor, and the jobs page's time
//! with 100,000 jobs.

use crate::config::HubSettings;
use crate::hub::api::{ApiState, router};
use crate::hub::auth::{Keys, hash_password};
use crate::hub::metrics::HubMetrics;
use crate::hub::store::Store;
use crate::hub::store::jobs::{NewJob, Owner, RootTask};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

struct Hub {
    app: Router,
    state: Arc<ApiState>,
    _dir: tempfile::TempDir,
}

async fn hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}/hub.db", dir.path().display()))
        .await
        .unwrap();
    crate::hub::workflows::install_builtins(&store).await.unwrap();
    store
        .put_user("admin", &hash_password("correct horse").unwrap(), true)
        .await
        .unwrap();
    let keys = Keys::load_or_create(&dir.path().join("keys")).unwrap();
    let (_, broker_up) = watch::channel(false);
    let (_, session) = watch::channel(None);
    let state = Arc::new(ApiState {
        store,
        keys,
        settings: HubSettings::default(),
        outbox: Arc::new(Notify::new()),
        broker_up,
        session,
        tls: false,
        metrics: Arc::new(HubMetrics::default()),
        schedules: Arc::new(Notify::new()),
        configs: Arc::new(crate::hub::configs::Live::fixed(
            crate::hub::configs::Configurations::from_settings(&HubSettings::default()),
        )),
    });
    Hub {
        app: router(state.clone(), super::routes(state.clone())),
        state,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Hub {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookies: &str) -> Answer {
        let mut r = Request::get(path).header(header::HOST, "127.0.0.1:8000");
        if !cookies.is_empty() {
            r = r.header(header::COOKIE, cookies);
        }
        self.send(r.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, cookies: &str, form: &str, extra: &[(&str, &str)]) -> Answer {
        let mut r = Request::post(path)
            .header(header::HOST, "127.0.0.1:8000")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !cookies.is_empty() {
            r = r.header(header::COOKIE, cookies);
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        self.send(r.body(Body::from(form.to_string())).unwrap()).await
    }

    /// Logs in; the `Cookie` header value of the session.
    async fn login(&self) -> String {
        let a = self
            .post(
                "/ui/login/",
                "",
                "username=admin&password=correct+horse&next=%2Fui%2Fhealth%2F",
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert_eq!(a.headers[header::LOCATION], "/ui/health/");
        let cookies: Vec<String> = a
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        for c in &cookies {
            assert!(c.contains("; Path=/; HttpOnly; SameSite=Strict; Max-Age="), "{c}");
            assert!(!c.contains("Secure"), "{c}: the hub serves http here");
        }
        cookies
            .iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn csrf(&self, cookies: &str) -> String {
        let refresh = cookies
            .split("; ")
            .find_map(|c| c.strip_prefix("ferry_refresh="))
            .unwrap();
        let jti = self.state.keys.verify(refresh, "refresh").unwrap().jti;
        self.state.keys.csrf_token(&jti)
    }

    async fn job(&self, name: &str, state: &str) -> i64 {
        let id = self
            .state
            .store
            .create_job(
                &NewJob {
                    workflow: "premigrate".into(),
                    fields: serde_json::json!({"lock_level": "implicit"}),
                    discovery: Some("recursive".into()),
                    site: "london".into(),
                    queue: "default".into(),
                    friendly_name: name.into(),
                    owner: Owner {
                        kind: "user".into(),
                        id: 1,
                        name: "admin".into(),
                    },
                    clientkey_id: None,
                    input_paths: serde_json::json!([{"path": name}]),
                    request: None,
                    resubmitted_from: None,
                    record_files: Default::default(),
                    dry_run: false,
                    sync: None,
                },
                |_| Vec::<RootTask>::new(),
            )
            .await
            .unwrap();
        sqlx::query("UPDATE jobs SET state = $1 WHERE id = $2")
            .bind(state)
            .bind(id)
            .execute(&self.state.store.pool)
            .await
            .unwrap();
        id
    }
}

#[tokio::test]
async fn pages_need_a_log_in_and_come_back_after_it() {
    let h = hub().await;
    let a = h.get("/", "").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[header::LOCATION], "/ui/jobs/");
    let a = h.get("/ui/jobs/", "").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[header::LOCATION], "/ui/login/");
    let a = h.get("/ui/jobs/5/?tab=failed", "").await;
    assert_eq!(
        a.headers[header::LOCATION],
        "/ui/login/?next=%2Fui%2Fjobs%2F5%2F%3Ftab%3Dfailed"
    );
    // htmx's refreshes are told to load the log in page whole.
    let r = Request::get("/ui/jobs/rows/")
        .header("hx-request", "true")
        .header("hx-current-url", "http://127.0.0.1:8000/ui/jobs/?state=FAILURE")
        .body(Body::empty())
        .unwrap();
    let a = h.send(r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.headers["hx-redirect"],
        "/ui/login/?next=%2Fui%2Fjobs%2F%3Fstate%3DFAILURE"
    );
    // The log in page keeps where to go.
    let a = h.get("/ui/login/?next=%2Fui%2Fhealth%2F", "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains(r#"name="next" value="/ui/health/""#), "{}", a.body);
    assert!(a.body.contains(r#"data-testid="login-username""#));
    let a = h.get("/ui/login/?next=https%3A%2F%2Fevil.example%2F", "").await;
    assert!(a.body.contains(r#"name="next" value="/ui/jobs/""#));
    // A wrong password: 401, the page again, the name kept.
    let a = h
        .post(
            "/ui/login/",
            "",
            "username=admin&password=nope&next=%2Fui%2Fjobs%2F",
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("Wrong username or password."));
    assert!(a.body.contains(r#"value="admin""#));
    // A log in from another site's page.
    let a = h
        .post(
            "/ui/login/",
            "",
            "username=admin&password=correct+horse",
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let cookies = h.login().await;
    let a = h.get("/ui/jobs/", &cookies).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("<h1>Jobs</h1>"));
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    assert!(
        a.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY");
    // Without the access token, the refresh token renews it.
    let refresh_only = cookies.split("; ").find(|c| c.starts_with("ferry_refresh=")).unwrap();
    let a = h.get("/ui/health/", refresh_only).await;
    assert_eq!(a.status, StatusCode::OK);
    // The roll-ups, empty on a new hub.
    for id in ["work-rollup", "work-none", "failure-rollup", "failures-none"] {
        assert!(a.body.contains(&format!(r#"data-testid="{id}""#)), "{id}: {}", a.body);
    }
    let renewed = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(renewed.starts_with("ferry_access=ey"), "{renewed}");
    // Log out clears both cookies.
    let csrf = h.csrf(&cookies);
    let a = h.post("/ui/logout/", &cookies, &format!("csrf={csrf}"), &[]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let cleared: Vec<&str> = a
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cleared.len(), 2);
    assert!(cleared.iter().all(|c| c.contains("=; ") && c.contains("Max-Age=0")));
}

#[tokio::test]
async fn posts_need_the_sessions_csrf_token_and_the_same_origin() {
    let h = hub().await;
    let cookies = h.login().await;
    let csrf = h.csrf(&cookies);
    let id = h.job("running", "STARTED").await;
    let cancel = format!("/ui/jobs/{id}/do/cancel/");
    for (form, extra) in [
        (String::new(), vec![]),
        ("csrf=00".to_string(), vec![]),
        (format!("csrf={csrf}"), vec![("origin", "http://evil.example")]),
        (format!("csrf={csrf}"), vec![("sec-fetch-site", "cross-site")]),
    ] {
        let a = h.post(&cancel, &cookies, &form, &extra).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{form} {extra:?}: {}", a.body);
        assert!(a.body.contains("Refused"), "{}", a.body);
    }
    assert_eq!(h.state.store.job(id).await.unwrap().unwrap().state, "STARTED");
    // Another session's token does not do.
    let other = h.login().await;
    let a = h
        .post(&cancel, &cookies, &format!("csrf={}", h.csrf(&other)), &[])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // The form field, from the page's own origin.
    let a = h
        .post(
            &cancel,
            &cookies,
            &format!("csrf={csrf}"),
            &[("origin", "http://127.0.0.1:8000"), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(
        a.headers[header::LOCATION],
        format!("/ui/jobs/{id}/?done=cancel").as_str()
    );
    // No roots: nothing to wait for, cancelled at once.
    assert_eq!(h.state.store.job(id).await.unwrap().unwrap().state, "CANCELLED");
    // Again: a conflict, said on the job's page (409).
    let a = h.post(&cancel, &cookies, "", &[("x-csrf-token", &csrf)]).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("data-testid=\"job-error\""), "{}", a.body);
    assert!(
        a.body.contains("is CANCELLED: it has finished: nothing to cancel"),
        "{}",
        a.body
    );
    // Delete: a confirmation page, then gone.
    let a = h.get(&format!("/ui/jobs/{id}/confirm/delete/"), &cookies).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.body.contains(&format!("action=\"/ui/jobs/{id}/do/delete/\"")),
        "{}",
        a.body
    );
    assert!(a.body.contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
    let a = h
        .post(
            &format!("/ui/jobs/{id}/do/delete/"),
            &cookies,
            &format!("csrf={csrf}"),
            &[],
        )
        .await;
    assert_eq!(a.headers[header::LOCATION], format!("/ui/jobs/?deleted={id}").as_str());
    assert!(h.state.store.job(id).await.unwrap().is_none());
    let a = h.get(&format!("/ui/jobs/{id}/"), &cookies).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.get("/ui/jobs/x/", &cookies).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn what_users_wrote_is_escaped() {
    let h = hub().await;
    let cookies = h.login().await;
    let id = h.job("<script>alert(1)</script> \"q\" 'a' & b\nc", "SUCCESS").await;
    for path in ["/ui/jobs/".to_string(), format!("/ui/jobs/{id}/")] {
        let a = h.get(&path, &cookies).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(!a.body.contains("<script>alert"), "{path}: {}", a.body);
        assert!(
            a.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || a.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {}",
            a.body
        );
        assert!(a.body.contains("\\nc"), "{path}: the newline shows as \\n");
    }
    // Filters are echoed escaped too.
    let a = h.get("/ui/jobs/?workflow=%22%3E%3Cb%3Ex", &cookies).await;
    assert!(!a.body.contains("\"><b>x"), "{}", a.body);
}

#[tokio::test]
async fn static_files_are_immutable_under_their_hash() {
    let h = hub().await;
    let a = h.get(super::frame::HTMX_URL.as_str(), "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(a.body.starts_with("var htmx=function()"));
    let a = h.get(super::frame::CSS_URL.as_str(), "").await;
    assert_eq!(a.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(super::frame::CSS_URL.starts_with("/ui/static/ui-") && super::frame::CSS_URL.ends_with(".css"));
    let a = h.get("/ui/static/htmx-0000000000000000.min.js", "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.get("/ui/nowhere/", "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Every page links the files it needs.
    let page = h.get("/ui/login/", "").await;
    assert!(page.body.contains(super::frame::HTMX_URL.as_str()));
    assert!(page.body.contains(super::frame::CSS_URL.as_str()));
}

#[tokio::test]
async fn the_workflow_editor_checks_as_the_api_and_keeps_the_text() {
    let h = hub().await;
    let cookies = h.login().await;
    let csrf = h.csrf(&cookies);
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let bad = r#"{"name": "w1", "label": "W", "filter_rules": [{"state": "all", "type": "file", "action": [{"name": "dynamo.tasks.nope"}]}], "x": "<i>"}"#;
    let a = h
        .post(
            "/ui/workflows/new/",
            &cookies,
            &format!("csrf={csrf}&json={}", enc(bad)),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("data-testid=\"workflow-error\""));
    assert!(a.body.contains("unknown field"), "{}", a.body);
    assert!(!a.body.contains("<i>"), "the text is kept, escaped");
    assert!(
        a.body.contains("&#34;x&#34;") || a.body.contains("&quot;x&quot;"),
        "{}",
        a.body
    );
    let bad = bad.replace(r#", "x": "<i>""#, "");
    let a = h
        .post(
            "/ui/workflows/new/",
            &cookies,
            &format!("csrf={csrf}&json={}", enc(&bad)),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("dynamo.tasks.nope"), "{}", a.body);
    let good = bad.replace("dynamo.tasks.nope", "dynamo.tasks.migrate");
    let a = h
        .post(
            "/ui/workflows/new/",
            &cookies,
            &format!("csrf={csrf}&json={}", enc(&good)),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let w = h.state.store.workflow_by_name("w1").await.unwrap().unwrap();
    let edited = good.replace("\"label\": \"W\"", "\"label\": \"Renamed\"");
    let a = h
        .post(
            &format!("/ui/workflows/{}/", w.id),
            &cookies,
            &format!("csrf={csrf}&json={}", enc(&edited)),
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let w = h.state.store.workflow_by_name("w1").await.unwrap().unwrap();
    assert_eq!(w.label, "Renamed");
    let a = h.get(&format!("/ui/workflows/{}/", w.id), &cookies).await;
    assert!(a.body.contains("Renamed"));
    let a = h
        .post(
            &format!("/ui/workflows/{}/delete/", w.id),
            &cookies,
            &format!("csrf={csrf}"),
            &[],
        )
        .await;
    assert_eq!(a.headers[header::LOCATION], "/ui/workflows/?deleted=w1");
    assert!(h.state.store.workflow_by_name("w1").await.unwrap().is_none());
}

#[tokio::test]
async fn the_jobs_page_reads_one_page_of_100000_jobs() {
    let h = hub().await;
    let cookies = h.login().await;
    sqlx::query(
        "INSERT INTO jobs (workflow, fields, discovery, site, queue, friendly_name, state, created, owner_type, owner_id,
           owner_name, input_paths, expected, received)
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
         SELECT 'migrate', '{}', 'recursive', 'london', 'default', 'Dehydrate of ''/d/' || i || ''' on ''london''',
           CASE i % 4 WHEN 0 THEN 'SUCCESS' WHEN 1 THEN 'FAILURE' WHEN 2 THEN 'STARTED' ELSE 'PENDING' END,
           i * 1000000, 'user', 1, 'admin', '[]', 10, i % 10
         FROM n",
    )
    .execute(&h.state.store.pool)
    .await
    .unwrap();
    // The best of three tries of each page: its own time, less the noise
    // of other work on the machine.
    let mut times = Vec::new();
    for path in [
        "/ui/jobs/",
        "/ui/jobs/?page=1000",
        "/ui/jobs/?state=FAILURE",
        "/ui/jobs/?workflow=migrate&site=london&page=3",
        "/ui/jobs/rows/?state=STARTED",
    ] {
        let mut best = std::time::Duration::MAX;
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let a = h.get(path, &cookies).await;
            best = best.min(t0.elapsed());
            assert_eq!(a.status, StatusCode::OK, "{path}");
            assert_eq!(a.body.matches("<tr data-testid=\"job-row-").count(), 50, "{path}");
        }
        times.push((path, best));
    }
    let a = h.get("/ui/jobs/", &cookies).await;
    assert!(a.body.contains("Page 1 of 2,000"), "{}", a.body);
    assert!(a.body.contains("1–50 of 100,000"));
    eprintln!("jobs page with 100,000 jobs (debug build): {times:?}");
    // The page is built for 100 ms; a debug build (SQLite unoptimized
    // too) on a busy machine gets more room.
    for (path, t) in times {
        assert!(t < std::time::Duration::from_millis(500), "{path}: {t:?}");
    }
}

#[tokio::test]
async fn the_health_page_pauses_and_resumes_a_task_type_with_the_csrf_token() {
    let h = hub().await;
    let cookies = h.login().await;
    let csrf = h.csrf(&cookies);
    const DELETE: &str = "dynamo.tasks.delete_paths_from_gpfs";
    let a = h.get("/ui/health/", &cookies).await;
    assert_eq!(a.status, StatusCode::OK);
    for t in crate::task::TaskName::ALL {
        assert!(
            a.body
                .contains(&format!(r#"data-testid="tasktype-pause-{}""#, t.as_str()))
        );
    }
    let pause = format!("/ui/health/tasktypes/{DELETE}/pause/");
    let refused = h.post(&pause, &cookies, "reason=x", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "no CSRF token");
    let a = h
        .post(&pause, &cookies, &format!("csrf={csrf}&reason=disk+%3Cswap%3E"), &[])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.headers[header::LOCATION], "/ui/health/#tasktypes");
    let page = h.get("/ui/health/", &cookies).await.body;
    assert!(
        page.contains(&format!(r#"data-testid="tasktype-resume-{DELETE}""#)),
        "{page}"
    );
    assert!(
        page.contains("disk &#60;swap&#62;") || page.contains("disk &lt;swap&gt;"),
        "{page}"
    );
    assert!(!page.contains(&format!(r#"data-testid="tasktype-pause-{DELETE}""#)));
    // No broker here: the parked count is unknown, not 0.
    assert!(
        page.contains(&format!(r#"data-testid="tasktype-parked-{DELETE}">unknown<"#)),
        "{page}"
    );
    let p = h.state.store.tasktype_pauses().await.unwrap();
    assert_eq!(
        (p[0].reason.as_str(), p[0].paused_by.as_str()),
        ("disk <swap>", "admin")
    );
    let again = h.post(&pause, &cookies, &format!("csrf={csrf}"), &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let unknown = h
        .post(
            "/ui/health/tasktypes/dynamo.tasks.nope/pause/",
            &cookies,
            &format!("csrf={csrf}"),
            &[],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let resume = format!("/ui/health/tasktypes/{DELETE}/resume/");
    let a = h.post(&resume, &cookies, &format!("csrf={csrf}"), &[]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let page = h.get("/ui/health/", &cookies).await.body;
    assert!(
        page.contains(&format!(r#"data-testid="tasktype-pause-{DELETE}""#)),
        "{page}"
    );
}

/// A bidirectional sync's job page has a Sync changes tab: each change
/// with its site, path (a name that is not UTF-8 escaped), decision and
/// why, what a site lost by marked; other jobs have no such tab.
#[tokio::test]
async fn a_bidirectional_jobs_page_lists_its_changes_and_what_a_site_lost_by() {
    use crate::hub::store::bisync::{Advance, Decided, EventsDoc, NewSyncRun};
    let h = hub().await;
    let cookies = h.login().await;
    let plain = h.job("plain", "STARTED").await;
    let a = h.get(&format!("/ui/jobs/{plain}/?tab=sync"), &cookies).await;
    assert!(!a.body.contains("data-testid=\"tab-sync\""), "{}", a.body);
    assert!(a.body.contains("data-testid=\"tab-panel-tasks\""), "{}", a.body);
    let store = &h.state.store;
    let id = store
        .create_job(
            &NewJob {
                workflow: "bidirectional_sync".into(),
                fields: serde_json::json!({}),
                discovery: Some("bidirectional_snapdiff".into()),
                site: "london".into(),
                queue: "default".into(),
                friendly_name: "both ways".into(),
                owner: crate::hub::submit::system(),
                clientkey_id: None,
                input_paths: serde_json::json!(["/f"]),
                request: None,
                resubmitted_from: None,
                record_files: Default::default(),
                dry_run: false,
                sync: Some(NewSyncRun {
                    site2: "paris".into(),
                    queue2: "default".into(),
                    fileset: "/f".into(),
                }),
            },
            |_| Vec::<RootTask>::new(),
        )
        .await
        .unwrap();
    for (site, obj) in [
        ("london", r#"{"path":"/f/a\udcff","type":"file","state":"deleted"}"#),
        ("paris", r#"{"path":"/f/a\udcff","type":"file","state":"updated"}"#),
    ] {
        let doc = EventsDoc {
            job: id,
            site: site.into(),
            run: "r".into(),
            seq: 0,
            events: vec![obj.into()],
        };
        store.record_sync_events(&[doc]).await.unwrap();
    }
    let ids: Vec<i64> = [
        store.sync_events(id, "london", Some("r")).await.unwrap(),
        store.sync_events(id, "paris", Some("r")).await.unwrap(),
    ]
    .iter()
    .map(|e| e[0].id)
    .collect();
    let decided = [
        Decided {
            id: ids[0],
            decision: "beaten",
            target: None,
            note: Some("kept <b>".into()),
        },
        Decided {
            id: ids[1],
            decision: "apply",
            target: None,
            note: None,
        },
    ];
    let step = Advance {
        decided: &decided,
        ..Advance::default()
    };
    assert!(store.advance_sync(id, 0, 1, &step).await.unwrap());
    let a = h.get(&format!("/ui/jobs/{id}/?tab=sync"), &cookies).await;
    assert_eq!(a.status, StatusCode::OK);
    let body = a.body;
    assert!(body.contains("Sync changes (2)"), "{body}");
    assert!(body.contains("data-testid=\"tab-panel-sync\""), "{body}");
    assert_eq!(body.matches("data-testid=\"sync-row\"").count(), 2, "{body}");
    assert!(body.contains("/f/a\\udcff"), "{body}");
    assert!(
        body.contains("<span class=\"badge st-failure\">beaten</span>"),
        "{body}"
    );
    assert!(!body.contains("kept <b>"), "the note is escaped: {body}");
}
