//! What happens with time and outside the frameworks' calls: heartbeats, offers each
//! allocation interval, re-sent updates, failover timeouts, removal of frameworks and agents.

use super::{encode, id, is_terminal, Agent, Offer, Shared, State, MIN_CPUS, MIN_MEM};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

impl Shared {
    // ---- time --------------------------------------------------------------------------

    /// Heartbeats, offers, update retries and failover timeouts; run every few ms.
    pub fn tick(self: &Arc<Self>) {
        let mut expired = Vec::new();
        {
            let mut st = self.lock();
            let now = Instant::now();
            if st
                .last_heartbeat
                .is_none_or(|t| now - t >= self.options.heartbeat)
            {
                st.last_heartbeat = Some(now);
                let heartbeat = encode(&json!({"type": "HEARTBEAT"}));
                for f in st.frameworks.values().filter(|f| !f.partitioned) {
                    if let Some(c) = &f.connection {
                        let _ = c.tx.send(heartbeat.clone());
                    }
                }
            }
            let retry: Vec<_> = st
                .tasks
                .iter()
                .filter(|(_, t)| {
                    !t.updates.is_empty()
                        && t.front_sent
                            .is_none_or(|s| now - s >= self.options.update_retry)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in retry {
                st.send_front(&key);
            }
            for (fid, f) in &st.frameworks {
                if f.disconnected_at
                    .is_some_and(|d| now - d >= f.failover_timeout)
                {
                    expired.push(fid.clone());
                }
            }
            if st
                .last_allocation
                .is_none_or(|t| now - t >= self.options.allocation_interval)
            {
                st.last_allocation = Some(now);
                self.allocate(&mut st);
            }
        }
        for fid in expired {
            self.remove_framework(&fid);
        }
    }

    fn allocate(&self, st: &mut State) {
        let now = Instant::now();
        let mut candidates: Vec<String> = st
            .frameworks
            .iter()
            .filter(|(_, f)| f.connection.is_some() && !f.suppressed)
            .map(|(id, _)| id.clone())
            .collect();
        candidates.sort();
        let agents: Vec<Agent> = st.agents.iter().filter(|a| !a.removed).cloned().collect();
        for (i, agent) in agents.into_iter().enumerate() {
            let Agent {
                id: agent_id,
                hostname,
                cpus,
                mem,
                ports: (begin, end),
                ..
            } = agent;
            let (used_cpus, used_mem, used_ports) = st.used(&agent_id);
            let free_cpus = ((cpus - used_cpus) * 1000.0).round() / 1000.0;
            let free_mem = mem - used_mem;
            let free_ports: Vec<u16> = (begin..=end).filter(|p| !used_ports.contains(p)).collect();
            if free_cpus < MIN_CPUS || free_mem < MIN_MEM {
                continue;
            }
            // Agents go round the frameworks, skipping those that filter this agent.
            let Some(fid) = (0..candidates.len())
                .map(|k| &candidates[(i + k) % candidates.len()])
                .find(|fid| {
                    st.frameworks[*fid]
                        .filters
                        .get(&agent_id)
                        .is_none_or(|until| *until <= now)
                })
                .cloned()
            else {
                continue;
            };
            let offer_id = st.next_id(&self.master_id, "O");
            let offer = json!({
                "id": id(&offer_id),
                "framework_id": id(&fid),
                "agent_id": id(&agent_id),
                "hostname": hostname,
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": free_cpus}, "role": "*"},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": free_mem}, "role": "*"},
                    {"name": "ports", "type": "RANGES", "ranges": {"range": ranges(&free_ports)}, "role": "*"},
                ],
            });
            st.offers.insert(
                offer_id,
                Offer {
                    framework_id: fid.clone(),
                    agent_id,
                    cpus: free_cpus,
                    mem: free_mem,
                    ports: free_ports,
                },
            );
            st.send(
                &fid,
                &json!({"type": "OFFERS", "offers": {"offers": [offer]}}),
            );
        }
    }

    /// Failover timeout ran out, or TEARDOWN: every task is killed, the framework is gone.
    pub fn remove_framework(self: &Arc<Self>, fid: &str) {
        let containers: Vec<String> = {
            let mut st = self.lock();
            st.frameworks.remove(fid);
            st.removed.insert(fid.to_owned());
            st.rescind_offers(|o| o.framework_id == fid);
            let keys: Vec<_> = st.tasks.keys().filter(|k| k.0 == fid).cloned().collect();
            keys.into_iter()
                .filter_map(|k| st.tasks.remove(&k).and_then(|t| t.container))
                .collect()
        };
        let shared = self.clone();
        tokio::spawn(async move {
            for c in containers {
                shared.engine.remove(&c).await;
            }
        });
    }

    /// The agent is removed from the cluster: its tasks are lost, its offers rescinded.
    pub async fn remove_agent(self: &Arc<Self>, agent_id: &str) {
        let containers: Vec<String> = {
            let mut st = self.lock();
            let Some(agent) = st.agents.iter_mut().find(|a| a.id == agent_id) else {
                return;
            };
            agent.removed = true;
            st.rescind_offers(|o| o.agent_id == agent_id);
            let keys: Vec<_> = st
                .tasks
                .iter()
                .filter(|(_, t)| t.agent_id == agent_id)
                .map(|(k, _)| k.clone())
                .collect();
            let mut containers = Vec::new();
            let frameworks: HashSet<String> = keys.iter().map(|k| k.0.clone()).collect();
            for key in keys {
                let t = st.tasks.remove(&key).expect("listed");
                containers.extend(t.container);
                if !is_terminal(t.state) {
                    st.tell(
                        &key.0,
                        &key,
                        agent_id,
                        "TASK_LOST",
                        Some("REASON_AGENT_REMOVED"),
                        Some("Agent removed"),
                    );
                }
            }
            for fid in frameworks {
                st.send(
                    &fid,
                    &json!({"type": "FAILURE", "failure": {"agent_id": id(agent_id)}}),
                );
            }
            containers
        };
        for c in containers {
            self.engine.remove(&c).await;
        }
    }
}

fn ranges(ports: &[u16]) -> Vec<Value> {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for p in sorted {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == p => *end = p,
            _ => out.push((p, p)),
        }
    }
    out.into_iter()
        .map(|(b, e)| json!({"begin": b, "end": e}))
        .collect()
}
