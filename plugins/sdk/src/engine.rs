//! Helpers shared by plugins for Docker-compatible engines (Docker, Podman).

use crate::Pairs;

/// Percent-encodes a query-string value.
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `filters` query value selecting containers that carry every label in `labels`.
pub fn label_filter(labels: &Pairs) -> String {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    encode_query(&serde_json::json!({ "label": wanted }).to_string())
}

/// Demultiplexes a Docker log stream (8-byte frame headers: stream, 0, 0, 0, big-endian
/// length) into text, keeping at most `max_bytes`. A stream without frame headers (a TTY
/// container) is all stdout. Read with `timestamps`, each line comes out as OpenWhisk's log
/// store writes it: `<time, padded to 30> stdout|stderr: <text>`.
pub fn demux_logs(raw: &[u8], max_bytes: u32) -> String {
    let max = max_bytes as usize;
    let mut out = String::with_capacity(raw.len().min(max));
    let mut push = |stream: &str, payload: &[u8]| {
        for line in String::from_utf8_lossy(payload).split_inclusive('\n') {
            if out.len() >= max {
                return;
            }
            let text = log_line(stream, line);
            let room = max - out.len();
            let mut cut = text.len().min(room);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&text[..cut]);
        }
    };
    let framed = raw.len() >= 8 && matches!(raw[0], 0..=2) && raw[1..4] == [0, 0, 0];
    if !framed {
        push("stdout", raw);
    } else {
        let mut rest = raw;
        while rest.len() >= 8 {
            let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let end = (8 + len).min(rest.len());
            let stream = if rest[0] == 2 { "stderr" } else { "stdout" };
            push(stream, &rest[8..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// One line of a log stream: `<RFC 3339 time> <text>` (read with `timestamps`) as OpenWhisk
/// formats it, any other line as it is.
fn log_line(stream: &str, line: &str) -> String {
    match line.split_once(' ') {
        Some((time, text))
            if time.len() >= 20
                && time.ends_with('Z')
                && time.as_bytes()[4] == b'-'
                && time.as_bytes()[10] == b'T' =>
        {
            format!("{time:<30} {stream}: {text}")
        }
        _ => line.to_owned(),
    }
}

/// `since` for the logs endpoint: seconds with a fraction, from milliseconds since the epoch.
pub fn since_param(since_ms: u64) -> String {
    format!("{}.{:03}", since_ms / 1000, since_ms % 1000)
}

/// How the host reaches a container's action proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    /// The proxy port is published on `publish_ip`; the address is `publish_ip:host_port`.
    Published,
    /// The container's own IP on its network (the host must be able to route to it).
    ContainerIp,
}

/// Settings common to Docker-compatible engines, from `init`'s config pairs.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// API path prefix, e.g. `v1.41` (Docker) or `v4.0.0/libpod` (Podman).
    pub api_version: String,
    pub address: AddressMode,
    pub publish_ip: String,
    /// Network for containers whose spec names none.
    pub network: Option<String>,
}

impl EngineSettings {
    /// Known keys: `api-version`, `address` (`published` | `container-ip`), `publish-ip`,
    /// `network`. Any other key is an error naming the plugin and the known keys.
    pub fn parse(
        plugin: &str,
        pairs: &Pairs,
        default_api: &str,
    ) -> Result<EngineSettings, crate::FactoryError> {
        use crate::{config_value, FactoryError};
        const KEYS: &[&str] = &["api-version", "address", "publish-ip", "network"];
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
            return Err(FactoryError::InvalidSpec(format!(
                "unknown {plugin} plugin setting `{k}`; known: {}",
                KEYS.join(", ")
            )));
        }
        let address = match config_value(pairs, "address").unwrap_or("published") {
            "published" => AddressMode::Published,
            "container-ip" => AddressMode::ContainerIp,
            other => {
                return Err(FactoryError::InvalidSpec(format!(
                    "address = `{other}`: use `published` or `container-ip`"
                )))
            }
        };
        Ok(EngineSettings {
            api_version: config_value(pairs, "api-version")
                .unwrap_or(default_api)
                .to_owned(),
            address,
            publish_ip: config_value(pairs, "publish-ip")
                .unwrap_or("127.0.0.1")
                .to_owned(),
            network: config_value(pairs, "network").map(str::to_owned),
        })
    }
}

/// Whether an address is one other machines can reach the engine's machine at: neither
/// loopback nor unspecified (a host name other than `localhost` is taken to be).
pub fn shared_address(ip: &str) -> bool {
    match ip.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback() && !ip.is_unspecified(),
        Err(_) => !ip.eq_ignore_ascii_case("localhost"),
    }
}

impl EngineSettings {
    /// Whether every member of a cluster can reach the containers: their address is
    /// `publish-ip`, and it is a [`shared_address`] (an engine on another machine,
    /// publishing on an address the members route to). A container IP on the engine's own
    /// network, or 127.0.0.1, is reached only from the engine's machine.
    pub fn cluster_wide(&self) -> bool {
        self.address == AddressMode::Published && shared_address(&self.publish_ip)
    }

    /// The capabilities of a Docker-compatible engine plugin with these settings (`None`:
    /// `describe` ran before `init`, so nothing is known of where containers are).
    pub fn capabilities(settings: Option<&EngineSettings>) -> crate::Capabilities {
        use crate::Capabilities;
        let base = Capabilities::PAUSE | Capabilities::LOGS | Capabilities::CONCURRENT;
        if settings.is_some_and(EngineSettings::cluster_wide) {
            base | Capabilities::CLUSTER_WIDE
        } else {
            base
        }
    }
}

/// The label in which Docker-compatible plugins keep the proxy port of a container.
pub const PORT_LABEL: &str = "keepwarm.port";

/// The proxy port recorded in a container's labels (8080 when absent).
pub fn proxy_port(labels: &Pairs) -> u16 {
    crate::label(labels, PORT_LABEL)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

/// Labels from an engine's map, sorted so results are stable.
pub fn sorted_labels(map: Option<&std::collections::HashMap<String, String>>) -> Pairs {
    let mut pairs: Pairs = map
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    pairs.sort();
    pairs
}

/// The error for a container the engine does not know.
pub fn gone(id: &str) -> crate::FactoryError {
    crate::FactoryError::NotFound(format!("container {id} does not exist"))
}

/// POSTs to a container's action endpoint (`start`, `pause`, `unpause`): 2xx and 304 are
/// success, 404 is `not-found`.
pub fn container_post(url: &str, id: &str, what: &str) -> Result<(), crate::FactoryError> {
    let r = crate::http::request("POST", url, &[], None)?;
    match r.status {
        200..=299 | 304 => Ok(()),
        404 => Err(gone(id)),
        _ => Err(r.error(&format!("{what} {id}"))),
    }
}

/// Force-removes a container: 2xx is success, 404 is `not-found`.
pub fn container_delete(url: &str, id: &str) -> Result<(), crate::FactoryError> {
    let r = crate::http::request("DELETE", url, &[], None)?;
    match r.status {
        200..=299 => Ok(()),
        404 => Err(gone(id)),
        _ => Err(r.error(&format!("remove {id}"))),
    }
}

/// The first `tail` a logs read asks for, and the largest before it asks for everything.
const FIRST_TAIL: usize = 64;
const LAST_TAIL: usize = 32_768;

/// Reads a container's log stream since a moment (`url` carries `since`) and demultiplexes
/// it, keeping at most `max_bytes`.
///
/// Docker's json-file reader (and Podman's) finds `since` by reading the container's whole
/// log from its start, so a container that served thousands of activations took tens of
/// milliseconds per read and more with every activation. With `tail` it reads backwards from
/// the end instead: ask for the last 64 lines, and if every one of them is newer than `since`
/// there may be more, so ask for 8 times as many, up to 32,768, then for all. Fewer lines than
/// asked for means the read reached past `since`: that is everything since.
pub fn container_logs(url: &str, id: &str, max_bytes: u32) -> Result<String, crate::FactoryError> {
    let mut tail = FIRST_TAIL;
    loop {
        let ask = if tail > LAST_TAIL {
            url.to_owned()
        } else {
            format!("{url}&tail={tail}")
        };
        let r = crate::http::request("GET", &ask, &[], None)?;
        if r.status == 404 {
            return Err(gone(id));
        }
        let body = r.ok(&format!("logs of {id}"))?.body;
        if tail > LAST_TAIL || log_lines(&body) < tail {
            return Ok(demux_logs(&body, max_bytes));
        }
        tail *= 8;
    }
}

/// Log lines in a log stream: its frames (one per line, or per part of a long line, as
/// `tail` counts them), or its newlines for a stream without frame headers (a TTY).
fn log_lines(raw: &[u8]) -> usize {
    let framed = raw.len() >= 8 && matches!(raw[0], 0..=2) && raw[1..4] == [0, 0, 0];
    if !framed {
        return raw.iter().filter(|b| **b == b'\n').count();
    }
    let (mut rest, mut n) = (raw, 0);
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        rest = &rest[(8 + len).min(rest.len())..];
        n += 1;
    }
    n
}

/// Adopts an existing container: `look` reads its current state from the engine; a paused one
/// is resumed through `unpause_url`; anything not running is a `conflict`. The handle the host
/// stored is kept.
pub fn adopt(
    known: crate::Container,
    look: impl Fn() -> Result<crate::Container, crate::FactoryError>,
    unpause_url: &str,
) -> Result<crate::Container, crate::FactoryError> {
    use crate::ContainerState;
    let mut current = look()?;
    match current.state {
        ContainerState::Running => {}
        ContainerState::Paused => {
            container_post(unpause_url, &known.id, "unpause")?;
            current = look()?;
        }
        other => {
            return Err(crate::FactoryError::Conflict(format!(
                "container {} is {other:?}, not running",
                known.id
            )))
        }
    }
    current.handle = known.handle;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, text: &str) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(text.len() as u32).to_be_bytes());
        f.extend_from_slice(text.as_bytes());
        f
    }

    #[test]
    fn log_lines_counts_frames_or_newlines() {
        let framed: Vec<u8> = [frame(1, "a\n"), frame(2, "b\n"), frame(1, "c\n")].concat();
        assert_eq!(log_lines(&framed), 3);
        assert_eq!(demux_logs(&framed, 100), "a\nb\nc\n");
        // read with timestamps: OpenWhisk's log line (the time padded to 30 columns)
        let stamped: Vec<u8> = [
            frame(1, "2026-12-06T10:00:00.123456789Z hello\n"),
            frame(2, "2026-12-06T10:00:00.5Z oops\n"),
        ]
        .concat();
        assert_eq!(
            demux_logs(&stamped, 1000),
            "2026-12-06T10:00:00.123456789Z stdout: hello\n2026-12-06T10:00:00.5Z         stderr: oops\n"
        );
        assert_eq!(demux_logs(&stamped, 10), "2026-12-06");
        assert_eq!(log_lines(b"one\ntwo\n"), 2);
        assert_eq!(log_lines(b""), 0);
        // a frame cut short still counts once
        let mut cut = frame(1, "long line\n");
        cut.truncate(12);
        assert_eq!(log_lines(&cut), 1);
    }
}
