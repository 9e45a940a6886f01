//! A new plugin build across the cluster: the operator asks the leader to reload the plugin
//! (`POST /admin/plugin/reload`, admin credentials); the leader asks every other member to
//! stage its copy of the file (`POST /raft/plugin/stage`, taken only from the member this one
//! follows) and switches only once each has staged the same build.

use super::caller::{Admin, FromMember};
use super::http::{answer, parse, Answer};
use super::inbox::{ask_roles, ReloadRequest, StageRequest, ToTerm, NOT_ACTIVE};
use super::peer::Peer;
use axum::extract::State;
use bytes::Bytes;
use std::time::Duration;

#[derive(serde::Deserialize)]
struct Reload {
    plugin: String,
}

/// Which plugin to stage (absent: the first; a member of an older release asks so).
#[derive(serde::Deserialize, Default)]
struct Stage {
    #[serde(default)]
    plugin: Option<String>,
}

/// Compiling a large component on a busy machine takes a while.
const STAGE_WAIT: Duration = Duration::from_secs(300);

/// `POST /admin/plugin/reload`: stage the plugin's file on every member, then switch.
pub(super) async fn reload(State(peer): State<Peer>, _: Admin, body: Bytes) -> Answer {
    peer.voters()?;
    let asked: Reload = parse(&body)?;
    let swap = ask_roles(
        |reply| {
            let plugin = Some(asked.plugin);
            peer.inbox
                .to_term(ToTerm::Reload(ReloadRequest { plugin, reply }))
        },
        STAGE_WAIT,
        NOT_ACTIVE,
        "the new build was not ready within 300 s",
    )
    .await?;
    answer(swap)
}

/// `POST /raft/plugin/stage`: load this member's copy of the plugin's file; answers its sha256.
pub(super) async fn stage(State(peer): State<Peer>, from: FromMember, body: Bytes) -> Answer {
    peer.leader_asking(from, "ask it to stage a plugin build")?;
    let asked: Stage = if body.is_empty() {
        Stage::default()
    } else {
        parse(&body)?
    };
    let sha256 = ask_roles(
        |reply| {
            let plugin = asked.plugin;
            peer.inbox.to_stage(StageRequest { plugin, reply })
        },
        STAGE_WAIT,
        "this member is stopping",
        "not staged within 300 s",
    )
    .await?;
    answer(serde_json::json!({ "sha256": sha256 }))
}
