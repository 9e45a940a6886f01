//! A multi-machine test bed on one machine: each "machine" is a network namespace of its own
//! with one interface (`eth0`, 10.231.0.x/24) joined to a bridge in a switch namespace. The
//! subnet exists only inside these namespaces; the root namespace has no address on it and no
//! route to it, so nothing sent inside leaves them.
//!
//! Processes run on a machine through `nsenter --net` (only the network namespace changes: a
//! dockerd inside still sees the host's cgroups and mounts). The test's own client code runs
//! on a machine of its own through [`NetBed::inside`], a thread moved into that namespace.
//!
//! Faults, as a data centre has them:
//! - [`NetBed::fail`]: a machine dies — its link goes down and every process in it (and, for
//!   an engine machine, every container it ran) is killed at once;
//! - [`NetBed::cut`] / [`NetBed::mend`]: its link goes down and up (a pulled cable: the
//!   processes live on, unreachable);
//! - [`NetBed::isolate`] / [`NetBed::rejoin`]: machines stop reaching some others but not the
//!   rest (blackhole routes on both sides), a partial partition.
//!
//! Needs root (`ip netns`, `nsenter`). Dropping the bed kills what runs in it and deletes its
//! namespaces.

pub mod engine;
pub mod site;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first three octets of the bed's private subnet.
pub const SUBNET: &str = "10.231.0";

/// One machine: its namespace and address.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub netns: String,
    pub ip: String,
    /// The switch-side end of its link.
    port: String,
    /// A cgroup whose processes die with the machine (an engine's containers).
    pub cgroup: Option<String>,
}

/// Namespaces joined by a bridge; see the module docs.
#[derive(Debug)]
pub struct NetBed {
    tag: String,
    switch: String,
    machines: Vec<Machine>,
}

/// `program` run under `prefix` (e.g. [`NetBed::prefix`]); on this machine when it is empty.
pub fn prefixed(prefix: &[String], program: impl AsRef<std::ffi::OsStr>) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

/// Sends `signal` to process `pid`; one already gone is no error here.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) takes two integers and touches none of our memory.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Moves the calling thread into the network namespace `ns` refers to.
fn enter_network(ns: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    #[allow(unsafe_code)]
    // SAFETY: setns(2) takes a descriptor that `ns` keeps open for the call, and a flag.
    let done = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl NetBed {
    /// Machines named `names` at 10.231.0.11, .12, ... in that order.
    pub fn new(names: &[&str]) -> NetBed {
        static BEDS: AtomicU32 = AtomicU32::new(0);
        assert!(
            is_root(),
            "the namespace test bed needs root (ip netns, nsenter)"
        );
        let tag = format!(
            "kw{}{}",
            std::process::id() % 100_000,
            (b'a' + BEDS.fetch_add(1, Ordering::SeqCst) as u8 % 26) as char
        );
        let switch = format!("{tag}-sw");
        ip(&["netns", "add", &switch]);
        let mut bed = NetBed {
            tag,
            switch,
            machines: Vec::new(),
        };
        ip(&["-n", &bed.switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bed.switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let netns = format!("{}-{name}", bed.tag);
            let port = format!("m{i}");
            let ip_addr = format!("{SUBNET}.{}", 11 + i);
            ip(&["netns", "add", &netns]);
            bed.machines.push(Machine {
                name: (*name).to_owned(),
                netns: netns.clone(),
                ip: ip_addr.clone(),
                port: port.clone(),
                cgroup: None,
            });
            ip(&[
                "-n",
                &bed.switch,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &netns,
            ]);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip_addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            ip(&["-n", &bed.switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &bed.switch, "link", "set", &port, "up"]);
        }
        bed
    }

    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no machine {name} in the bed"))
    }

    /// The cgroup (under every v1 controller, or v2) whose processes die with `name`.
    pub fn own_cgroup(&mut self, name: &str) -> String {
        let cgroup = format!("{}-{name}", self.tag);
        let m = self
            .machines
            .iter_mut()
            .find(|m| m.name == name)
            .expect("machine");
        m.cgroup = Some(cgroup.clone());
        cgroup
    }

    /// The command prefix that runs a program on machine `name`.
    pub fn prefix(&self, name: &str) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.machine(name).netns),
            "--".into(),
        ]
    }

    /// `program` to be run on machine `name`.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        prefixed(&self.prefix(name), program)
    }

    /// Runs `f` on a thread inside machine `name`'s network (threads and processes it starts,
    /// a tokio runtime's included, are there too).
    pub fn inside<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.machine(name).netns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).expect("open the namespace");
                enter_network(&ns).unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The pids of every process in machine `name`'s network namespace.
    pub fn pids(&self, name: &str) -> Vec<u32> {
        let m = self.machine(name);
        let mut pids: Vec<u32> = run("ip", &["netns", "pids", &m.netns])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if let Some(cgroup) = &m.cgroup {
            pids.extend(cgroup_pids(cgroup));
        }
        pids
    }

    /// Machine `name` dies: its link goes down, then everything it runs is SIGKILLed, again
    /// until nothing is left (a process may fork while the first ones die).
    pub fn fail(&self, name: &str) {
        self.cut(name);
        self.kill_all(name);
    }

    fn kill_all(&self, name: &str) {
        assert!(
            self.killed_all(name),
            "processes outlive machine {name}: {:?}",
            self.pids(name)
        );
    }

    /// SIGKILLs what runs on `name` until nothing does (at most a second).
    fn killed_all(&self, name: &str) -> bool {
        for _ in 0..50 {
            let pids = self.pids(name);
            if pids.is_empty() {
                return true;
            }
            for pid in pids {
                signal(pid, libc::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Machine `name`'s link goes down (its processes live on, unreachable).
    pub fn cut(&self, name: &str) {
        self.link(name, "down");
    }

    /// Machine `name`'s link comes back.
    pub fn mend(&self, name: &str) {
        self.link(name, "up");
    }

    fn link(&self, name: &str, state: &str) {
        let port = &self.machine(name).port;
        ip(&["-n", &self.switch, "link", "set", port, state]);
    }

    /// `name` and each of `others` stop reaching each other (both directions dropped by
    /// blackhole routes); everything else still reaches both.
    pub fn isolate(&self, name: &str, others: &[&str]) {
        self.routes("add", name, others);
    }

    /// Undoes [`NetBed::isolate`].
    pub fn rejoin(&self, name: &str, others: &[&str]) {
        self.routes("del", name, others);
    }

    fn routes(&self, verb: &str, name: &str, others: &[&str]) {
        let a = self.machine(name);
        for other in others {
            let b = self.machine(other);
            for (from, to) in [(a, b), (b, a)] {
                ip(&[
                    "-n",
                    &from.netns,
                    "route",
                    verb,
                    "blackhole",
                    &format!("{}/32", to.ip),
                ]);
            }
        }
    }
}

/// Every pid in `cgroup` and below it, under whichever hierarchy has it.
fn cgroup_pids(cgroup: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for root in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup",
    ] {
        let dir = std::path::Path::new(root).join(cgroup);
        if dir.is_dir() {
            collect_procs(&dir, &mut pids);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes `cgroup`'s (now empty) directories under every hierarchy, deepest first.
fn remove_cgroup(cgroup: &str) {
    fn remove(dir: &std::path::Path) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                remove(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = root.path().join(cgroup);
        if dir.is_dir() {
            remove(&dir);
        }
    }
    let v2 = std::path::Path::new("/sys/fs/cgroup").join(cgroup);
    if v2.is_dir() {
        remove(&v2);
    }
}

fn collect_procs(dir: &std::path::Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.parse::<u32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            collect_procs(&entry.path(), pids);
        }
    }
}

impl Drop for NetBed {
    fn drop(&mut self) {
        for m in &self.machines {
            self.killed_all(&m.name);
            let _ = Command::new("ip").args(["netns", "del", &m.netns]).status();
            if let Some(cgroup) = &m.cgroup {
                remove_cgroup(cgroup);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
    }
}
