//! `keepwarm cluster …` and `keepwarm status`: an operator's calls to members.
//!
//! Membership changes go to the leader's peer listener. Over TLS they present the admin
//! certificate (`admin.pem`/`admin.key` from `keepwarm cluster certs`) and accept only servers
//! with a member certificate of the cluster's CA; `join` first dials the new member and checks
//! that it holds the certificate of the id it is joined as, before sending anything anywhere.
//! An `insecure` cluster takes the admin token instead.

use crate::cluster::status::MemberStatus;
use crate::cluster::tls::{self, MemberTls, TlsFiles};
use crate::cluster::transport;
use clap::Subcommand;
use rustls::pki_types::ServerName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make the cluster's CA (or reuse the one in --out) and a certificate for each member and
    /// for the admin.
    Certs {
        /// Member ids, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<u64>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a member: its config must list every member, itself included.
    Join {
        /// Peer address of the current leader.
        #[arg(long)]
        leader: String,
        #[arg(long)]
        id: u64,
        /// The new member's peer address.
        #[arg(long)]
        address: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove a member.
    Leave {
        #[arg(long)]
        leader: String,
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Hand the active role to a caught-up member before this host stops pulling (a rolling
    /// upgrade: step down, then stop the host). Prints who took over and how long pulling
    /// paused; fails, changing nothing, when no other member is caught up.
    StepDown {
        /// Peer address of the current leader (the active host).
        #[arg(long)]
        leader: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How the operator proves it is the admin.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The directory `keepwarm cluster certs` wrote (ca.pem, admin.pem, admin.key).
    #[arg(long, env = "KEEPWARM_TLS_DIR", conflicts_with = "insecure")]
    tls_dir: Option<PathBuf>,
    /// The cluster is `insecure = true`: plain HTTP with the admin token.
    #[arg(long)]
    insecure: bool,
    /// `[cluster] admin-token`.
    #[arg(long, env = "KEEPWARM_ADMIN_TOKEN")]
    token: Option<String>,
}

/// How to reach a member: plain, or TLS with a client configuration and the name to expect.
type Channel = Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>;

impl AdminArgs {
    /// The channel to the leader (any member's certificate) or to member `expect`.
    fn channel(&self, expect: Option<u64>) -> Result<Channel, String> {
        match (&self.tls_dir, self.insecure) {
            (Some(dir), _) => {
                let config = MemberTls::admin_client(&TlsFiles::admin_in_dir(dir), expect)
                    .map_err(|e| e.to_string())?;
                let name = expect.map_or_else(
                    || ServerName::try_from("leader.keepwarm").expect("a DNS name"),
                    tls::server_name,
                );
                Ok(Some((config, name)))
            }
            (None, true) => Ok(None),
            (None, false) => Err(
                "say how to reach the cluster: --tls-dir DIR (from `keepwarm cluster certs`) or --insecure with --token".into(),
            ),
        }
    }
}

pub async fn run(command: ClusterCommand) -> i32 {
    match command {
        ClusterCommand::Certs { members, out } => certs(&members, &out),
        ClusterCommand::Join {
            leader,
            id,
            address,
            admin,
        } => {
            if let Err(e) = verify_member(&admin, id, &address).await {
                eprintln!("error: {e}");
                return 1;
            }
            let body = serde_json::json!({ "id": id, "address": address }).to_string();
            ask_leader(&admin, &leader, "POST", "/admin/members", body).await
        }
        ClusterCommand::Leave { leader, id, admin } => {
            let path = format!("/admin/members/{id}");
            ask_leader(&admin, &leader, "DELETE", &path, String::new()).await
        }
        ClusterCommand::StepDown { leader, admin } => {
            ask_leader(&admin, &leader, "POST", "/admin/step-down", String::new()).await
        }
    }
}

fn certs(members: &[u64], out: &std::path::Path) -> i32 {
    match tls::generate(members, out) {
        Ok(made) => {
            eprintln!(
                "{} the cluster CA in {}",
                if made.new_ca { "made" } else { "reused" },
                out.display()
            );
            for f in made.files {
                println!("{}", f.display());
            }
            eprintln!(
                "each member needs ca.pem, member-<id>.pem and member-<id>.key ([cluster.tls] ca, cert, key); \
                 keep ca.key and admin.key off the members"
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Before the leader is told anything: the host at `address` must hold member `id`'s key.
async fn verify_member(admin: &AdminArgs, id: u64, address: &str) -> Result<(), String> {
    let Some(channel) = admin.channel(Some(id))? else {
        return Ok(());
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|_| format!("the new member at {address} did not answer within 5 s"))?
    .map_err(|e| format!("cannot reach the new member at {address}: {e}"))?;
    tokio_rustls::TlsConnector::from(channel.0)
        .connect(channel.1, stream)
        .await
        .map_err(|e| {
            format!("the host at {address} is not member {id} of this cluster (its certificate was refused: {e}); nothing was sent")
        })?;
    Ok(())
}

/// `keepwarm plugin reload NAME`: the leader's answer, after checking it runs plugin `name`.
pub async fn reload_plugin(admin: &AdminArgs, leader: &str, name: &str) -> i32 {
    let body = serde_json::json!({ "plugin": name }).to_string();
    ask_leader(admin, leader, "POST", "/admin/plugin/reload", body).await
}

async fn ask_leader(
    admin: &AdminArgs,
    leader: &str,
    method: &str,
    path: &str,
    body: String,
) -> i32 {
    let channel = match admin.channel(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // While the cluster is between leaders (an election), the member answers 421 naming no
    // leader: ask again for a few seconds rather than fail the operator's command.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let asked = ask_member(
            leader,
            &channel,
            method,
            path,
            admin.token.as_deref(),
            body.clone(),
        )
        .await;
        match asked {
            Ok((status, body)) if status.is_success() => {
                println!("{body}");
                return 0;
            }
            Ok((status, answer))
                if status == http::StatusCode::MISDIRECTED_REQUEST
                    && answer.contains("member None")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok((status, body)) => {
                eprintln!("error: {leader} answered {status}: {body}");
                return 1;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
}

/// One request to a member; its status and body. The same client the members use to reach
/// each other ([`transport::member_http`]), with the operator's channel.
async fn ask_member(
    address: &str,
    channel: &Channel,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: String,
) -> Result<(hyper::StatusCode, String), String> {
    let scheme = if channel.is_some() { "https" } else { "http" };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{scheme}://{address}{path}"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| format!("cannot ask {address}: {e}"))?;
    let client = transport::member_http(channel.clone());
    // a plugin reload waits for every member to compile the new build
    let limit = Duration::from_secs(if path == "/admin/plugin/reload" {
        320
    } else {
        30
    });
    let (status, bytes) = transport::exchange(&client, req, limit)
        .await
        .map_err(|e| format!("cannot reach {address}: {e}"))?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `keepwarm status`: a member's status listener, read and printed.
pub async fn status(address: &str, token: Option<&str>, raw: bool) -> i32 {
    let body = match ask_member(address, &None, "GET", "/status", token, String::new()).await {
        Ok((s, body)) if s.is_success() => body,
        Ok((s, body)) => {
            eprintln!("error: {address} answered {s}: {body}");
            return 1;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let s: MemberStatus = match serde_json::from_str(&body) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {address} answered something that is not a status: {e}");
            return 1;
        }
    };
    if raw {
        println!("{body}");
        return 0;
    }
    let or_none = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    let role = serde_json::to_value(s.host.role).unwrap_or_default();
    println!(
        "member {}  {}  role {}  term {}  leader {}  voting {}",
        s.id,
        s.state,
        role.as_str().unwrap_or("?"),
        s.term,
        or_none(s.leader),
        s.voting
    );
    println!(
        "active host {}  epoch {}  consuming here: {}",
        s.active, s.epoch, s.host.consuming
    );
    println!(
        "members {:?}  last applied {}  replication {}",
        s.members,
        or_none(s.last_applied),
        s.replication.map_or("-".to_string(), |r| format!("{r:?}"))
    );
    println!(
        "pool: {} containers ({} idle)  offsets {:?}",
        s.containers, s.idle_containers, s.offsets
    );
    if let Some(t) = &s.host.last_takeover {
        println!(
            "last takeover: epoch {}  {} ms to ready  re-attached {}  lost {}  busy destroyed {}  orphans destroyed {}  lent by a step-down {}",
            t.epoch, t.took_ms, t.reattached, t.lost, t.busy_destroyed, t.orphans_destroyed, t.lent.len()
        );
    }
    // a member of an older release reports its one plugin only as `plugin`
    let plugins = match &s.host.plugin {
        Some(p) if s.host.plugins.is_empty() => std::slice::from_ref(p),
        _ => s.host.plugins.as_slice(),
    };
    for p in plugins {
        let serves = [
            (!p.kinds.is_empty()).then(|| format!("kinds {}", p.kinds.join(","))),
            (!p.images.is_empty()).then(|| format!("images {}", p.images.join(","))),
            p.default.then(|| "default".to_string()),
        ];
        let serves: Vec<String> = serves.into_iter().flatten().collect();
        println!(
            "plugin {} {}  sha256 {}{}{}",
            p.name,
            p.version,
            p.sha256,
            p.staged
                .as_ref()
                .map_or(String::new(), |s| format!("  staged {s}")),
            if serves.is_empty() {
                String::new()
            } else {
                format!("  serves {}", serves.join("; "))
            }
        );
        if let Some(swap) = &p.last_swap {
            match &swap.error {
                None => println!(
                    "  last swap: {} → {}  {} containers attached  build loaded in {} ms",
                    swap.from, swap.to, swap.attached, swap.load_ms
                ),
                Some(why) => println!("  last swap refused ({}): {why}", swap.to),
            }
        }
    }
    0
}
