//! The wire contract shared with hubs and Celery peers: task names and
//! the queue functions that run them ([`names`]), keyword arguments
//! ([`args`]), path objects and the JSON string convention for raw path
//! bytes ([`path_object`], [`surrogate`]), per-file outcomes and result
//! objects ([`result`]), failure codes and categories ([`errors`]), the status object and the clock ([`status`]),
//! streamed results ([`stream`]), counts ([`summary`]), and where a
//! command's paths come from ([`input`]).

pub mod args;
pub mod errors;
pub mod input;
pub mod names;
pub mod path_object;
pub mod result;
pub mod status;
pub mod stream;
pub mod summary;
pub mod surrogate;

pub use args::{ArgumentError, parse_kwargs, parse_paths};
pub use names::TaskName;
pub use path_object::{PathObject, PathObjectError, write_entry};
pub use result::{FileState, Outcome, TaskResult};
pub use status::Status;
pub use summary::{Summary, SummaryCounters};
