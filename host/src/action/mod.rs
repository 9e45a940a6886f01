//! Actions and runtimes: what an activation runs and in which image.
//!
//! - [`catalog`]: [`ActionStore`] and a directory of action documents in the shape
//!   `wsk action get` prints (the zero-set-up default);
//! - [`couchdb`]: the action documents an OpenWhisk controller keeps in CouchDB's `whisks`;
//! - [`document`]: reading an OpenWhisk action document (either source);
//! - [`limits`]: whether an action's limits fit its namespace;
//! - [`put`]: `keepwarm actions put` / `get`, the operator's way to try the CouchDB store;
//! - [`encryption`]: upstream's encrypted parameters;
//! - [`runtimes`]: OpenWhisk's `runtimes.json` manifest (kinds → images, prewarm stem cells).

pub mod catalog;
pub mod couchdb;
pub mod document;
pub mod encryption;
pub mod limits;
pub mod name;
pub mod put;
pub mod runtimes;

pub use catalog::CatalogDir;
pub use document::{Action, Exec, KeyValue, Limits};
pub use encryption::ParameterEncryption;
pub use limits::SystemLimits;
pub use name::FullyQualifiedEntityName;
pub use runtimes::{Reactive, Runtimes, StemCell};

/// Upstream's `Messages`, word for word.
pub const NOT_FOUND: &str = "Action could not be found or may have been deleted.";
pub const INCOMPATIBLE: &str = "Action version is not compatible and cannot be invoked.";
pub const NOT_FETCHED: &str = "Action could not be fetched.";

/// Why an action could not be resolved, in upstream's classes (`InvokerReactive.
/// handleActivationMessage`): the activation layer answers each as upstream does
/// (`ActivationResponse::from(&ActionError)`).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// `NoDocumentException`.
    #[error("action {0} does not exist")]
    NotFound(String),
    /// `DocumentRevisionMismatchException`: the runner asks again for the latest document.
    #[error("action {name} has revision {have}, the activation asks for {want}")]
    Revision {
        name: String,
        have: String,
        want: String,
    },
    /// `ActionLimitsException`: upstream's message for the limit.
    #[error("action {name}: {message}")]
    Limits { name: String, message: String },
    /// `DocumentTypeMismatchException` or `DocumentUnreadable`: not an action document, a
    /// kind the runtimes manifest does not know, a blackbox image it does not allow.
    #[error("action {name} cannot be invoked: {reason}")]
    Incompatible { name: String, reason: String },
    /// Anything else: the store is unreachable, an attachment is missing or corrupt, a
    /// parameter's encryption key is not configured.
    #[error("action {name} could not be fetched: {reason}")]
    Fetch { name: String, reason: String },
    /// A catalog or manifest file at start-up.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// Resolves an activation's action to its definition.
#[async_trait::async_trait]
pub trait ActionStore: Send + Sync + std::fmt::Debug {
    /// The action at `revision` (`None`: the latest).
    async fn resolve(
        &self,
        name: &FullyQualifiedEntityName,
        revision: Option<&str>,
    ) -> Result<Action, ActionError>;
}
