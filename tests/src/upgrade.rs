//! What an operator does to upgrade a cluster, for the upgrade test and benchmark: step the
//! active host down, put a new plugin build in place, ask for it to be swapped in.

use crate::cluster::Cluster;
use crate::keepwarm_bin;
use serde_json::Value;
use std::path::Path;

/// `keepwarm cluster step-down` against host `i`; what it printed (panics if it failed).
pub fn step_down(cluster: &Cluster, i: usize) -> Value {
    let (code, out, err) = admin(cluster, &["cluster", "step-down"], i);
    assert_eq!(
        code,
        0,
        "step-down failed: {out}{err}\n{}",
        cluster.hosts[i].log()
    );
    serde_json::from_str(&out).unwrap()
}

/// `keepwarm plugin reload docker` against host `i`: exit code, stdout, stderr.
pub fn reload(cluster: &Cluster, i: usize) -> (i32, String, String) {
    admin(cluster, &["plugin", "reload", "docker"], i)
}

fn admin(cluster: &Cluster, command: &[&str], i: usize) -> (i32, String, String) {
    let out = std::process::Command::new(keepwarm_bin())
        .args(command)
        .args(["--leader", &cluster.addresses[i]])
        .arg("--tls-dir")
        .arg(&cluster.certs)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new build of the same plugin: the component with one more custom section (same code,
/// another file and digest, as a rebuild with a new version stamp gives).
pub fn rebuilt(component: &[u8], stamp: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"keepwarm-build";
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(stamp.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Puts `bytes` in place of `file` the way a deployment does (write beside, rename over).
pub fn deploy(file: &Path, bytes: &[u8]) {
    let tmp = file.with_extension("wasm.new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}
