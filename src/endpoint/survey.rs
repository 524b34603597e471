//! What a store holds besides committed objects: the leftovers of writes
//! that were cut off (a killed process, a lost connection), found by
//! listing the whole store.
//!
//! The survey only classifies; deciding what may go (a grace period for
//! writes still under way, never an object a local file points at) is the
//! caller's (`ops::check`), because only it can read the local files.

use super::transfer::EndpointError;
use super::{Backend, Endpoint, dir, s3};
use object_store::path::Path as ObjPath;
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// Which kind of leftover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftoverKind {
    /// A staging file of a directory store that no upload holds.
    Staging,
    /// A `<name>#<digits>` staging file left by ferry up to 53a13dd.
    LegacyStaging,
    /// A metadata sidecar that no object names.
    OrphanSidecar,
    /// An S3 multipart upload that was neither completed nor aborted.
    IncompleteUpload,
    /// An object whose metadata is missing or does not verify, so no
    /// migrate ever committed it.
    Uncommitted,
    /// An S3 object without ferry's metadata: not ferry's, never removed.
    Foreign,
}

impl LeftoverKind {
    /// Whether a repair may remove leftovers of this kind at all.
    pub fn removable(self) -> bool {
        self != LeftoverKind::Foreign
    }

    /// Whether this kind is an object a local file could point at, so a
    /// repair must first prove that none does.
    pub fn is_object(self) -> bool {
        matches!(self, LeftoverKind::Uncommitted | LeftoverKind::Foreign)
    }
}

/// One leftover.
#[derive(Clone, Debug, Serialize)]
pub struct Leftover {
    /// What it is.
    pub kind: LeftoverKind,
    /// Its key (S3) or path relative to the store (directory).
    pub name: String,
    /// Its size in bytes (0 for an upload).
    pub size: u64,
    /// Time since it was last written (an upload: since it started).
    #[serde(rename = "age_seconds", serialize_with = "secs")]
    pub age: Duration,
    /// Why the object is uncommitted, for [`LeftoverKind::Uncommitted`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The multipart upload's id.
    #[serde(skip)]
    upload_id: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Everything a survey found.
#[derive(Debug, Default)]
pub struct Survey {
    /// Committed objects.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Uploads under way (a directory store's staging files whose writer
    /// holds their lock).
    pub in_progress: u64,
    /// What writes left behind.
    pub leftovers: Vec<Leftover>,
    /// Parts of the store that could not be read; the survey went on.
    pub errors: Vec<EndpointError>,
}

impl Endpoint {
    /// Lists the whole store (a directory store's tree, or the S3 prefix
    /// and its unfinished multipart uploads) and classifies what it holds.
    pub fn survey(&self) -> Survey {
        let now = SystemTime::now();
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        let mut survey = Survey::default();
        let leftover = |kind, name: String, size, modified, detail| Leftover {
            kind,
            name,
            size,
            age: age(modified),
            detail,
            upload_id: None,
        };
        let mut list = Vec::new();
        match &self.backend {
            Backend::Directory(d) => {
                let mut found = Vec::new();
                d.survey(&self.prefix, &mut found, &mut survey.errors);
                for f in found {
                    let kind = match f.kind {
                        dir::FoundKind::Staging { live: true } => {
                            survey.in_progress += 1;
                            continue;
                        }
                        dir::FoundKind::Staging { live: false } => (LeftoverKind::Staging, None),
                        dir::FoundKind::LegacyStaging => (LeftoverKind::LegacyStaging, None),
                        dir::FoundKind::Sidecar { orphan: true } => (LeftoverKind::OrphanSidecar, None),
                        dir::FoundKind::Sidecar { orphan: false } => continue,
                        dir::FoundKind::Object(Some(Ok(_))) => {
                            survey.objects += 1;
                            survey.bytes += f.size;
                            continue;
                        }
                        dir::FoundKind::Object(None) => (LeftoverKind::Uncommitted, Some("no metadata".into())),
                        dir::FoundKind::Object(Some(Err(e))) => (LeftoverKind::Uncommitted, Some(e.to_string())),
                    };
                    list.push(leftover(kind.0, f.rel, f.size, f.modified, kind.1));
                }
            }
            Backend::S3(s) => {
                let mut found = Vec::new();
                s.survey(&self.prefix, &mut found, &mut survey.errors);
                for f in found {
                    let (kind, detail, id) = match f.kind {
                        s3::FoundKind::Object(Some(Ok(_))) => {
                            survey.objects += 1;
                            survey.bytes += f.size;
                            continue;
                        }
                        s3::FoundKind::Object(None) => (LeftoverKind::Foreign, None, None),
                        s3::FoundKind::Object(Some(Err(e))) => (LeftoverKind::Uncommitted, Some(e.to_string()), None),
                        s3::FoundKind::Sidecar { orphan: true } => (LeftoverKind::OrphanSidecar, None, None),
                        s3::FoundKind::Sidecar { orphan: false } => continue,
                        s3::FoundKind::Upload { id } => (LeftoverKind::IncompleteUpload, None, Some(id)),
                    };
                    let mut l = leftover(kind, f.key, f.size, f.modified, detail);
                    l.upload_id = id;
                    list.push(l);
                }
            }
        }
        list.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        survey.leftovers = list;
        survey
    }

    /// Removes one leftover a survey found (a sidecar, a staging file, an
    /// upload's parts, an uncommitted object); foreign objects are refused.
    pub fn remove_leftover(&self, l: &Leftover) -> Result<(), EndpointError> {
        if !l.kind.removable() {
            return Err(self.err(format!("{} is not ferry's; it is never removed", l.name)));
        }
        match (&self.backend, &l.upload_id) {
            (Backend::S3(s), Some(id)) => s.abort_upload(&l.name, id),
            (Backend::S3(s), None) => s.remove(&ObjPath::parse(&l.name).map_err(|e| self.err(e.to_string()))?),
            (Backend::Directory(d), _) => d.remove(&l.name),
        }
    }
}
