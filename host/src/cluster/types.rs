//! The Raft type configuration.

use super::state::{Command, Reply};
use std::io::Cursor;

openraft::declare_raft_types!(
    /// keepwarm's Raft: commands change the replicated pool; nodes are reached over HTTP.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
