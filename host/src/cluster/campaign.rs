//! A member campaigns only when an election can help. openraft 0.9 has no pre-vote: a member
//! whose election timer fires raises its term, and that higher term, once it reaches the
//! leader (in a vote request or an append-entries reply), deposes it, however healthy it is.
//! Two such cases cost a needless failover, so this guard switches elections off
//! (`runtime_config().elect(false)`) around them:
//!
//! - **No quorum.** Each heartbeat interval the member pings its peers (authenticated, within a
//!   generous 500 ms: a slow answer on a busy machine is not a partition). While fewer than a
//!   quorum (itself included) answer, elections are off, so a member cut off from the others
//!   keeps its term and rejoins as a follower.
//! - **A live leader it has not heard yet.** Elections come back on only once this member has
//!   heard a leader itself (its timer was just reset), or, after `settle` (2 ×
//!   `election-timeout-max-ms`) with a quorum reachable, when no reachable peer has heard a
//!   leader within the election timeout (each ping answers how long ago that peer heard one: a
//!   pre-vote). Before this, a healed member (or a restarted one, which starts with elections
//!   off) whose leader's replication was still in its retry pause campaigned on an expired
//!   timer and deposed the leader: the chaos suite saw a healthy active host re-claim after
//!   such heals.
//!
//! It changes nothing for a leader. While elections are on, a member that stops hearing its
//! leader campaigns on its own timer — or earlier, when it knows the leader is gone:
//!
//! - **The leader is gone.** openraft's follower timer fires `election-timeout-max-ms` (the
//!   voters' lease: they refuse any candidate until it has passed since they heard the leader)
//!   *plus* a random election timeout after the last heartbeat, so a failover spent 150–300 ms
//!   waiting for nothing. When the leader does not answer the ping, no reachable peer hears a
//!   live leader, and this member has heard none for longer than the lease (+ a margin), the
//!   member first in line — the highest applied index among those reachable, then the lowest
//!   id — calls the election at once (`trigger().elect()`), once per term. The others keep
//!   their timers, the fallback if that election fails. Safety is untouched: the voters' lease
//!   check, which the lease rule relies on, is openraft's and still applies; only the moment a
//!   candidate asks moves.

use super::contact::{LeaderContact, Pong};
use super::network::{self, Peers};
use super::types::{NodeId, Raft};

use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Whether `reachable` peers plus this member make a quorum of `members`.
pub fn may_campaign(reachable: usize, members: usize) -> bool {
    reachable + 1 > members / 2
}

/// What the guard knows on one round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// A quorum (this member included) answers.
    pub quorum: bool,
    /// For how long it has answered.
    pub quorum_since: Duration,
    /// This member heard a leader within the election timeout.
    pub hears_leader: bool,
    /// A reachable peer hears a live leader of this member's term or higher.
    pub peer_hears_leader: bool,
}

/// Whether elections should be on, given whether they are and this round.
pub fn elections_on(on: bool, round: Round, settle: Duration) -> bool {
    if !round.quorum {
        return false;
    }
    on || round.hears_leader || (round.quorum_since >= settle && !round.peer_hears_leader)
}

/// After the voters' lease (`election-timeout-max-ms`) has passed, this much longer before a
/// member calls an election early: voters heard the last heartbeat at slightly different
/// instants.
pub const LEASE_MARGIN: Duration = Duration::from_millis(10);

/// What a follower knows when deciding to call an election before its timer.
#[derive(Debug, Clone, Copy)]
pub struct Follower {
    pub id: NodeId,
    pub leader: Option<NodeId>,
    pub applied: Option<u64>,
    /// How long ago it last heard its leader.
    pub heard_ago: Option<Duration>,
}

/// Whether `me` should call an election now: its leader did not answer the ping (`answered`
/// are the peers that did), no answering peer hears a live leader (`peer_hears_leader`), the
/// voters' `lease` has passed since `me` heard the leader, and `me` is first in line among those
/// that answered (highest applied index, then lowest id).
pub fn call_election_now(
    me: Follower,
    answered: &[(NodeId, Pong)],
    peer_hears_leader: bool,
    lease: Duration,
) -> bool {
    let Some(leader) = me.leader.filter(|l| *l != me.id) else {
        return false;
    };
    let gone = !answered.iter().any(|(id, _)| *id == leader);
    let lease_over = me.heard_ago.is_some_and(|ago| ago >= lease + LEASE_MARGIN);
    let first = answered.iter().all(|(id, pong)| {
        (me.applied, std::cmp::Reverse(me.id)) >= (pong.last_applied, std::cmp::Reverse(*id))
    });
    gone && lease_over && first && !peer_hears_leader
}

/// Runs until `stop` turns true; `peers` reaches every other member.
pub async fn guard(
    raft: Raft,
    contact: std::sync::Arc<LeaderContact>,
    peers: Peers,
    every: Duration,
    timeout: Duration,
    settle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let members = peers.routes().len() + 1;
    // Generous: a slow answer on a busy machine is not a partition.
    let limit = (every * 4).max(Duration::from_millis(500));
    // The node starts a member with peers with elections off (a lone member has nobody to wait
    // for); a fresh cluster's `initialize` campaigns regardless.
    let mut allowed = members == 1;
    let mut quorum_since = Instant::now();
    // The term in which this member last called an election early (once per term).
    let mut called_in_term = None;
    loop {
        let pongs = network::ping(&peers, limit).await;
        let metrics = raft.metrics().borrow().clone();
        let term = metrics.current_term;
        let quorum = may_campaign(pongs.len(), members);
        if !quorum {
            quorum_since = Instant::now();
        }
        let round = Round {
            quorum,
            quorum_since: quorum_since.elapsed(),
            hears_leader: contact.ago().is_some_and(|d| d < timeout),
            peer_hears_leader: pongs.iter().any(|(_, p)| p.hears_a_leader(term, timeout)),
        };
        let ok = elections_on(allowed, round, settle);
        if ok != allowed {
            allowed = ok;
            raft.runtime_config().elect(ok);
            if ok {
                tracing::info!(
                    reachable = pongs.len(),
                    hears_leader = round.hears_leader,
                    "may campaign"
                );
            } else {
                tracing::warn!(
                    reachable = pongs.len(),
                    members,
                    "cannot reach a quorum: not campaigning (keeps the term; rejoins as a follower)"
                );
            }
        }
        let me = Follower {
            id: metrics.id,
            leader: metrics.current_leader,
            applied: metrics.last_applied.map(|l| l.index),
            heard_ago: contact.ago(),
        };
        if allowed
            && called_in_term != Some(term)
            && call_election_now(me, &pongs, round.peer_hears_leader, timeout)
        {
            called_in_term = Some(term);
            tracing::info!(
                leader = ?me.leader,
                heard_ms_ago = ?me.heard_ago.map(|d| d.as_millis()),
                "the leader is gone and its lease is over: calling an election now"
            );
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!("calling an election: {e}");
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
    use super::{elections_on, may_campaign, Pong, Round};
    use std::time::Duration;

    fn round(quorum: bool, since_ms: u64, hears: bool, peer_hears: bool) -> Round {
        Round {
            quorum,
            quorum_since: Duration::from_millis(since_ms),
            hears_leader: hears,
            peer_hears_leader: peer_hears,
        }
    }

    #[test]
    fn elections_come_back_only_after_the_quorum_answered_for_settle() {
        let settle = Duration::from_millis(600);
        assert!(!elections_on(true, round(false, 0, true, false), settle));
        assert!(!elections_on(false, round(true, 20, false, false), settle));
        assert!(elections_on(false, round(true, 600, false, false), settle));
        assert!(elections_on(true, round(true, 0, false, true), settle));
    }

    #[test]
    fn a_member_that_has_not_heard_a_live_leader_waits_for_it() {
        let settle = Duration::from_millis(600);
        // healed (or restarted): a peer hears a leader, this member not yet
        assert!(!elections_on(
            false,
            round(true, 5_000, false, true),
            settle
        ));
        // the leader's append arrived: the timer is fresh
        assert!(elections_on(false, round(true, 10, true, true), settle));
    }

    #[test]
    fn a_pong_refuses_only_for_a_live_leader_of_a_term_as_high() {
        let timeout = Duration::from_millis(300);
        let leader = Pong {
            term: 5,
            leader_heard_ms_ago: Some(0),
            last_applied: None,
        };
        assert!(leader.hears_a_leader(5, timeout));
        assert!(!leader.hears_a_leader(6, timeout));
        let stale = Pong {
            term: 5,
            leader_heard_ms_ago: Some(900),
            last_applied: None,
        };
        assert!(!stale.hears_a_leader(5, timeout));
        let never = Pong {
            term: 5,
            leader_heard_ms_ago: None,
            last_applied: None,
        };
        assert!(!never.hears_a_leader(1, timeout));
    }

    fn pong(applied: u64) -> Pong {
        Pong {
            term: 5,
            leader_heard_ms_ago: Some(400),
            last_applied: Some(applied),
        }
    }

    #[test]
    fn the_first_in_line_calls_an_election_once_the_gone_leaders_lease_is_over() {
        use super::{call_election_now, Follower};
        let lease = Duration::from_millis(300);
        let me = |id, applied, ago_ms| Follower {
            id,
            leader: Some(1),
            applied: Some(applied),
            heard_ago: Some(Duration::from_millis(ago_ms)),
        };
        // leader 1 does not answer; 2 and 3 hold the same log: 2 goes first, 3 waits
        assert!(call_election_now(
            me(2, 40, 320),
            &[(3, pong(40))],
            false,
            lease
        ));
        assert!(!call_election_now(
            me(3, 40, 320),
            &[(2, pong(40))],
            false,
            lease
        ));
        // a longer log goes first whatever the ids
        assert!(call_election_now(
            me(3, 41, 320),
            &[(2, pong(40))],
            false,
            lease
        ));
        // not before the voters' lease (and its margin) is over
        assert!(!call_election_now(
            me(2, 40, 305),
            &[(3, pong(40))],
            false,
            lease
        ));
        // not while the leader answers, nor while a peer hears a live leader
        assert!(!call_election_now(
            me(2, 40, 320),
            &[(1, pong(40)), (3, pong(40))],
            false,
            lease
        ));
        assert!(!call_election_now(
            me(2, 40, 320),
            &[(3, pong(40))],
            true,
            lease
        ));
        // a member that never heard a leader, or is the leader, leaves it to the timers
        let never = Follower {
            heard_ago: None,
            ..me(2, 40, 0)
        };
        assert!(!call_election_now(never, &[(3, pong(40))], false, lease));
        let leads = Follower {
            leader: Some(2),
            ..me(2, 40, 320)
        };
        assert!(!call_election_now(leads, &[(3, pong(40))], false, lease));
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
