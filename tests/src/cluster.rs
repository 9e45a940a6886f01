//! Several real `keepwarm run` processes forming one cluster on loopback.

use crate::host::{Host, HostOptions};
use keepwarm::cluster::state::ContainerRecord;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// A cluster of hosts with their Raft addresses.
#[derive(Debug)]
pub struct Cluster {
    pub hosts: Vec<Host>,
    /// Each host's peer (Raft) address.
    pub addresses: Vec<String>,
    /// Each host's status listener (`/status`, `/metrics`).
    pub status_addresses: Vec<String>,
    pub label: String,
    /// The cluster's CA and certificates (`keepwarm cluster certs`'s files).
    pub certs: std::path::PathBuf,
    _certs: tempfile::TempDir,
}

/// A port nothing listens on now and this process never handed out before (two bare
/// "bind port 0" calls can return the same port once the first listener is closed, and a
/// cluster whose two members were given one port loses a member).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// GETs `path` from a host's status address (None when it does not answer).
pub fn get(address: &str, path: &str) -> Option<String> {
    get_with_status(address, path).map(|(_, body)| body)
}

/// GETs `path`; the answer's status code and body (None when it does not answer).
pub fn get_with_status(address: &str, path: &str) -> Option<(u16, String)> {
    let addr = address.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// POSTs a JSON `body` to `path`; the answer's status code and body (None when nothing
/// answers within 2 s).
pub fn post(address: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let addr = address.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A host's `/status` (None when it does not answer).
pub fn status(address: &str) -> Option<Value> {
    serde_json::from_str(&get(address, "/status")?).ok()
}

impl Cluster {
    /// Starts `n` hosts sharing invoker `instance`, the cluster label and a secret.
    pub fn start(n: usize, instance: u32, prewarm: u32) -> Cluster {
        Self::start_with(n, instance, prewarm, 2048)
    }

    /// As [`Cluster::start`], with the user memory each host has for containers.
    pub fn start_with(n: usize, instance: u32, prewarm: u32, user_memory_mb: u64) -> Cluster {
        Self::start_from(n, &HostOptions::new(instance, prewarm, user_memory_mb))
    }

    /// `n` hosts with `base`'s settings, each given its cluster section.
    pub fn start_from(n: usize, base: &HostOptions) -> Cluster {
        Self::start_each(n, base, |_, _| {})
    }

    /// As [`Cluster::start_from`], with `each(i, options)` changing host `i`'s options after
    /// its `[cluster]` section was written (lines it appends to `extra` land in that section).
    pub fn start_each(
        n: usize,
        base: &HostOptions,
        each: impl Fn(usize, &mut HostOptions),
    ) -> Cluster {
        let addresses: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let route = addresses.clone();
        Self::start_routed(addresses, base, |_, j| route[j].clone(), each)
    }

    /// Hosts listening on `addresses`, host `i` reaching host `j` at `route(i, j)` (e.g. a
    /// proxy the test can cut); `route(i, i)` must be `addresses[i]`, where host `i` listens.
    pub fn start_routed(
        addresses: Vec<String>,
        base: &HostOptions,
        route: impl Fn(usize, usize) -> String,
        each: impl Fn(usize, &mut HostOptions),
    ) -> Cluster {
        let status_addresses: Vec<String> = (0..addresses.len())
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        Self::start_listening(addresses, status_addresses, base, route, each)
    }

    /// One host on each machine of `bed` named in `machines` (Raft on port 7001, status on
    /// 7002 of the machine's address), each process run inside its machine.
    pub fn start_on(
        bed: &crate::netbed::NetBed,
        machines: &[&str],
        base: &HostOptions,
        each: impl Fn(usize, &mut HostOptions),
    ) -> Cluster {
        let at = |port: u16| -> Vec<String> {
            machines
                .iter()
                .map(|m| format!("{}:{port}", bed.machine(m).ip))
                .collect()
        };
        let (addresses, status_addresses) = (at(7001), at(7002));
        let route = addresses.clone();
        let prefixes: Vec<Vec<String>> = machines.iter().map(|m| bed.prefix(m)).collect();
        Self::start_listening(
            addresses,
            status_addresses,
            base,
            |_, j| route[j].clone(),
            |i, opts| {
                opts.prefix = prefixes[i].clone();
                each(i, opts)
            },
        )
    }

    fn start_listening(
        addresses: Vec<String>,
        status_addresses: Vec<String>,
        base: &HostOptions,
        route: impl Fn(usize, usize) -> String,
        each: impl Fn(usize, &mut HostOptions),
    ) -> Cluster {
        let n = addresses.len();
        let certs = tempfile::tempdir().unwrap();
        let ids: Vec<u64> = (1..=n as u64).collect();
        keepwarm::cluster::tls::generate(&ids, certs.path()).unwrap();
        let label = base
            .cluster
            .clone()
            .unwrap_or_else(|| format!("kwcluster-{}-{}", std::process::id(), base.instance));
        let hosts = (0..n)
            .map(|i| {
                let peers: Vec<String> = (0..n)
                    .map(|j| format!("\"{}\" = \"{}\"", j + 1, route(i, j)))
                    .collect();
                let mut opts = base.clone();
                opts.cluster = Some(label.clone());
                let files = keepwarm::cluster::tls::TlsFiles::in_dir(certs.path(), i as u64 + 1);
                opts.extra = format!(
                    "[cluster]\nid = {}\npeers = {{ {} }}\nstatus-address = \"{}\"\n\
                     tls = {{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}\n{}",
                    i + 1,
                    peers.join(", "),
                    status_addresses[i],
                    files.ca.display(),
                    files.cert.display(),
                    files.key.display(),
                    if base.local_engine {
                        "local-engine = true\n"
                    } else {
                        ""
                    },
                );
                each(i, &mut opts);
                Host::start(&opts)
            })
            .collect();
        Cluster {
            hosts,
            addresses,
            status_addresses,
            label,
            certs: certs.path().to_owned(),
            _certs: certs,
        }
    }

    /// The index of the host that is consuming, waiting up to `within`.
    pub fn active(&self, within: Duration) -> Option<usize> {
        let start = Instant::now();
        loop {
            for (i, a) in self.status_addresses.iter().enumerate() {
                if self.hosts[i].child.is_some()
                    && status(a).is_some_and(|s| s["consuming"] == true)
                {
                    return Some(i);
                }
            }
            if start.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        status(&self.status_addresses[i])
    }

    /// Starts host `i` again (after a kill) and waits, up to `within`, until it follows and
    /// `caught_up` holds for its status.
    pub fn rejoin(&mut self, i: usize, within: Duration, caught_up: impl Fn(&Value) -> bool) {
        self.hosts[i].spawn();
        let start = Instant::now();
        while !self
            .status(i)
            .is_some_and(|s| s["state"] == "Follower" && caught_up(&s))
        {
            assert!(
                start.elapsed() < within,
                "host {i} did not rejoin within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An idle prewarm container record, for Raft tests and benchmarks.
pub fn sample_record(id: &str) -> Box<ContainerRecord> {
    Box::new(ContainerRecord::sample("docker", id))
}
