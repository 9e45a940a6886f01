//! The peer listener's shared state: what every handler on it reaches.

use super::contact::LeaderContact;
use super::transport::Transport;
use super::types::Raft;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// What the peer listener's handlers share.
#[derive(Clone)]
pub struct Peer {
    pub raft: Raft,
    pub transport: Arc<Transport>,
    /// Accepted (in constant time) for admin endpoints, next to an admin certificate.
    pub admin_token: Option<Arc<str>>,
    /// While a member whose storage was wiped catches up: the log index its peers had
    /// applied when it rejoined. It votes only for candidates whose log reaches that index,
    /// so it cannot elect one that lacks entries it had acknowledged before the wipe (and a
    /// cluster of blank members can still elect). 0: votes as usual.
    pub vote_floor: Arc<AtomicU64>,
    /// Touched on every append-entries this member accepts from a leader.
    pub contact: Arc<LeaderContact>,
    /// Step-down and handback requests, on their way to the roles.
    pub inbox: super::inbox::Inbox,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("admin_token", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}
