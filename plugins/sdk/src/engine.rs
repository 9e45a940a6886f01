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
/// container) is returned as it is.
pub fn demux_logs(raw: &[u8], max_bytes: u32) -> String {
    let max = max_bytes as usize;
    let mut out = Vec::with_capacity(raw.len().min(max));
    let mut rest = raw;
    let framed = raw.len() >= 8 && matches!(raw[0], 0..=2) && raw[1..4] == [0, 0, 0];
    if !framed {
        out.extend_from_slice(&raw[..raw.len().min(max)]);
    } else {
        while rest.len() >= 8 && out.len() < max {
            let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let end = (8 + len).min(rest.len());
            let frame = &rest[8..end];
            let room = max - out.len();
            out.extend_from_slice(&frame[..frame.len().min(room)]);
            rest = &rest[end..];
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `since` for the logs endpoint: seconds with a fraction, from milliseconds since the epoch.
pub fn since_param(since_ms: u64) -> String {
    format!("{}.{:03}", since_ms / 1000, since_ms % 1000)
}
