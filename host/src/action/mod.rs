//! Actions and runtimes: what an activation runs and in which image.
//!
//! - [`catalog`]: [`ActionStore`] and a directory of action documents in the shape
//!   `wsk action get` prints;
//! - [`runtimes`]: OpenWhisk's `runtimes.json` manifest (kinds → images, prewarm stem cells).

pub mod catalog;
pub mod runtimes;

pub use catalog::{Action, ActionStore, CatalogDir, Exec, Limits};
pub use runtimes::{Reactive, Runtimes, StemCell};

/// Why an action could not be resolved; the activation becomes a whisk error.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("action {0} does not exist")]
    NotFound(String),
    #[error("action {name} has revision {have}, the activation asks for {want}")]
    Revision {
        name: String,
        have: String,
        want: String,
    },
    #[error("action {name} has kind `{kind}`, which the runtimes manifest does not know")]
    UnknownKind { name: String, kind: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}
