//! A CouchDB-protocol server of a test's own: `pouchdb-server` on a free loopback port with
//! its data in a directory of its own, behind `scripts/couchdb-front.js` (authentication on),
//! so a test can stop and start it without disturbing any other. The server is
//! `$KW_POUCHDB`, else where `scripts/couchdb.sh install` puts it.

use keepwarm::couchdb::{CouchConfig, CouchDb};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "keepwarm";
pub const PASSWORD: &str = "keepwarm-secret";

fn pouchdb_server() -> PathBuf {
    if let Some(p) = std::env::var_os("KW_POUCHDB") {
        return p.into();
    }
    PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/keepwarm/pouchdb-server-4.2.0/node_modules/.bin/pouchdb-server")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn up(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// One server; dropping it stops it.
#[derive(Debug)]
pub struct CouchServer {
    pub port: u16,
    backend: u16,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl CouchServer {
    /// Starts a server with the admin `USER`/`PASSWORD` and waits until it answers.
    pub fn start() -> CouchServer {
        let mut server = CouchServer {
            port: free_port(),
            backend: free_port(),
            dir: tempfile::tempdir().expect("couchdb dir"),
            children: Vec::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let bin = pouchdb_server();
        assert!(
            bin.exists(),
            "{} is missing: run `bash scripts/couchdb.sh install` (the test command does)",
            bin.display()
        );
        let backend = Command::new(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.backend.to_string(),
                "--dir",
                ".",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pouchdb-server");
        self.children.push(backend);
        wait_until(|| up(self.backend), "pouchdb-server");
        // The first admin ends "admin party"; a restart finds it already set.
        let admins = format!("http://127.0.0.1:{}/_config/admins/{USER}", self.backend);
        let _ = Command::new("curl")
            .args([
                "-fsS",
                "-X",
                "PUT",
                &admins,
                "-d",
                &format!("\"{PASSWORD}\""),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let front = crate::host::repo_root().join("scripts/couchdb-front.js");
        let front = Command::new("node")
            .arg(front)
            .args([self.port.to_string(), self.backend.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start couchdb-front.js (node)");
        self.children.push(front);
        wait_until(|| up(self.port), "couchdb-front.js");
    }

    /// Kills both processes (a crashed server); data stays.
    pub fn stop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[couchdb]` section for a host (database prefix `prefix`).
    pub fn config(&self, prefix: &str) -> CouchConfig {
        CouchConfig {
            url: self.url(),
            username: Some(USER.into()),
            password: Some(PASSWORD.into()),
            db_prefix: prefix.into(),
            timeout_ms: 10_000,
        }
    }

    /// The same, as TOML.
    pub fn toml(&self, prefix: &str) -> String {
        format!(
            "[couchdb]\nurl = \"{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\ndb-prefix = \"{prefix}\"\n",
            self.url()
        )
    }

    /// A client for database `{prefix}{name}`, created if missing.
    pub async fn db(&self, prefix: &str, name: &str) -> CouchDb {
        let db = CouchDb::open(&self.config(prefix), name).expect("couchdb client");
        db.ensure().await.expect("create the database");
        db
    }
}

impl Drop for CouchServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(ready: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not start within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// All documents of a database (`_all_docs?include_docs=true`).
pub async fn all_docs(server: &CouchServer, db: &str) -> Vec<Value> {
    let url = format!("{}/{db}/_all_docs?include_docs=true", server.url());
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", "-u", &format!("{USER}:{PASSWORD}"), &url])
        .output()
        .await
        .expect("curl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["doc"].clone()).collect())
        .unwrap_or_default()
}
