//! A Docker engine on a machine of the bed: its own `dockerd` (data, exec root, containerd)
//! inside the machine's namespace, serving the Engine API on `tcp://IP:2376` with
//! `--tlsverify` (a CA, a server certificate naming the IP, a client certificate for the
//! keepwarm hosts), and on a unix socket the test inspects it through. The action image is
//! copied in from the machine's main Docker daemon (nothing is pulled).

use super::{run, NetBed};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The port Docker's TLS API listens on by convention.
pub const TLS_PORT: u16 = 2376;
const IMAGE: &str = "keepwarm/action-runtime:latest";

/// A dockerd on one machine of the bed; dropping it stops it and removes its containers.
#[derive(Debug)]
pub struct RemoteDocker {
    pub machine: String,
    pub ip: String,
    /// Where the test reaches it (the bed's machines use TCP + TLS).
    pub socket: PathBuf,
    /// `ca.pem`, `cert.pem`, `key.pem` for a client (`[plugin.tls.docker] cert-dir`).
    pub client_certs: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A CA, a server certificate for `ip` and a client certificate, in Docker's layout.
fn certificates(dir: &Path, ip: &str) -> (PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut out = Vec::new();
    for (name, sans, usage) in [
        (
            "server",
            vec![ip.to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ("client", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(d.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
        out.push(d);
    }
    (out.remove(0), out.remove(0))
}

impl RemoteDocker {
    /// Starts dockerd on `machine` and loads the action image into it.
    pub fn start(bed: &mut NetBed, machine: &str) -> RemoteDocker {
        let cgroup = bed.own_cgroup(machine);
        let ip = bed.machine(machine).ip.clone();
        let dir = tempfile::Builder::new()
            .prefix("kw-engine-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let (server, client) = certificates(dir.path(), &ip);
        let socket = dir.path().join("docker.sock");
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, "{}").unwrap();
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let child = bed
            .command(machine, "dockerd")
            .args(["--config-file", &p("daemon.json")])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args(["--pidfile", &p("docker.pid")])
            .args(["-H", &format!("unix://{}", socket.display())])
            .args(["-H", &format!("tcp://{ip}:{TLS_PORT}")])
            .arg("--tlsverify")
            .args(["--tlscacert", &server.join("ca.pem").display().to_string()])
            .args(["--tlscert", &server.join("cert.pem").display().to_string()])
            .args(["--tlskey", &server.join("key.pem").display().to_string()])
            // nothing is routed out of the bed: no NAT, no iptables rules; published ports go
            // through docker-proxy on the machine's address
            .args([
                "--iptables=false",
                "--ip-masq=false",
                "--bip",
                "172.30.0.1/24",
            ])
            .args(["--cgroup-parent", &format!("/{cgroup}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let engine = RemoteDocker {
            machine: machine.to_owned(),
            ip,
            socket,
            client_certs: client,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd on {machine} did not answer within 60 s: {}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        run(
            "sh",
            &[
                "-c",
                &format!(
                    "docker save {IMAGE} | docker -H unix://{} load -q",
                    engine.socket.display()
                ),
            ],
        );
        engine
    }

    /// `docker -H unix://…` with `args` on this engine.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("docker CLI")
    }

    /// The route a keepwarm host on the bed uses.
    pub fn route(&self) -> String {
        format!("tcp://{}:{TLS_PORT}", self.ip)
    }

    /// Full ids of the containers with label `keepwarm.cluster=cluster`.
    pub fn containers(&self, cluster: &str) -> Vec<String> {
        let out = self.docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=keepwarm.cluster={cluster}"),
        ]);
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

/// Sets the Docker plugin of `options` to `engines` (its routes and config) and returns the
/// TLS sections each host's config needs. With one engine the route is `docker`, with
/// several `docker-<machine>`, each an entry of the plugin's `engines`.
pub fn docker_plugin(engines: &[RemoteDocker], options: &mut crate::host::HostOptions) -> String {
    let route = |e: &RemoteDocker| match engines.len() {
        1 => "docker".to_owned(),
        _ => format!("docker-{}", e.machine),
    };
    let routes: Vec<String> = engines
        .iter()
        .map(|e| format!("\"{}\" = \"{}\"", route(e), e.route()))
        .collect();
    options.plugin.routes = routes.join(", ");
    options.plugin.config = match engines {
        [one] => format!("\"publish-ip\" = \"{}\"", one.ip),
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|e| format!("{}@{}", route(e), e.ip))
                .collect();
            format!("engines = \"{}\"", list.join(", "))
        }
    };
    options.local_engine = false;
    engines
        .iter()
        .map(|e| {
            format!(
                "[plugin.tls.{}]\ncert-dir = \"{}\"\n",
                route(e),
                e.client_certs.display()
            )
        })
        .collect()
}

impl Drop for RemoteDocker {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        if let Some(mut child) = self.child.take() {
            super::signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // a killed daemon leaves its mounts (overlay layers, shm) behind in the host's mount
        // namespace: take them down before the directory goes
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = std::process::Command::new("umount")
                .args(["-l", m])
                .status();
        }
    }
}
