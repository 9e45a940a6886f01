//! A member that cannot reach a quorum does not campaign. openraft 0.9 has no pre-vote: a
//! member cut off from the others times out, starts elections nobody answers and raises its
//! term again and again; when the partition heals, its high term reaches the healthy leader
//! (in an append-entries reply) and deposes it. So every member checks, each heartbeat
//! interval, which peers answer an authenticated ping (within a generous 500 ms: a slow
//! answer on a busy machine is not a partition); while fewer than a quorum (itself
//! included) do, its elections are switched off (`runtime_config().elect(false)`), so its term
//! stays where it was and it rejoins as a follower. It changes nothing for a leader.
//!
//! Switching them back on waits `settle` (2 × `election-timeout-max-ms`) after the quorum is
//! reachable again: the member's election timer expired long ago during the partition, and
//! turned on at once it fired before the leader's first heartbeat after the heal arrived —
//! the chaos suite saw every healed standby depose a healthy leader 20 ms after the heal.
//! Within `settle` those heartbeats reset the timer; a member whose leader really is gone
//! campaigns `settle` later than it could have.

use super::network;
use super::types::Raft;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::sync::watch;

/// Whether `reachable` peers plus this member make a quorum of `members`.
pub fn may_campaign(reachable: usize, members: usize) -> bool {
    reachable + 1 > members / 2
}

/// Whether elections should be on, given whether they are, whether a quorum answers now, and
/// since when it has answered.
pub fn elections_on(on: bool, quorum: bool, quorum_since: Duration, settle: Duration) -> bool {
    match (on, quorum) {
        (_, false) => false,
        (true, true) => true,
        (false, true) => quorum_since >= settle,
    }
}

/// Runs until `stop` turns true.
pub async fn guard(
    raft: Raft,
    others: Vec<String>,
    secret: String,
    every: Duration,
    settle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let members = others.len() + 1;
    // Generous: a slow answer on a busy machine is not a partition.
    let limit = (every * 4).max(Duration::from_millis(500));
    let mut allowed = true;
    let mut quorum_since = std::time::Instant::now();
    loop {
        let n = network::reachable(&client, &others, &secret, limit).await;
        let quorum = may_campaign(n, members);
        if !quorum {
            quorum_since = std::time::Instant::now();
        }
        let ok = elections_on(allowed, quorum, quorum_since.elapsed(), settle);
        if ok != allowed {
            allowed = ok;
            raft.runtime_config().elect(ok);
            if ok {
                tracing::info!(reachable = n, "a quorum is reachable again: may campaign");
            } else {
                tracing::warn!(
                    reachable = n,
                    members,
                    "cannot reach a quorum: not campaigning (keeps the term; rejoins as a follower)"
                );
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{elections_on, may_campaign};
    use std::time::Duration;

    #[test]
    fn elections_come_back_only_after_the_quorum_answered_for_settle() {
        let settle = Duration::from_millis(600);
        assert!(!elections_on(true, false, Duration::ZERO, settle));
        assert!(!elections_on(
            false,
            true,
            Duration::from_millis(20),
            settle
        ));
        assert!(elections_on(
            false,
            true,
            Duration::from_millis(600),
            settle
        ));
        assert!(elections_on(true, true, Duration::ZERO, settle));
    }

    #[test]
    fn a_quorum_counts_this_member() {
        assert!(may_campaign(1, 3));
        assert!(!may_campaign(0, 3));
        assert!(may_campaign(2, 5));
        assert!(!may_campaign(1, 5));
        assert!(may_campaign(0, 1));
    }
}
