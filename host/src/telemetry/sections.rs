//! `[log]` and `[trace]` of the config: how the host logs, and where its traces go.

use serde::Deserialize;

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogSection {
    /// `text` (default) or `json`: one JSON object per line, with the activation id, transid
    /// and epoch on every line about an activation.
    #[serde(default)]
    pub format: LogFormat,
    /// Which lines, as `RUST_LOG` writes it (default `keepwarm=info,warn`); `RUST_LOG`, when
    /// set, wins.
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[trace]`: spans of every activation (continuing the controller's W3C `traceContext`)
/// exported over OTLP/HTTP (protobuf). Off when the section is absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TraceSection {
    /// The collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is added when the URL has no
    /// path, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
    pub endpoint: String,
    /// The `service.name` resource attribute.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "keepwarm".into()
}

impl TraceSection {
    /// The traces URL the exporter posts to.
    pub fn traces_url(&self) -> Result<String, String> {
        let url: reqwest::Url = self
            .endpoint
            .parse()
            .map_err(|e| format!("[trace] endpoint `{}`: {e}", self.endpoint))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "[trace] endpoint `{}`: OTLP/HTTP needs an http or https URL",
                self.endpoint
            ));
        }
        Ok(match url.path() {
            "" | "/" => format!("{}/v1/traces", url.as_str().trim_end_matches('/')),
            _ => url.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_collector_address_gets_the_traces_path() {
        let t = |e: &str| TraceSection {
            endpoint: e.into(),
            service_name: default_service_name(),
        };
        assert_eq!(
            t("http://127.0.0.1:4318").traces_url().unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            t("http://c:4318/custom/traces").traces_url().unwrap(),
            "http://c:4318/custom/traces"
        );
        assert!(t("grpc://c:4317").traces_url().is_err());
        assert!(t("not a url").traces_url().is_err());
    }
}
