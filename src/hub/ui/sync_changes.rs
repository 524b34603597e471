//! A bidirectional sync's job page tab, Sync changes: each change a site
//! reported, with the hub's decision.

use super::format::{json_path, path_bytes, visible};
use crate::hub::bisync::{Decision, Event};

/// One change a bidirectional sync compared, as its Sync changes tab
/// lists it.
#[derive(Clone, Debug)]
pub struct SyncRow {
    /// The site that reported it.
    pub site: String,
    /// `created`, `updated`, `moved`, `deleted`.
    pub state: String,
    /// Its path (a move's new path).
    pub path: String,
    /// A move's old path, or empty.
    pub source: String,
    /// What the hub decided (`apply`, `beaten`...), or `—` before.
    pub decision: String,
    /// Whether a site lost by it (`beaten`, `refused`).
    pub lost: bool,
    /// Where it was applied, when elsewhere.
    pub target: String,
    /// Why.
    pub note: String,
}

/// A stored change as a row.
pub fn sync_row(e: &crate::hub::store::bisync::StoredEvent) -> SyncRow {
    let change = Event::parse(0, &e.obj);
    let decision = e.decision.clone().unwrap_or_else(|| "—".into());
    SyncRow {
        site: e.site.clone(),
        state: change.as_ref().map(|c| c.state.clone()).unwrap_or_default(),
        path: change.as_ref().map_or_else(|| visible(&e.obj), |c| path_bytes(&c.path)),
        source: change
            .as_ref()
            .and_then(|c| c.source.as_deref())
            .map(path_bytes)
            .unwrap_or_default(),
        lost: Decision::from_name(&decision, e.target.as_deref()).is_some_and(|d| d.lost()),
        decision,
        target: e.target.as_deref().map(json_path).unwrap_or_default(),
        note: e.note.clone().unwrap_or_default(),
    }
}
