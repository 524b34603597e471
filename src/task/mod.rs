//! The task contract shared with hubs and Celery peers: path objects, the
//! JSON string convention for raw path bytes, and status summaries.

pub mod input;
pub mod path_object;
pub mod result;
pub mod status;
pub mod surrogate;

pub use path_object::{PathObject, PathObjectError, write_entry};
pub use result::{FileState, Outcome, TaskResult};
pub use status::{Summary, SummaryCounters};
