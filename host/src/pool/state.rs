//! The pool's bookkeeping, behind one lock and free of I/O.

use super::timing::Timing;
use super::{Allocation, Churn, PoolStats, Start, Want, WarmKey};
use crate::factory::Container;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Prewarm,
    Warm(WarmKey),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub container: Container,
    pub kind: String,
    pub image: String,
    pub memory_mb: u32,
    pub phase: Phase,
    pub in_flight: u32,
    pub concurrency: u32,
    pub last_used: Instant,
}

#[derive(Debug, Default)]
pub struct State {
    entries: HashMap<String, Entry>,
    /// User memory held: every entry's, plus reservations for containers being created.
    /// Changed only through the methods below, which keep that sum.
    used_mb: u64,
    pub waiting: usize,
    /// Containers this pool created (not adopted).
    created: u64,
    pub churn: Churn,
    /// Busy containers the engine no longer lists: what runs in them is lost with their
    /// engine, and a request not yet sent must go elsewhere.
    vanished: std::collections::HashSet<String>,
    /// Containers held that the engine's last list left out: not offered to activations
    /// until a list has them again. One list may miss a container whose engine did not
    /// answer for a moment; the next one decides whether it is forgotten.
    pub unlisted: std::collections::HashSet<String>,
    /// Kinds of prewarm containers being created right now.
    pub pending_prewarm: HashMap<(String, u32), usize>,
    /// Cold starts per (kind, memory) since the last upkeep, for reactive prewarming.
    pub cold_starts: HashMap<(String, u32), u32>,
    /// Prewarm count wanted per (kind, memory), for reactive stem cells.
    pub targets: HashMap<(String, u32), u32>,
    /// Names of containers being created right now.
    pub creating: std::collections::HashSet<String>,
    /// Activations waiting for a busy warm container of their action.
    pub queued: HashMap<WarmKey, usize>,
    pub timing: Timing,
}

impl State {
    /// Holds `memory_mb` for a container about to be created; `false` (nothing held) when
    /// that would pass `cap`.
    pub fn reserve(&mut self, memory_mb: u32, cap: u64) -> bool {
        let need = u64::from(memory_mb);
        if self.used_mb + need > cap {
            return false;
        }
        self.used_mb += need;
        true
    }

    /// Gives back a reservation whose container was not created.
    pub fn unreserve(&mut self, memory_mb: u32) {
        self.used_mb -= u64::from(memory_mb);
    }

    /// A container created on a reservation (its memory is already held): a cold start when
    /// it enters warm, a prewarm otherwise.
    pub fn insert_created(&mut self, entry: Entry) {
        self.created += 1;
        match entry.phase {
            Phase::Prewarm => self.churn.created_prewarm += 1,
            _ => self.churn.created_cold += 1,
        }
        self.insert(entry);
    }

    /// A container another host created (after a failover): its memory is held from now.
    pub fn adopt(&mut self, entry: Entry) {
        self.used_mb += u64::from(entry.memory_mb);
        self.insert(entry);
    }

    fn insert(&mut self, entry: Entry) {
        self.entries.insert(entry.container.id.clone(), entry);
    }

    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        self.vanished.remove(id);
        let e = self.entries.remove(id)?;
        self.used_mb -= u64::from(e.memory_mb);
        Some(e)
    }

    pub fn drain(&mut self) -> Vec<Entry> {
        self.used_mb = 0;
        self.entries.drain().map(|(_, e)| e).collect()
    }

    pub fn take_warm(&mut self, want: &Want) -> Option<Allocation> {
        let unlisted = &self.unlisted;
        let e = self
            .entries
            .values_mut()
            .filter(|e| e.phase == Phase::Warm(want.key.clone()) && e.in_flight < e.concurrency)
            .filter(|e| !unlisted.contains(&e.container.id))
            .max_by_key(|e| e.in_flight)?;
        e.in_flight += 1;
        e.last_used = Instant::now();
        Some(Allocation {
            container: e.container.clone(),
            needs_init: false,
            start: Start::Warm,
            taken: Instant::now(),
        })
    }

    pub fn take_prewarm(&mut self, want: &Want) -> Option<Allocation> {
        if want.blackbox {
            return None;
        }
        let unlisted = &self.unlisted;
        let e = self.entries.values_mut().find(|e| {
            e.phase == Phase::Prewarm
                && e.kind == want.kind
                && e.memory_mb == want.memory_mb
                && !unlisted.contains(&e.container.id)
        })?;
        e.phase = Phase::Warm(want.key.clone());
        e.concurrency = want.concurrency.max(1);
        e.in_flight = 1;
        e.last_used = Instant::now();
        Some(Allocation {
            container: e.container.clone(),
            needs_init: true,
            start: Start::Prewarm,
            taken: Instant::now(),
        })
    }

    /// Removes idle containers until `need` fits under `cap`: idle warm ones first, least
    /// recently used first, then prewarms, oldest first (a prewarm held memory an activation
    /// needs would otherwise leave it waiting forever). Removes nothing when evicting every
    /// idle one would still not make room.
    /// Only containers idle for at least `min_idle` are candidates.
    pub fn evict_for(&mut self, need: u64, cap: u64, min_idle: Duration) -> Vec<Entry> {
        if self.used_mb + need <= cap {
            return Vec::new();
        }
        let now = Instant::now();
        let mut idle: Vec<(bool, Instant, String, u64)> = self
            .entries
            .values()
            .filter(|e| e.in_flight == 0 && now.duration_since(e.last_used) >= min_idle)
            .map(|e| {
                (
                    e.phase == Phase::Prewarm,
                    e.last_used,
                    e.container.id.clone(),
                    u64::from(e.memory_mb),
                )
            })
            .collect();
        let reclaimable: u64 = idle.iter().map(|(_, _, _, m)| m).sum();
        if self.used_mb - reclaimable + need > cap {
            return Vec::new();
        }
        idle.sort();
        let mut out = Vec::new();
        for (_, _, id, _) in idle {
            if self.used_mb + need <= cap {
                break;
            }
            out.extend(self.remove(&id));
        }
        out
    }

    pub fn holds(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Every container held.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Ids of every container held.
    pub fn ids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Marks a busy container its engine no longer lists; true the first time.
    pub fn mark_vanished(&mut self, id: &str) -> bool {
        self.entries.contains_key(id) && self.vanished.insert(id.to_owned())
    }

    /// Whether the engine stopped listing `id` (once is enough to send nothing more there).
    pub fn has_vanished(&self, id: &str) -> bool {
        self.vanished.contains(id) || self.unlisted.contains(id)
    }

    pub fn container(&self, id: &str) -> Option<Container> {
        self.entries.get(id).map(|e| e.container.clone())
    }

    /// Replaces a held container's record (same id) with `c`.
    pub fn refresh(&mut self, c: Container) {
        if let Some(e) = self.entries.get_mut(&c.id) {
            e.container = c;
        }
    }

    pub fn is_idle(&self, id: &str) -> bool {
        self.entries.get(id).is_some_and(|e| e.in_flight == 0)
    }

    /// The action a warm container holds.
    pub fn warm_key(&self, id: &str) -> Option<WarmKey> {
        match &self.entries.get(id)?.phase {
            Phase::Warm(k) => Some(k.clone()),
            Phase::Prewarm => None,
        }
    }

    /// Warm containers of `key` that are busy to their concurrency limit.
    pub fn busy_warm(&self, key: &WarmKey) -> usize {
        let phase = Phase::Warm(key.clone());
        self.entries
            .values()
            .filter(|e| e.phase == phase && e.in_flight >= e.concurrency)
            .count()
    }

    /// An uninitialized container goes back to being a prewarm; true when it became idle.
    pub fn back_to_prewarm(&mut self, id: &str) -> bool {
        match self.entries.get_mut(id) {
            Some(e) => {
                e.phase = Phase::Prewarm;
                e.in_flight = 0;
                e.concurrency = 1;
                e.last_used = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Marks one activation done; true when the container became idle.
    pub fn release(&mut self, id: &str) -> bool {
        match self.entries.get_mut(id) {
            Some(e) => {
                e.in_flight = e.in_flight.saturating_sub(1);
                e.last_used = Instant::now();
                e.in_flight == 0
            }
            None => false,
        }
    }

    pub fn take_idle_older_than(&mut self, timeout: Duration) -> Vec<Entry> {
        let now = Instant::now();
        let old: Vec<String> = self
            .entries
            .values()
            .filter(|e| {
                matches!(e.phase, Phase::Warm(_))
                    && e.in_flight == 0
                    && now.duration_since(e.last_used) > timeout
            })
            .map(|e| e.container.id.clone())
            .collect();
        old.iter().filter_map(|id| self.remove(id)).collect()
    }

    pub fn prewarm_count(&self, kind: &str, memory_mb: u32) -> usize {
        self.entries
            .values()
            .filter(|e| e.phase == Phase::Prewarm && e.kind == kind && e.memory_mb == memory_mb)
            .count()
    }

    /// Removes up to `n` prewarm containers of a kind unused for longer than `ttl`.
    pub fn take_expired_prewarm(
        &mut self,
        kind: &str,
        memory_mb: u32,
        ttl: Duration,
        n: usize,
    ) -> Vec<Entry> {
        let now = Instant::now();
        let expired: Vec<String> = self
            .entries
            .values()
            .filter(|e| {
                e.phase == Phase::Prewarm
                    && e.kind == kind
                    && e.memory_mb == memory_mb
                    && now.duration_since(e.last_used) > ttl
            })
            .map(|e| e.container.id.clone())
            .take(n)
            .collect();
        expired.iter().filter_map(|id| self.remove(id)).collect()
    }

    pub fn prewarm_pending(&self, kind: &str, memory_mb: u32) -> usize {
        self.pending_prewarm
            .get(&(kind.to_owned(), memory_mb))
            .copied()
            .unwrap_or(0)
    }

    /// Containers by what they hold (an action, or a prewarm kind) and plugin.
    pub fn by_action(&self) -> Vec<super::ActionPool> {
        let mut rows: std::collections::BTreeMap<(String, String), super::ActionPool> =
            Default::default();
        for e in self.entries.values() {
            let plugin = crate::engines::plugin_of(&e.container)
                .unwrap_or_default()
                .to_owned();
            let holds = match &e.phase {
                Phase::Prewarm => format!("prewarm {} {} MB", e.kind, e.memory_mb),
                Phase::Warm(key) => key.action.clone(),
            };
            let row = rows
                .entry((holds.clone(), plugin.clone()))
                .or_insert_with(|| super::ActionPool {
                    action: holds,
                    plugin,
                    kind: e.kind.clone(),
                    ..Default::default()
                });
            match (&e.phase, e.in_flight) {
                (Phase::Prewarm, _) => row.prewarm += 1,
                (_, 0) => row.warm += 1,
                _ => row.busy += 1,
            }
        }
        rows.into_values().collect()
    }

    pub fn stats(&self) -> PoolStats {
        let mut s = PoolStats {
            used_mb: self.used_mb,
            created: self.created,
            churn: self.churn,
            ..Default::default()
        };
        for e in self.entries.values() {
            s.unlisted += usize::from(self.unlisted.contains(&e.container.id));
            match (&e.phase, e.in_flight) {
                (Phase::Prewarm, _) => s.prewarm += 1,
                (_, 0) => s.warm_idle += 1,
                _ => s.busy += 1,
            }
        }
        s
    }
}
