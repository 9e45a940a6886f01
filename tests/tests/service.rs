//! keepwarm as a systemd service: the packaged unit verifies, and a real host speaks the
//! notify protocol (READY=1 only once its plugins are loaded and it consumes, WATCHDOG=1 while
//! it runs, STOPPING=1 when it drains) and answers `/healthz` and `/readyz`.

use keepwarm_tests::cluster::get_with_status;
use keepwarm_tests::host::{repo_root, Host, HostOptions};
use keepwarm_tests::kafka::Controller;
use keepwarm_tests::keepwarm_bin;
use serde_json::json;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn the_packaged_unit_verifies_with_systemd_analyze() {
    let unit = std::fs::read_to_string(repo_root().join("packaging/keepwarm.service")).unwrap();
    assert!(unit.contains("Type=notify"), "{unit}");
    assert!(unit.contains("WatchdogSec="), "{unit}");
    assert!(unit.contains("/etc/keepwarm/keepwarm.toml"), "{unit}");
    // as installed, but with the binary this test built (verify checks it is executable)
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keepwarm.service");
    let bin = keepwarm_bin();
    std::fs::write(
        &file,
        unit.replace("/usr/bin/keepwarm", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect(
            "systemd-analyze (Debian's `systemd` package; the README's test command installs it)",
        );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // an unknown key or a bad value is only a warning: there must be none
    assert!(stderr.trim().is_empty(), "systemd-analyze warns:\n{stderr}");
}

/// Datagrams on a `NOTIFY_SOCKET`, with when each arrived.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<(Instant, String)>,
}

impl Notifications {
    /// Waits for a datagram containing `what`; returns its text.
    fn wait_for(&mut self, what: &str, within: Duration, host: &Host) -> String {
        let deadline = Instant::now() + within;
        if let Some((_, m)) = self.seen.iter().find(|(_, m)| m.contains(what)) {
            return m.clone();
        }
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push((Instant::now(), text.clone()));
                if text.contains(what) {
                    return text;
                }
            }
        }
        panic!(
            "no {what} within {within:?}; seen {:?}\n{}",
            self.seen,
            host.log()
        );
    }
}

#[test]
fn the_host_notifies_ready_once_it_consumes_pets_the_watchdog_and_notifies_stopping() {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut notes = Notifications {
        socket,
        seen: Vec::new(),
    };
    let probes = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let instance = 7600 * 10_000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(instance, &format!("svc{instance}")));
    let mut opts = HostOptions::new(instance, 0, 1024);
    // what systemd puts in a notify service's environment (WatchdogSec=1 → 1,000,000 µs)
    opts.prefix = vec![
        "env".into(),
        format!("NOTIFY_SOCKET={}", path.display()),
        "WATCHDOG_USEC=400000".into(),
        format!("KEEPWARM_INVOKER_STATUS_ADDRESS={probes}"),
    ];
    let mut host = Host::start(&opts);

    let ready = notes.wait_for("READY=1", WAIT, &host);
    assert!(
        ready.contains(&format!("STATUS=consuming invoker{instance}")),
        "{ready}"
    );
    // not before the plugin was loaded and the feed assigned its partitions
    let log = host.log();
    assert!(log.contains("plugin loaded"), "{log}");
    assert!(log.contains("feed consuming"), "{log}");
    let (code, body) = get_with_status(&probes, "/readyz").expect("/readyz answers");
    assert_eq!((code, body.trim()), (200, "ready: consuming"));
    let (code, body) = get_with_status(&probes, "/healthz").expect("/healthz answers");
    assert_eq!((code, body.trim()), (200, "ok"));
    assert_eq!(get_with_status(&probes, "/nope").map(|r| r.0), Some(404));

    // the watchdog is petted at half its interval: several times a second
    let first = notes.wait_for("WATCHDOG=1", Duration::from_secs(5), &host);
    assert_eq!(first.trim(), "WATCHDOG=1");
    let start = Instant::now();
    let mut pets = 0;
    while start.elapsed() < Duration::from_secs(1) {
        let mut buf = [0u8; 256];
        if let Ok(n) = notes.socket.recv(&mut buf) {
            pets += usize::from(String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"));
        }
    }
    assert!(pets >= 3, "{pets} watchdog notifications in a second");

    // it works as a host does
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({"n": 1})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(record["response"]["result"], json!({"echo": {"n": 1}}));

    // SIGTERM: STOPPING=1, then the drain, then a clean exit
    host.signal("-TERM");
    let stopping = notes.wait_for("STOPPING=1", Duration::from_secs(10), &host);
    assert!(stopping.contains("STATUS=draining"), "{stopping}");
    assert_eq!(host.wait(), Some(0), "{}", host.log());
}

#[test]
fn keepwarm_run_reads_the_default_config_location_without_config() {
    let out = Command::new(keepwarm_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("/etc/keepwarm/keepwarm.toml"), "{help}");
    // without the file it says which file it could not read
    if !std::path::Path::new("/etc/keepwarm/keepwarm.toml").exists() {
        let out = Command::new(keepwarm_bin()).arg("run").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("/etc/keepwarm/keepwarm.toml"), "{err}");
    }
}
