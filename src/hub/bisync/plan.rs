//! The conflict rules of a bidirectional run as a pure function: both
//! sites' changes in, one [`Decision`] per change out ([`plan`]), given
//! what earlier runs applied (their echoes). No I/O: the stages that
//! apply the decisions are in the parent module.

use crate::task::PathObject;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// A change as a site reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// 0: the schedule's site; 1: the other.
    pub side: usize,
    /// `created`, `updated`, `moved` or `deleted`.
    pub state: String,
    /// Its (new) path.
    pub path: Vec<u8>,
    /// A move's old path.
    pub source: Option<Vec<u8>>,
    /// Whether it is a directory.
    pub dir: bool,
    /// Type, size, mtime and mode as reported: what a copy made by the
    /// sync has too.
    pub look: String,
}

impl Event {
    /// Reads a stored path object.
    pub fn parse(side: usize, obj: &str) -> Option<Event> {
        let p = PathObject::parse(obj.as_bytes()).ok()?;
        let get = |k: &str| p.extra.iter().find(|(n, _)| n == k).map(|(_, v)| v.get());
        let state: String = serde_json::from_str(get("state")?).ok()?;
        let look = ["type", "size", "mtime", "mode"]
            .iter()
            .map(|k| get(k).unwrap_or("null"))
            .collect::<Vec<_>>()
            .join(",");
        Some(Event {
            side,
            dir: get("type") == Some("\"directory\""),
            state,
            path: p.path,
            source: p.source,
            look,
        })
    }

    /// Whether it writes data (created or updated).
    pub fn writes(&self) -> bool {
        matches!(self.state.as_str(), "created" | "updated")
    }
}

/// What the hub does with one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Applied on the other site as reported.
    Apply,
    /// Applied at another path: the other site moved it (or a directory
    /// above it) there.
    Retarget(Vec<u8>),
    /// A move the other site cannot replay (it deleted the entry, or moved
    /// it elsewhere): the entry is sent whole at its new path.
    Resend,
    /// What an earlier run wrote to this site: not a change of its own.
    Echo,
    /// Both sites made this very move.
    Same,
    /// A delete of an entry its own site wrote anew at the same path (its
    /// new inode is reported as created, updated or moved there): not a
    /// deletion, and what replaced it goes instead. The sync itself does
    /// this when it writes a file on the other site.
    Replaced,
    /// A delete the other site's change of the same entry overrides
    /// ("create/modify beats delete").
    Beaten,
    /// A move onto a path the other site changed: moves never overwrite.
    Refused,
}

impl Decision {
    /// Its stored name.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Apply => "apply",
            Decision::Retarget(_) => "retarget",
            Decision::Resend => "resend",
            Decision::Echo => "echo",
            Decision::Same => "same",
            Decision::Replaced => "replaced",
            Decision::Beaten => "beaten",
            Decision::Refused => "refused",
        }
    }

    /// The decision stored as `name` (with `target`, a JSON string, for
    /// `retarget`); `None` for a name it does not know.
    pub fn from_name(name: &str, target: Option<&str>) -> Option<Decision> {
        Some(match name {
            "apply" => Decision::Apply,
            "retarget" => Decision::Retarget(crate::task::surrogate::decode(target?).ok()?),
            "resend" => Decision::Resend,
            "echo" => Decision::Echo,
            "same" => Decision::Same,
            "replaced" => Decision::Replaced,
            "beaten" => Decision::Beaten,
            "refused" => Decision::Refused,
            _ => return None,
        })
    }

    /// Whether a site loses by it (listed in the job's files).
    pub fn lost(&self) -> bool {
        matches!(self, Decision::Beaten | Decision::Refused)
    }

    /// Whether the change is applied on the other site.
    pub fn applied(&self) -> bool {
        matches!(self, Decision::Apply | Decision::Retarget(_) | Decision::Resend)
    }

    /// Where it applies, when not at its own path.
    pub fn target(&self) -> Option<&[u8]> {
        match self {
            Decision::Retarget(t) => Some(t),
            _ => None,
        }
    }
}

/// A change an earlier run applied to a site: what that site reports
/// next as its own change, and is not.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Applied {
    /// The site it was applied to.
    pub to: usize,
    /// `write` (created or updated), `moved` or `deleted`.
    pub kind: &'static str,
    /// Where.
    pub path: Vec<u8>,
    /// A move's old path.
    pub source: Option<Vec<u8>>,
    /// A write's type, size, mtime and mode.
    pub look: Option<String>,
}

impl Applied {
    /// `e`, decided `d`, as applied to site `to` at path `at`. A resent
    /// move arrives as a write.
    pub fn of(e: &Event, d: &Decision, to: usize, at: &[u8]) -> Applied {
        let write = e.writes() || *d == Decision::Resend;
        Applied {
            to,
            kind: if write { "write" } else { kind(e) },
            path: at.to_vec(),
            source: if write { None } else { e.source.clone() },
            look: write.then(|| e.look.clone()),
        }
    }

    /// `e` as its own site reports it.
    fn reported(e: &Event) -> Applied {
        Applied::of(e, &Decision::Apply, e.side, &e.path)
    }
}

fn kind(e: &Event) -> &'static str {
    match e.state.as_str() {
        "moved" => "moved",
        "deleted" => "deleted",
        _ => "write",
    }
}

/// `path` and each directory above it, deepest first (not `/` itself).
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = Some(path.len());
    std::iter::from_fn(move || {
        let here = &path[..end?];
        end = here.iter().rposition(|&b| b == b'/').filter(|&i| i > 0);
        Some(here)
    })
}

/// `path` with its part under one of `moves`' sources moved to that
/// move's destination (the deepest source that is `path` or a directory
/// above it), or `None` when no move covers it.
pub(super) fn through(moves: &BTreeMap<Vec<u8>, Vec<u8>>, path: &[u8]) -> Option<Vec<u8>> {
    ancestors(path).find_map(|a| Some([moves.get(a)?.as_slice(), &path[a.len()..]].concat()))
}

/// Whether `set` holds `path` or a path below it.
fn at_or_below(set: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    if set.contains(path) {
        return true;
    }
    let below = [path, b"/"].concat();
    set.range(below.clone()..).next().is_some_and(|p| p.starts_with(&below))
}

/// Whether `path` is one of `dirs` or below one.
pub(super) fn at_or_below_any(dirs: &BTreeSet<Vec<u8>>, path: &[u8]) -> bool {
    ancestors(path).any(|a| dirs.contains(a))
}

/// Decides every event of a run (both sites' changes, in any order)
/// given what earlier runs applied; returns each event's decision
/// and, for the ones a site loses, why.
pub fn plan(events: &[Event], before: &HashSet<Applied>) -> Vec<(Decision, Option<String>)> {
    let mut out: Vec<Option<(Decision, Option<String>)>> = vec![None; events.len()];
    // Echoes first: they are no one's change.
    for (i, e) in events.iter().enumerate() {
        if before.contains(&Applied::reported(e)) {
            out[i] = Some((Decision::Echo, None));
        }
    }
    // A delete whose path its own site wrote anew (through the site's own
    // moves: a deleted entry has its last path before them). A move onto
    // the path replaces it too when the move is the echo of the previous
    // run's; a move still to be made needs the delete made first.
    let mut own_moves: [BTreeMap<Vec<u8>, Vec<u8>>; 2] = Default::default();
    let mut present: [HashSet<Vec<u8>>; 2] = Default::default();
    for (i, e) in events.iter().enumerate() {
        if let (Some(src), "moved") = (&e.source, e.state.as_str()) {
            own_moves[e.side].insert(src.clone(), e.path.clone());
        }
        if e.writes() || (e.state == "moved" && out[i].is_some()) {
            present[e.side].insert(e.path.clone());
        }
    }
    for (i, e) in events.iter().enumerate() {
        if out[i].is_none() && e.state == "deleted" && !e.dir {
            let now = through(&own_moves[e.side], &e.path).unwrap_or_else(|| e.path.clone());
            if present[e.side].contains(&now) {
                out[i] = Some((Decision::Replaced, None));
            }
        }
    }
    let mut writes: [BTreeSet<Vec<u8>>; 2] = Default::default();
    let mut deleted: [HashSet<Vec<u8>>; 2] = Default::default();
    let mut moves: [BTreeMap<Vec<u8>, Vec<u8>>; 2] = Default::default();
    for e in events
        .iter()
        .enumerate()
        .filter(|(i, _)| out[*i].is_none())
        .map(|(_, e)| e)
    {
        match e.state.as_str() {
            "deleted" => {
                deleted[e.side].insert(e.path.clone());
            }
            "moved" => {
                writes[e.side].insert(e.path.clone());
                if let Some(s) = &e.source {
                    moves[e.side].insert(s.clone(), e.path.clone());
                }
            }
            _ => {
                writes[e.side].insert(e.path.clone());
            }
        }
    }
    // Moves, whose outcome the other changes depend on.
    let mut applied_moves: [BTreeMap<Vec<u8>, Vec<u8>>; 2] = Default::default();
    let mut refused_at: [HashSet<Vec<u8>>; 2] = Default::default();
    for (i, e) in events.iter().enumerate() {
        if out[i].is_some() || e.state != "moved" {
            continue;
        }
        let (x, y) = (e.side, 1 - e.side);
        let Some(src) = &e.source else { continue };
        let d = match moves[y].get(src) {
            Some(d) if *d == e.path => (Decision::Same, None),
            Some(d) => (
                Decision::Resend,
                Some(format!(
                    "renamed differently on the other site (to {}): both names are kept",
                    String::from_utf8_lossy(d)
                )),
            ),
            None if deleted[y].contains(src) => (
                Decision::Resend,
                Some("moved here, but deleted at its old path on the other site: sent again".into()),
            ),
            None if writes[y].contains(&e.path) && !moves[x].contains_key(&e.path) => {
                refused_at[x].insert(e.path.clone());
                (
                    Decision::Refused,
                    Some(format!(
                        "moved here from {} on one site while the other site changed this path; moves never overwrite: settle it by hand",
                        String::from_utf8_lossy(src)
                    )),
                )
            }
            None => {
                applied_moves[x].insert(src.clone(), e.path.clone());
                (Decision::Apply, None)
            }
        };
        out[i] = Some(d);
    }
    for (i, e) in events.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let y = 1 - e.side;
        let d = if refused_at[y].contains(&e.path) {
            // Neither copy replaces the other: each site keeps its own.
            (
                Decision::Refused,
                Some("written here on one site while the other site moved another file here; neither overwrites the other: settle it by hand".into()),
            )
        } else if e.state == "deleted" {
            // The other site's writes are at its new paths: below a
            // directory it moved, the deleted entry is where it moved to.
            let there = through(&moves[y], &e.path);
            if at_or_below(&writes[y], &e.path)
                || there.as_deref().is_some_and(|t| at_or_below(&writes[y], t))
                || moves[y].contains_key(&e.path)
            {
                (
                    Decision::Beaten,
                    Some("deleted on one site while the other site changed or moved it: kept (create and modify beat delete)".into()),
                )
            } else {
                retarget(&applied_moves[y], &e.path)
            }
        } else {
            retarget(&applied_moves[y], &e.path)
        };
        out[i] = Some(d);
    }
    out.into_iter().map(|d| d.expect("every event decided")).collect()
}

fn retarget(moves: &BTreeMap<Vec<u8>, Vec<u8>>, path: &[u8]) -> (Decision, Option<String>) {
    match through(moves, path) {
        Some(t) => (
            Decision::Retarget(t),
            Some("the other site moved it: applied at its new path".into()),
        ),
        None => (Decision::Apply, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(side: usize, state: &str, path: &str, source: Option<&str>, look: &str) -> Event {
        Event {
            side,
            state: state.into(),
            path: path.as_bytes().to_vec(),
            source: source.map(|s| s.as_bytes().to_vec()),
            dir: false,
            look: look.into(),
        }
    }

    fn names(events: &[Event], before: &HashSet<Applied>) -> Vec<String> {
        plan(events, before)
            .into_iter()
            .map(|(d, _)| match d {
                Decision::Retarget(t) => format!("retarget {}", String::from_utf8_lossy(&t)),
                d => d.name().to_string(),
            })
            .collect()
    }

    /// Create and modify beat delete, whichever site deleted; a directory
    /// delete loses to a change below it.
    #[test]
    fn a_change_on_one_site_beats_a_delete_on_the_other() {
        let events = [
            ev(0, "deleted", "/f/a", None, ""),
            ev(1, "updated", "/f/a", None, "l"),
            ev(1, "deleted", "/f/b", None, ""),
            ev(0, "created", "/f/b", None, "l"),
            ev(0, "deleted", "/f/d", None, ""),
            ev(1, "created", "/f/d/new", None, "l"),
            ev(0, "deleted", "/f/gone", None, ""),
        ];
        assert_eq!(
            names(&events, &HashSet::new()),
            ["beaten", "apply", "beaten", "apply", "beaten", "apply", "apply"]
        );
    }

    /// Moved on one site, deleted on the other: sent again (and the delete
    /// is not made); renamed differently on both: both kept; the same move
    /// on both: nothing to do.
    #[test]
    fn moves_the_other_site_cannot_replay_are_sent_whole() {
        let events = [
            ev(0, "moved", "/f/b", Some("/f/a"), ""),
            ev(1, "deleted", "/f/a", None, ""),
            ev(0, "moved", "/f/q", Some("/f/p"), ""),
            ev(1, "moved", "/f/r", Some("/f/p"), ""),
            ev(0, "moved", "/f/y", Some("/f/x"), ""),
            ev(1, "moved", "/f/y", Some("/f/x"), ""),
        ];
        assert_eq!(
            names(&events, &HashSet::new()),
            ["resend", "beaten", "resend", "resend", "same", "same"]
        );
    }

    /// A move onto a path the other site wrote is refused; a swap (each
    /// destination vacated by the other move) is not; a change under a
    /// moved directory is applied where it moved to.
    #[test]
    fn a_move_never_overwrites_and_changes_follow_the_other_sites_moves() {
        let events = [
            ev(0, "moved", "/f/t", Some("/f/s"), ""),
            ev(1, "created", "/f/t", None, "l"),
            ev(0, "moved", "/f/b", Some("/f/a"), ""),
            ev(0, "moved", "/f/a", Some("/f/b"), ""),
            ev(1, "updated", "/f/a", None, "l"),
            ev(1, "moved", "/f/new", Some("/f/dir"), ""),
            ev(0, "updated", "/f/dir/x", None, "l"),
            ev(0, "deleted", "/f/dir/y", None, ""),
        ];
        assert_eq!(
            names(&events, &HashSet::new()),
            [
                "refused",
                "refused",
                "apply",
                "apply",
                "retarget /f/b",
                "apply",
                "retarget /f/new/x",
                "retarget /f/new/y"
            ]
        );
    }

    /// A delete on one site of a file in a directory the other site moved
    /// loses to that site's change of the file at its new path.
    #[test]
    fn a_delete_loses_to_a_change_below_a_directory_the_other_site_moved() {
        let events = [
            ev(0, "deleted", "/f/dir/x", None, ""),
            ev(1, "moved", "/f/new", Some("/f/dir"), ""),
            ev(1, "updated", "/f/new/x", None, "l"),
            ev(0, "deleted", "/f/dir/y", None, ""),
        ];
        assert_eq!(
            names(&events, &HashSet::new()),
            ["beaten", "apply", "apply", "retarget /f/new/y"]
        );
    }

    /// What the previous run wrote to a site comes back as that site's
    /// change and is dropped, unless it changed again since (its look
    /// differs).
    #[test]
    fn echoes_of_the_previous_run_are_dropped() {
        let before: HashSet<Applied> = [
            Applied::of(&ev(1, "created", "/f/a", None, "l1"), &Decision::Apply, 0, b"/f/a"),
            Applied::of(&ev(1, "created", "/f/b", None, "l1"), &Decision::Apply, 0, b"/f/b"),
            Applied::of(&ev(0, "moved", "/f/d", Some("/f/c"), ""), &Decision::Apply, 1, b"/f/d"),
            Applied::of(&ev(0, "deleted", "/f/e", None, ""), &Decision::Apply, 1, b"/f/e"),
            // A resent move arrives as a new file.
            Applied::of(
                &ev(0, "moved", "/f/g", Some("/f/f"), "l3"),
                &Decision::Resend,
                1,
                b"/f/g",
            ),
        ]
        .into_iter()
        .collect();
        let events = [
            ev(0, "created", "/f/a", None, "l1"),
            ev(0, "updated", "/f/b", None, "l2"),
            ev(1, "moved", "/f/d", Some("/f/c"), ""),
            ev(1, "deleted", "/f/e", None, ""),
            ev(0, "moved", "/f/d", Some("/f/c"), ""),
            ev(1, "created", "/f/g", None, "l3"),
        ];
        assert_eq!(
            names(&events, &before),
            ["echo", "apply", "echo", "echo", "apply", "echo"]
        );
    }

    /// A file the sync wrote anew on a site shows there as the old inode
    /// deleted and a new one created (or moved) at its path, also below a
    /// directory the site moved: the delete is no deletion.
    #[test]
    fn a_delete_of_a_path_written_anew_is_no_deletion() {
        let events = [
            ev(1, "deleted", "/f/a", None, ""),
            ev(1, "created", "/f/a", None, "l"),
            ev(1, "deleted", "/f/old/b", None, ""),
            ev(1, "moved", "/f/new", Some("/f/old"), ""),
            ev(1, "updated", "/f/new/b", None, "l"),
            ev(1, "deleted", "/f/c", None, ""),
            ev(1, "moved", "/f/c", Some("/f/d"), ""),
            ev(1, "deleted", "/f/e", None, ""),
            ev(1, "deleted", "/f/g", None, ""),
            ev(1, "moved", "/f/g", Some("/f/h"), ""),
        ];
        // The move onto /f/c is the echo of the last run's, the one onto
        // /f/g is new: the delete goes first, as the site did.
        let before: HashSet<Applied> = [Applied::of(
            &ev(0, "moved", "/f/c", Some("/f/d"), ""),
            &Decision::Apply,
            1,
            b"/f/c",
        )]
        .into_iter()
        .collect();
        assert_eq!(
            names(&events, &before),
            [
                "replaced", "apply", "replaced", "apply", "apply", "replaced", "echo", "apply", "apply", "apply"
            ]
        );
    }

    #[test]
    fn a_decision_reads_back_from_its_stored_name() {
        for d in [
            Decision::Apply,
            Decision::Retarget(b"/f/x\xff".to_vec()),
            Decision::Resend,
            Decision::Echo,
            Decision::Same,
            Decision::Replaced,
            Decision::Beaten,
            Decision::Refused,
        ] {
            let target = d.target().map(crate::task::surrogate::encode_string);
            assert_eq!(Decision::from_name(d.name(), target.as_deref()), Some(d));
        }
        assert_eq!(Decision::from_name("mystery", None), None);
    }

    #[test]
    fn a_path_follows_the_deepest_move_above_it() {
        let moves: BTreeMap<Vec<u8>, Vec<u8>> = [
            (b"/f/a".to_vec(), b"/f/z".to_vec()),
            (b"/f/a/b".to_vec(), b"/f/y".to_vec()),
        ]
        .into_iter()
        .collect();
        assert_eq!(through(&moves, b"/f/a/b/c").unwrap(), b"/f/y/c");
        assert_eq!(through(&moves, b"/f/a/c").unwrap(), b"/f/z/c");
        assert_eq!(through(&moves, b"/f/a").unwrap(), b"/f/z");
        assert_eq!(through(&moves, b"/f/ab"), None);
        assert_eq!(through(&moves, b"/g"), None);
    }
}
