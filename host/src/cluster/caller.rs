//! Who is asking, settled before a peer-listener handler runs: each handler names the caller
//! it accepts as an extractor, and a request from anyone else is refused with the reason.
//!
//! - [`Admin`]: an admin certificate, or the admin token compared in constant time;
//! - [`FromMember`]: a member's certificate (or, in an `insecure` cluster, the secret); an
//!   admin certificate cannot take part in Raft. What the member may speak for is checked per
//!   request ([`Peer::speaks_for`], [`Peer::leader_asking`]).

use super::http::{error, Refusal};
use super::peer::Peer;
use super::tls::Identity;
use super::transport::{same, Transport};
use super::types::NodeId;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

/// A request an admin sent.
#[derive(Debug)]
pub struct Admin;

/// A request a member sent: the identity its connection proves.
#[derive(Debug, Clone, Copy)]
pub struct FromMember(pub Identity);

/// The identity the connection's certificate proved (set by the listener on every connection).
fn connection(parts: &Parts) -> Result<Identity, Refusal> {
    parts.extensions.get::<Identity>().copied().ok_or_else(|| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the connection carries no identity",
        )
    })
}

impl FromRequestParts<Peer> for Admin {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, peer: &Peer) -> Result<Self, Refusal> {
        if connection(parts)? == Identity::Admin {
            return Ok(Admin);
        }
        match (&peer.admin_token, bearer(&parts.headers)) {
            (Some(token), Some(presented)) if same(presented.as_bytes(), token.as_bytes()) => {
                Ok(Admin)
            }
            (None, _) if !matches!(*peer.transport, Transport::Tls(_)) => Err(error(
                StatusCode::FORBIDDEN,
                "membership changes are disabled: set [cluster] admin-token",
            )),
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "an admin certificate (admin.keepwarm) or the admin token (authorization: Bearer …) is required",
            )),
        }
    }
}

impl FromRequestParts<Peer> for FromMember {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, peer: &Peer) -> Result<Self, Refusal> {
        match peer.transport.peer(connection(parts)?, &parts.headers) {
            Some(Identity::Admin) => Err(error(
                StatusCode::FORBIDDEN,
                "an admin certificate cannot take part in Raft",
            )),
            Some(member) => Ok(FromMember(member)),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "cluster credentials required",
            )),
        }
    }
}

/// The bearer token of `authorization`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

impl Peer {
    /// Refuses a request that names another member than the certificate does.
    pub(super) fn speaks_for(&self, from: FromMember, id: NodeId) -> Result<(), Refusal> {
        let FromMember(peer) = from;
        if peer.speaks_for(id) {
            Ok(())
        } else {
            tracing::warn!(
                ?peer,
                claimed = id,
                "a peer's request names another member: refused"
            );
            Err(error(
                StatusCode::FORBIDDEN,
                format!("{peer:?} cannot speak for member {id}"),
            ))
        }
    }

    /// The leader this member follows, when it is the one asking; else 403 saying what only
    /// it may ask (`what`).
    pub(super) fn leader_asking(&self, from: FromMember, what: &str) -> Result<NodeId, Refusal> {
        let leader = self.raft.metrics().borrow().current_leader;
        leader.filter(|l| from.0.speaks_for(*l)).ok_or_else(|| {
            error(
                StatusCode::FORBIDDEN,
                format!("only the leader this member follows may {what}"),
            )
        })
    }
}
