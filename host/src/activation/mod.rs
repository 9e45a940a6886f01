//! OpenWhisk's wire formats and the action container protocol.
//!
//! - [`message`]: `ActivationMessage`, as the controller writes it to `invoker{N}`;
//! - [`record`]: the `WhiskActivation` record and its `ActivationResponse`;
//! - [`ack`]: what goes back on `completed{controller}` and `health`;
//! - [`arguments`]: what `/init` and `/run` are given (arguments, environment);
//! - [`proxy`]: the client for a container's action proxy (`/init`, `/run`).
//!
//! Field names and shapes follow OpenWhisk's Scala serializers (`core/connector/Message.scala`,
//! `core/entity/*`): readers tolerate absent optional fields and unknown fields, writers emit
//! what a stock controller reads.

pub mod ack;
pub mod arguments;
pub mod logs;
pub mod message;
pub mod proxy;
pub mod record;
pub mod runner;

pub use ack::{Acknowledgement, InvokerInstanceId, PingMessage};
pub use message::{ActivationMessage, TransactionId, Unreadable};
pub use record::{ActivationResponse, StatusCode, WhiskActivation};
pub use runner::{Delivery, Gate, Outcome, Runner};

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod runner_tests;
#[cfg(test)]
mod tests;
