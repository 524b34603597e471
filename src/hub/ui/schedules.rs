//! `/ui/schedules/`: the schedules, each with its cron in words, its time
//! zone, its last and next run, and a Run now button (the API's `POST
//! /api/schedules/{id}/run/`, through the same `hub::schedule::run_now`).
//! Schedules are created and changed through the API (docs/hub.md,
//! Schedules).

use super::format::{Moment, moment};
use super::frame::{Layout, Query, UiError, UiResult, page};
use super::session::Session;
use crate::hub::api::ApiState;
use crate::hub::schedule::{ScheduleError, next_run, run_now};
use crate::hub::store::now_us;
use crate::hub::store::schedules::Schedule;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui/schedules/", get(list))
        .route("/ui/schedules/{id}/run/", post(run))
}

/// A schedule as a row of the list.
#[derive(Clone, Debug)]
pub struct ScheduleRow {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Site.
    pub site: String,
    /// The five cron fields, `m h dom mon dow` (crontab's order).
    pub cron: String,
    /// The site's time zone, or `UTC`.
    pub timezone: String,
    /// `yes` / `no`.
    pub enabled: &'static str,
    /// The managed paths, one per line.
    pub paths: Vec<String>,
    /// The last due time dealt with.
    pub last: Option<Moment>,
    /// The next due time, if it fires.
    pub next: Option<Moment>,
}

/// Schedule `s` as a row, at `now` (µs), `schedules_enabled` or not.
pub fn schedule_row(s: &Schedule, schedules_enabled: bool, now: i64) -> ScheduleRow {
    ScheduleRow {
        id: s.id,
        name: s.name.clone(),
        site: s.site.clone(),
        cron: format!(
            "{} {} {} {} {}",
            s.minute, s.hour, s.day_of_month, s.month_of_year, s.day_of_week
        ),
        timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
        enabled: if s.enabled { "yes" } else { "no" },
        paths: s
            .managed_paths
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        last: s.last_run_at.map(|t| moment(t, now)),
        next: next_run(s, schedules_enabled).map(|t| moment(t.as_microsecond(), now)),
    }
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<ScheduleRow>,
    enabled: bool,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct Notice {
    #[serde(default)]
    ran: String,
    #[serde(default)]
    jobs: String,
}

async fn render(s: &ApiState, session: &Session, notice: Option<String>, error: Option<String>) -> UiResult<ListPage> {
    let enabled = s.configs.get().schedules_enabled;
    let now = now_us();
    let rows = s
        .store
        .schedules(None)
        .await?
        .iter()
        .map(|x| schedule_row(x, enabled, now))
        .collect();
    Ok(ListPage {
        layout: session.layout("schedules"),
        rows,
        enabled,
        notice,
        error,
    })
}

async fn list(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Query(n): Query<Notice>,
) -> UiResult<Response> {
    let notice = (!n.ran.is_empty()).then(|| format!("Schedule {} ran now: jobs {}.", n.ran, n.jobs));
    page(StatusCode::OK, &render(&s, &session, notice, None).await?)
}

async fn run(
    State(s): State<Arc<ApiState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> UiResult<Response> {
    let id: i64 = id
        .parse()
        .map_err(|_| UiError::not_found(&format!("schedule {id:?}")))?;
    match run_now(&s.store, &s.outbox, s.configs.get().queue_depth(), id).await {
        Ok(rows) => {
            let jobs: Vec<String> = rows.iter().filter_map(|r| r.job_id).map(|j| j.to_string()).collect();
            let to = format!("/ui/schedules/?ran={id}&jobs={}", jobs.join(","));
            Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response())
        }
        Err(ScheduleError::NotFound(_)) => Err(UiError::not_found(&format!("schedule {id}"))),
        Err(ScheduleError::Busy { detail, .. }) => {
            let p = render(&s, &session, None, Some(format!("Run now refused: {detail}."))).await?;
            page(StatusCode::CONFLICT, &p)
        }
        Err(ScheduleError::Store(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_shows_the_cron_in_crontabs_order_and_the_next_run() {
        let s = Schedule {
            id: 3,
            name: "nightly".into(),
            site: "london".into(),
            space: None,
            enabled: true,
            discovery: None,
            discovery_options: serde_json::json!({}),
            managed_paths: serde_json::json!(["/mmfs1/a", "/mmfs1/b"]),
            minute: "30".into(),
            hour: "2".into(),
            day_of_week: "mon-fri".into(),
            day_of_month: "*".into(),
            month_of_year: "*".into(),
            last_run_at: None,
            created: 1_764_900_000_000_000,
            timezone: None,
        };
        let r = schedule_row(&s, true, 1_764_900_000_000_000);
        assert_eq!(r.cron, "30 2 * * mon-fri");
        assert_eq!(r.timezone, "UTC");
        assert_eq!(r.paths, ["/mmfs1/a", "/mmfs1/b"]);
        assert!(r.last.is_none());
        assert!(
            r.next.as_ref().is_some_and(|m| m.iso.ends_with("T02:30:00Z")),
            "{:?}",
            r.next.map(|m| m.iso)
        );
        assert!(
            schedule_row(&s, false, 0).next.is_none(),
            "schedules_enabled false: no next run"
        );
    }
}
