//! The framework's link to the master: one `SUBSCRIBE` stream kept open across factory calls,
//! read whenever a call needs events, and the calls sent beside it.
//!
//! A plugin runs only inside factory calls, so events that arrive between calls wait in the
//! connection and are read at the start of the next call: offers are held (and declined at the
//! end of a call once older than `offer-hold-ms`), status updates acknowledged, heartbeats
//! checked. A stream that
//! closed, broke, or stayed silent for three heartbeat intervals is replaced by a new
//! subscription with the same framework id.

use crate::config::Settings;
use crate::proto::{
    Acknowledge, Call, Decline, Event, Filters, FrameworkInfo, Id, Kill, Offer, Reconcile,
    ReconcileTask, Subscribe, TaskStatus,
};
use crate::recordio::Decoder;
use crate::tasks;
use keepwarm_plugin_sdk::http::{self, Chunk, Streaming};
use keepwarm_plugin_sdk::FactoryError;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Silent heartbeat intervals after which the subscription is presumed dead.
const MISSED_HEARTBEATS: u32 = 3;
const MAX_REDIRECTS: usize = 4;

struct Subscription {
    stream: Streaming,
    stream_id: String,
    framework_id: String,
    heartbeat: Duration,
    last_data: Instant,
    decoder: Decoder,
}

struct HeldOffer {
    offer: Offer,
    since: Instant,
}

/// Follow-up calls that events ask for, sent once the events are read.
enum FollowUp {
    Acknowledge(Acknowledge),
    Kill(Kill),
}

pub struct Scheduler {
    /// The master's authority: the configured route, or the leader a 307 pointed to.
    master: String,
    subscription: Option<Subscription>,
    offers: Vec<HeldOffer>,
    /// The latest status of each task, as this subscription has seen it.
    statuses: HashMap<String, TaskStatus>,
    follow_ups: Vec<FollowUp>,
}

impl Scheduler {
    pub fn new(master: &str) -> Scheduler {
        Scheduler {
            master: master.to_owned(),
            subscription: None,
            offers: Vec::new(),
            statuses: HashMap::new(),
            follow_ups: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/scheduler", self.master)
    }

    /// Reads what arrived and makes sure the subscription is alive, subscribing if not.
    pub fn ensure(&mut self) -> Result<(), FactoryError> {
        // Ended tasks were waited for by the call that saw them end.
        self.statuses.retain(|_, st| !st.is_terminal());
        self.pump(Duration::ZERO)?;
        if let Some(sub) = &self.subscription {
            if sub.last_data.elapsed() <= sub.heartbeat * MISSED_HEARTBEATS {
                return Ok(());
            }
            self.subscription = None;
        }
        self.subscribe()
    }

    /// Waits (reading events) until `done` says yes, up to `limit`.
    pub fn wait_for<T>(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Scheduler) -> Option<T>,
    ) -> Result<Option<T>, FactoryError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = done(self) {
                return Ok(Some(t));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if self.subscription.is_none() {
                self.subscribe()?;
                continue;
            }
            self.pump(left.min(Duration::from_millis(100)))?;
        }
    }

    pub fn offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers.iter().map(|h| &h.offer)
    }

    /// Takes an offer out of the held ones (it is about to be accepted).
    pub fn take_offer(&mut self, id: &Id) -> Option<Offer> {
        let i = self.offers.iter().position(|h| &h.offer.id == id)?;
        Some(self.offers.remove(i).offer)
    }

    pub fn status(&self, task_id: &str) -> Option<&TaskStatus> {
        self.statuses.get(task_id)
    }

    pub fn forget_status(&mut self, task_id: &str) {
        self.statuses.remove(task_id);
    }

    // ---- subscription ------------------------------------------------------------------

    fn subscribe(&mut self) -> Result<(), FactoryError> {
        let s = Settings::get();
        let mut started_fresh = false;
        loop {
            let known = tasks::framework_id();
            let mut call = Call::new("SUBSCRIBE", known.as_deref());
            call.subscribe = Some(Subscribe {
                framework_info: FrameworkInfo {
                    user: s.user.clone(),
                    name: s.framework_name.clone(),
                    id: known.as_deref().map(Id::new),
                    failover_timeout: s.failover_timeout.as_secs_f64(),
                    checkpoint: true,
                    role: s.role.clone(),
                },
                // Always `force`: Mesos advises it only for a newly elected scheduler, but
                // here the keepwarm host is the election — only the active host (holding
                // the cluster's claim) calls its plugin, so an instance that is called is
                // the one that should hold the framework.
                force: true,
            });
            let stream = self.open_subscription(&call)?;
            let stream_id = stream.header("mesos-stream-id").ok_or_else(|| {
                FactoryError::Engine(
                    "the master's SUBSCRIBED response has no Mesos-Stream-Id".into(),
                )
            })?;
            let mut decoder = Decoder::default();
            let first = first_event(&stream, &mut decoder, s.reply_timeout)?;
            match first.kind.as_str() {
                "SUBSCRIBED" => {
                    let subscribed = first.subscribed.ok_or_else(|| {
                        FactoryError::Engine("SUBSCRIBED event without `subscribed`".into())
                    })?;
                    let framework_id = subscribed.framework_id.value;
                    if known.as_deref() != Some(framework_id.as_str()) {
                        tasks::set_framework_id(&framework_id)?;
                    }
                    let heartbeat = subscribed
                        .heartbeat_interval_seconds
                        .filter(|h| h.is_finite() && *h > 0.0)
                        .unwrap_or(15.0);
                    self.subscription = Some(Subscription {
                        stream,
                        stream_id,
                        framework_id,
                        heartbeat: Duration::from_secs_f64(heartbeat),
                        last_data: Instant::now(),
                        decoder,
                    });
                    // Offers and statuses belonged to the old stream; the master re-sends
                    // what still holds, and reconciliation tells every task's state.
                    self.offers.clear();
                    self.statuses.clear();
                    return self.reconcile_all();
                }
                "ERROR" => {
                    let message = first.error.map(|e| e.message).unwrap_or_default();
                    if known.is_some() && !started_fresh && message.contains("removed") {
                        // Our failover timeout ran out: the master removed the framework
                        // and killed its tasks. Start over as a new framework.
                        tasks::forget_framework_id();
                        tasks::forget_all();
                        started_fresh = true;
                        continue;
                    }
                    return Err(FactoryError::Engine(format!(
                        "the master refused the subscription: {message}"
                    )));
                }
                other => {
                    return Err(FactoryError::Engine(format!(
                        "the master's first event was {other}, not SUBSCRIBED"
                    )))
                }
            }
        }
    }

    fn open_subscription(&mut self, call: &Call) -> Result<Streaming, FactoryError> {
        let body = serde_json::to_vec(call).expect("a call serializes");
        let timeout = Settings::get().reply_timeout.as_millis() as u64;
        for _ in 0..MAX_REDIRECTS {
            let stream = http::open(
                "POST",
                &self.url(),
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                ],
                Some(&body),
                Some(timeout),
            )?;
            match stream.status {
                200 => return Ok(stream),
                307 => self.master = leader(stream.header("location"))?,
                _ => return Err(stream.into_response()?.error("mesos SUBSCRIBE")),
            }
        }
        Err(FactoryError::Unavailable(format!(
            "more than {MAX_REDIRECTS} redirects looking for the leading Mesos master"
        )))
    }

    /// Explicit reconciliation of every recorded task, then implicit (all the master knows).
    fn reconcile_all(&mut self) -> Result<(), FactoryError> {
        let known: Vec<ReconcileTask> = tasks::all()
            .into_iter()
            .map(|t| ReconcileTask {
                task_id: Id::new(t.task_id),
                agent_id: Some(Id::new(t.agent_id)),
            })
            .collect();
        if !known.is_empty() {
            self.reconcile(known)?;
        }
        self.reconcile(Vec::new())
    }

    pub fn reconcile(&mut self, tasks: Vec<ReconcileTask>) -> Result<(), FactoryError> {
        self.call(|fid| {
            let mut c = Call::new("RECONCILE", Some(fid));
            c.reconcile = Some(Reconcile {
                tasks: tasks
                    .iter()
                    .map(|t| ReconcileTask {
                        task_id: t.task_id.clone(),
                        agent_id: t.agent_id.clone(),
                    })
                    .collect(),
            });
            c
        })
    }

    // ---- calls -------------------------------------------------------------------------

    /// Sends a call on the current subscription (subscribing first if there is none), once
    /// more after a 403, a 400 about the stream id, or a redirect, which mean the master no
    /// longer takes this stream.
    pub fn call(&mut self, make: impl Fn(&str) -> Call) -> Result<(), FactoryError> {
        for attempt in 0..2 {
            if self.subscription.is_none() {
                self.subscribe()?;
            }
            let sub = self.subscription.as_ref().expect("subscribed");
            let call = make(&sub.framework_id);
            let body = serde_json::to_vec(&call).expect("a call serializes");
            let r = http::request(
                "POST",
                &self.url(),
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                    ("mesos-stream-id", &sub.stream_id),
                ],
                Some(&body),
            )?;
            // 403: the master does not know this subscription (it failed over, or dropped
            // us); 400 naming the stream id: another subscription of the framework replaced
            // ours before this instance saw its stream close. Either way: subscribe, retry.
            let replaced = r.status == 400 && r.text().to_ascii_lowercase().contains("stream id");
            match r.status {
                200..=299 => return Ok(()),
                307 | 403 | 400 if attempt == 0 && (r.status != 400 || replaced) => {
                    if r.status == 307 {
                        let location = r
                            .headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                        self.master = leader(location)?;
                    }
                    self.subscription = None;
                }
                _ => return Err(r.error(&format!("mesos {}", call.kind))),
            }
        }
        Err(FactoryError::Unavailable(
            "the Mesos master rejected the call after re-subscribing".into(),
        ))
    }

    pub fn kill(&mut self, task_id: &str, agent_id: Option<&str>) -> Result<(), FactoryError> {
        self.call(|fid| {
            let mut c = Call::new("KILL", Some(fid));
            c.kill = Some(Kill {
                task_id: Id::new(task_id),
                agent_id: agent_id.map(Id::new),
            });
            c
        })
    }

    /// Clears our filters and asks the master to allocate now.
    pub fn revive(&mut self) -> Result<(), FactoryError> {
        self.call(|fid| Call::new("REVIVE", Some(fid)))
    }

    pub fn decline(&mut self, offer_ids: Vec<Id>) -> Result<(), FactoryError> {
        if offer_ids.is_empty() {
            return Ok(());
        }
        let refuse_seconds = Settings::get().refuse_seconds;
        self.call(|fid| {
            let mut c = Call::new("DECLINE", Some(fid));
            c.decline = Some(Decline {
                offer_ids: offer_ids.clone(),
                filters: Filters { refuse_seconds },
            });
            c
        })
    }

    // ---- events ------------------------------------------------------------------------

    /// Reads whatever the stream has (waiting up to `wait` for the first byte), handles
    /// the events, then sends the acknowledgements and kills they called for.
    fn pump(&mut self, wait: Duration) -> Result<(), FactoryError> {
        let mut records = Vec::new();
        let mut broken = false;
        if let Some(sub) = self.subscription.as_mut() {
            let mut wait = wait;
            loop {
                match sub.stream.read(wait) {
                    Ok(Chunk::Data(bytes)) => {
                        sub.last_data = Instant::now();
                        sub.decoder.feed(&bytes);
                        loop {
                            match sub.decoder.next_record() {
                                Ok(Some(r)) => records.push(r),
                                Ok(None) => break,
                                Err(_) => {
                                    broken = true;
                                    break;
                                }
                            }
                        }
                        if broken {
                            break;
                        }
                        wait = Duration::ZERO;
                    }
                    Ok(Chunk::Idle) => break,
                    Ok(Chunk::Closed) | Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken {
            self.subscription = None;
        }
        for record in records {
            self.handle(&record);
        }
        self.send_follow_ups();
        Ok(())
    }

    fn handle(&mut self, record: &[u8]) {
        // An event this framework cannot parse is skipped: the stream stays usable.
        let Ok(event) = serde_json::from_slice::<Event>(record) else {
            return;
        };
        match event.kind.as_str() {
            "OFFERS" => {
                let now = Instant::now();
                for offer in event.offers.map(|o| o.offers).unwrap_or_default() {
                    self.offers.push(HeldOffer { offer, since: now });
                }
            }
            "RESCIND" => {
                if let Some(r) = event.rescind {
                    self.offers.retain(|h| h.offer.id != r.offer_id);
                }
            }
            "UPDATE" => {
                if let Some(u) = event.update {
                    self.on_update(u.status);
                }
            }
            "ERROR" => {
                let message = event.error.map(|e| e.message).unwrap_or_default();
                self.subscription = None;
                if message.contains("removed") {
                    tasks::forget_framework_id();
                    tasks::forget_all();
                    self.statuses.clear();
                }
            }
            // HEARTBEAT only proves the stream alive (any data does); FAILURE comes with the
            // terminal UPDATEs that matter; MESSAGE is for custom executors.
            _ => {}
        }
    }

    fn on_update(&mut self, status: TaskStatus) {
        let task_id = status.task_id.value.clone();
        if let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) {
            self.follow_ups.push(FollowUp::Acknowledge(Acknowledge {
                agent_id: agent_id.clone(),
                task_id: status.task_id.clone(),
                uuid: uuid.clone(),
            }));
        }
        if status.is_terminal() {
            tasks::forget(&task_id);
        } else if tasks::get(&task_id).is_none() {
            // A live task with no record: launched by a host that died before its record
            // reached the others. Nothing can address it, so it is killed.
            self.follow_ups.push(FollowUp::Kill(Kill {
                task_id: status.task_id.clone(),
                agent_id: status.agent_id.clone(),
            }));
        }
        self.statuses.insert(task_id, status);
    }

    fn send_follow_ups(&mut self) {
        for follow_up in std::mem::take(&mut self.follow_ups) {
            // A lost acknowledgement is re-sent by the master; a lost kill by the next
            // reconciliation. Neither may fail the call that read the event.
            let _ = match follow_up {
                FollowUp::Acknowledge(a) => self.call(|fid| {
                    let mut c = Call::new("ACKNOWLEDGE", Some(fid));
                    c.acknowledge = Some(Acknowledge {
                        agent_id: a.agent_id.clone(),
                        task_id: a.task_id.clone(),
                        uuid: a.uuid.clone(),
                    });
                    c
                }),
                FollowUp::Kill(k) => self.kill(
                    &k.task_id.value,
                    k.agent_id.as_ref().map(|a| a.value.as_str()),
                ),
            };
        }
    }

    /// Declines the offers held longer than `offer-hold-ms`; run at the end of each call, so
    /// an offer that waited between calls can still serve the call that comes next.
    pub fn decline_stale_offers(&mut self) -> Result<(), FactoryError> {
        let hold = Settings::get().offer_hold;
        let stale: Vec<Id> = self
            .offers
            .iter()
            .filter(|h| h.since.elapsed() > hold)
            .map(|h| h.offer.id.clone())
            .collect();
        if stale.is_empty() || self.subscription.is_none() {
            return Ok(());
        }
        self.offers.retain(|h| h.since.elapsed() <= hold);
        self.decline(stale)
    }
}

/// Reads the first event of a new subscription.
fn first_event(
    stream: &Streaming,
    decoder: &mut Decoder,
    limit: Duration,
) -> Result<Event, FactoryError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(record) = decoder.next_record()? {
            return serde_json::from_slice(&record).map_err(|e| {
                FactoryError::Engine(format!("the master's first event does not parse: {e}"))
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FactoryError::Unavailable(format!(
                "no SUBSCRIBED event from the Mesos master within {} ms",
                limit.as_millis()
            )));
        }
        match stream.read(left)? {
            Chunk::Data(bytes) => decoder.feed(&bytes),
            Chunk::Idle => {}
            Chunk::Closed => {
                return Err(FactoryError::Unavailable(
                    "the Mesos master closed the subscription before SUBSCRIBED".into(),
                ))
            }
        }
    }
}

/// The authority of the leading master from a 307's `Location`: `//host:port/api/v1/scheduler`
/// (what Mesos sends), `http://host:port/...` or `host:port`.
fn leader(location: Option<String>) -> Result<String, FactoryError> {
    let location = location.ok_or_else(|| {
        FactoryError::Engine("the Mesos master redirected without a Location".into())
    })?;
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("//"))
        .unwrap_or(&location);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(FactoryError::Engine(format!(
            "cannot read the leading master from Location `{location}`"
        )));
    }
    Ok(authority.to_owned())
}

#[cfg(test)]
mod tests {
    use super::leader;

    #[test]
    fn reads_the_leader_from_any_location_form() {
        for l in [
            "//127.0.0.1:5050/api/v1/scheduler",
            "http://127.0.0.1:5050/api/v1/scheduler",
            "127.0.0.1:5050",
        ] {
            assert_eq!(leader(Some(l.into())).unwrap(), "127.0.0.1:5050");
        }
        assert!(leader(None).is_err());
        assert!(leader(Some("//".into())).is_err());
    }
}
