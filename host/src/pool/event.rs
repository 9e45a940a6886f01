//! Pool changes, published for replication and metrics.

use super::WarmKey;
use crate::factory::Container;

#[derive(Debug, Clone, PartialEq)]
pub enum PoolEvent {
    Created {
        container: Container,
        kind: String,
        image: String,
        memory_mb: u32,
    },
    /// The container now holds this action's code (after /init or when taken from prewarm).
    Initialized {
        id: String,
        key: WarmKey,
    },
    BecameBusy {
        id: String,
        /// See [`super::Want::journaled`].
        journaled: bool,
    },
    BecameIdle {
        id: String,
    },
    Destroyed {
        id: String,
    },
}
