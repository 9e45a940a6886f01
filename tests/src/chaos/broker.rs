//! The chaos bed's own broker: a tansu process on a free loopback port with its SQLite
//! database in a directory of its own, so a run can restart it without disturbing any other
//! test. The binary is `$KW_TANSU`, else `tansu` on the `PATH`, else `~/.cargo/bin/tansu`
//! (where `scripts/tansu.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One tansu broker; dropping it stops it.
#[derive(Debug)]
pub struct Broker {
    /// `host:port`, as the hosts' `[kafka] brokers`.
    pub address: String,
    /// What the command runs under (e.g. `nsenter --net=… --` on a machine of a test bed).
    prefix: Vec<String>,
    dir: Arc<tempfile::TempDir>,
    child: Arc<Mutex<Option<Child>>>,
}

fn tansu() -> PathBuf {
    if let Some(p) = std::env::var_os("KW_TANSU") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/tansu")
    })
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Broker::start_at(&format!("127.0.0.1:{port}"), Vec::new())
    }

    /// Starts a broker listening on `address`, its command run under `prefix`; waits (from
    /// the calling thread's network) until it accepts connections.
    pub fn start_at(address: &str, prefix: Vec<String>) -> Broker {
        let dir = tempfile::tempdir().expect("broker dir");
        if std::env::var_os("KW_KEEP_HOST_DIRS").is_some() {
            eprintln!("broker directory {}", dir.path().display());
        }
        let broker = Broker {
            address: address.to_owned(),
            prefix,
            dir: Arc::new(dir),
            child: Arc::default(),
        };
        spawn(
            &broker.address,
            &broker.prefix,
            broker.dir.path(),
            &broker.child,
        );
        broker
    }

    /// Kills the process (SIGKILL: a crashed broker) and starts it again on the same port and
    /// database after `down`, in the background (producers keep queueing meanwhile).
    pub fn restart(&self, down: Duration) -> std::thread::JoinHandle<()> {
        kill(&self.child);
        let (address, dir, child) = (self.address.clone(), self.dir.clone(), self.child.clone());
        let prefix = self.prefix.clone();
        std::thread::spawn(move || {
            std::thread::sleep(down);
            spawn(&address, &prefix, dir.path(), &child);
        })
    }
}

fn kill(child: &Mutex<Option<Child>>) {
    if let Some(mut c) = child.lock().expect("broker lock").take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Starts tansu and waits until it accepts connections.
fn spawn(address: &str, prefix: &[String], dir: &Path, slot: &Mutex<Option<Child>>) {
    {
        let url = format!("tcp://{address}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("broker log");
        let child = crate::netbed::prefixed(prefix, tansu())
            .current_dir(dir)
            .args(["broker", "--storage-engine", "sqlite://chaos.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("broker log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/tansu.sh install",
                    tansu().display()
                )
            });
        *slot.lock().expect("broker lock") = Some(child);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {address} within 20 s; its log: {}",
            std::fs::read_to_string(dir.join("tansu.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        kill(&self.child);
        if std::env::var_os("KW_KEEP_HOST_DIRS").is_some() {
            if let Some(dir) = Arc::get_mut(&mut self.dir) {
                let dir = std::mem::replace(dir, tempfile::tempdir().expect("tempdir"));
                let _ = dir.keep();
            }
        }
    }
}
