//! OpenWhisk's `runtimes.json`: which image runs each kind, and the prewarm stem cells.

use super::ActionError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
struct ImageName {
    #[serde(default)]
    prefix: Option<String>,
    name: String,
    #[serde(default)]
    tag: Option<String>,
}

impl ImageName {
    fn reference(&self) -> String {
        let mut s = String::new();
        if let Some(p) = self.prefix.as_deref().filter(|p| !p.is_empty()) {
            s.push_str(p);
            s.push('/');
        }
        s.push_str(&self.name);
        s.push(':');
        s.push_str(self.tag.as_deref().unwrap_or("latest"));
        s
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StemCellDoc {
    #[serde(alias = "count")]
    initial_count: u32,
    /// OpenWhisk's size form: "256 MB".
    memory: String,
    #[serde(default)]
    reactive: Option<ReactiveDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReactiveDoc {
    min_count: u32,
    max_count: u32,
    /// Scala duration form: "2 minutes".
    ttl: String,
    threshold: u32,
    increment: u32,
}

/// OpenWhisk's reactive prewarming: grow by `increment` per `threshold` cold starts of the
/// kind since the last check (up to `max`); let prewarms unused for `ttl` expire (down to
/// `min`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reactive {
    pub min: u32,
    pub max: u32,
    pub ttl: Duration,
    pub threshold: u32,
    pub increment: u32,
}

/// Parses Scala-style durations: "2 minutes", "30 seconds", "500 ms", "1 hour".
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim().to_ascii_lowercase();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    Some(match s[digits.len()..].trim() {
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => Duration::from_millis(n),
        "s" | "second" | "seconds" => Duration::from_secs(n),
        "m" | "min" | "minute" | "minutes" => Duration::from_secs(n * 60),
        "h" | "hour" | "hours" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeDoc {
    kind: String,
    image: ImageName,
    #[serde(default)]
    stem_cells: Vec<StemCellDoc>,
}

#[derive(Debug, Clone, Deserialize)]
struct Manifest {
    runtimes: HashMap<String, Vec<RuntimeDoc>>,
    #[serde(default)]
    blackboxes: Vec<ImageName>,
}

/// A prewarm stem cell: keep `count` containers of `kind` with `memory_mb` ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StemCell {
    pub kind: String,
    pub image: String,
    pub memory_mb: u32,
    /// Initial count (the fixed count when not reactive).
    pub count: u32,
    pub reactive: Option<Reactive>,
}

/// The parsed manifest.
#[derive(Debug, Clone, Default)]
pub struct Runtimes {
    images: HashMap<String, String>,
    stem_cells: Vec<StemCell>,
    blackboxes: Vec<String>,
}

/// Parses OpenWhisk's memory sizes: "256 MB", "256m", "1 GB", "268435456 B".
pub fn parse_mb(s: &str) -> Option<u32> {
    let s = s.trim().to_ascii_lowercase();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = s[digits.len()..].trim();
    let mb = match unit {
        "" | "m" | "mb" => n,
        "g" | "gb" => n * 1024,
        "k" | "kb" => n / 1024,
        "b" => n / (1024 * 1024),
        _ => return None,
    };
    u32::try_from(mb).ok()
}

impl Runtimes {
    pub fn load(path: &Path) -> Result<Runtimes, ActionError> {
        let err = |reason: String| ActionError::Read {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    pub fn parse(text: &[u8]) -> Result<Runtimes, String> {
        let m: Manifest = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        let mut r = Runtimes {
            blackboxes: m.blackboxes.iter().map(ImageName::reference).collect(),
            ..Default::default()
        };
        for rt in m.runtimes.into_values().flatten() {
            let image = rt.image.reference();
            for cell in &rt.stem_cells {
                let memory_mb = parse_mb(&cell.memory).ok_or_else(|| {
                    format!("{}: bad stem cell memory `{}`", rt.kind, cell.memory)
                })?;
                let reactive = match &cell.reactive {
                    None => None,
                    Some(r) => Some(Reactive {
                        min: r.min_count,
                        max: r.max_count.max(r.min_count),
                        ttl: parse_duration(&r.ttl)
                            .ok_or_else(|| format!("{}: bad reactive ttl `{}`", rt.kind, r.ttl))?,
                        threshold: r.threshold.max(1),
                        increment: r.increment,
                    }),
                };
                r.stem_cells.push(StemCell {
                    kind: rt.kind.clone(),
                    image: image.clone(),
                    memory_mb,
                    count: cell.initial_count,
                    reactive,
                });
            }
            r.images.insert(rt.kind, image);
        }
        r.stem_cells.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(r)
    }

    /// The image for a kind.
    pub fn image(&self, kind: &str) -> Option<&str> {
        self.images.get(kind).map(String::as_str)
    }

    pub fn stem_cells(&self) -> &[StemCell] {
        &self.stem_cells
    }

    /// Whether a blackbox image is allowed (any image when the manifest lists none): the same
    /// repository and tag as a listed image (no tag means `latest`). Not a prefix:
    /// `keepwarm/action-runtime` does not allow `keepwarm/action-runtime-evil`.
    pub fn allows_blackbox(&self, image: &str) -> bool {
        self.blackboxes.is_empty()
            || self
                .blackboxes
                .iter()
                .any(|b| with_tag(b) == with_tag(image))
    }
}

/// `repository:tag`, with `latest` when the reference names no tag (a `:` after the last
/// `/` is a tag; one before it is a registry's port).
fn with_tag(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    if name.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openwhisks_manifest_shape() {
        let text = br#"{
          "runtimes": { "nodejs": [ { "kind": "nodejs:20", "default": true,
              "image": { "prefix": "openwhisk", "name": "action-nodejs-v20", "tag": "nightly" },
              "deprecated": false, "attached": { "attachmentName": "codefile", "attachmentType": "text/plain" },
              "stemCells": [ { "initialCount": 2, "memory": "256 MB",
                  "reactive": { "minCount": 1, "maxCount": 4, "ttl": "2 minutes", "threshold": 1, "increment": 1 } } ] } ] },
          "blackboxes": [ { "prefix": "openwhisk", "name": "dockerskeleton", "tag": "nightly" } ] }"#;
        let r = Runtimes::parse(text).unwrap();
        assert_eq!(
            r.image("nodejs:20"),
            Some("openwhisk/action-nodejs-v20:nightly")
        );
        assert_eq!(
            r.stem_cells(),
            &[StemCell {
                kind: "nodejs:20".into(),
                image: "openwhisk/action-nodejs-v20:nightly".into(),
                memory_mb: 256,
                count: 2,
                reactive: Some(Reactive {
                    min: 1,
                    max: 4,
                    ttl: Duration::from_secs(120),
                    threshold: 1,
                    increment: 1
                }),
            }]
        );
        assert!(r.allows_blackbox("openwhisk/dockerskeleton:nightly"));
        assert!(!r.allows_blackbox("evil/image:1"));
        assert!(!r.allows_blackbox("openwhisk/dockerskeleton-evil:nightly"));
        assert!(!r.allows_blackbox("openwhisk/dockerskeleton:nightly-evil"));
        assert!(!r.allows_blackbox("openwhisk/dockerskeleton"));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_mb("256 MB"), Some(256));
        assert_eq!(parse_mb("1 GB"), Some(1024));
        assert_eq!(parse_mb("256m"), Some(256));
        assert_eq!(parse_mb("268435456 B"), Some(256));
        assert_eq!(parse_mb("lots"), None);
        assert_eq!(parse_duration("2 minutes"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("500 ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("soon"), None);
    }
}
