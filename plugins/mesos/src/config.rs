//! The Mesos plugin's settings, parsed once in `init`.

use keepwarm_plugin_sdk::{config_value, FactoryError, Pairs};
use std::sync::OnceLock;
use std::time::Duration;

static SETTINGS: OnceLock<Settings> = OnceLock::new();

#[derive(Debug, Clone)]
pub struct Settings {
    /// The route (authority) of the master, `mesos` by default.
    pub master: String,
    pub framework_name: String,
    pub user: String,
    pub role: String,
    /// How long the master keeps our tasks after our subscription breaks: the window in
    /// which a standby host must take over to keep the warm containers.
    pub failover_timeout: Duration,
    /// cpus per task when the spec gives no cpu-shares (otherwise shares / 1024).
    pub cpus: f64,
    /// How long `create` waits for an offer that fits.
    pub offer_wait: Duration,
    /// How long `create` waits for `TASK_RUNNING`.
    pub launch_timeout: Duration,
    /// How long reconciliation, kills and subscription may take.
    pub reply_timeout: Duration,
    /// Offers not used within this long are declined.
    pub offer_hold: Duration,
    /// `refuse_seconds` of the filters sent with DECLINE (an ACCEPT refuses nothing).
    pub refuse_seconds: f64,
    /// Docker network mode of tasks: BRIDGE (default, the proxy port is mapped) or HOST.
    pub network: String,
}

const KEYS: &[&str] = &[
    "master-route",
    "framework-name",
    "user",
    "role",
    "failover-timeout-s",
    "cpus",
    "offer-wait-ms",
    "launch-timeout-ms",
    "reply-timeout-ms",
    "offer-hold-ms",
    "refuse-seconds",
    "network",
];

impl Settings {
    pub fn parse(pairs: &Pairs) -> Result<Settings, FactoryError> {
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
            return Err(FactoryError::InvalidSpec(format!(
                "unknown mesos plugin setting `{k}`; known: {}",
                KEYS.join(", ")
            )));
        }
        let text =
            |key: &str, default: &str| config_value(pairs, key).unwrap_or(default).to_owned();
        let number = |key: &str, default: f64| -> Result<f64, FactoryError> {
            match config_value(pairs, key) {
                None => Ok(default),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| {
                        FactoryError::InvalidSpec(format!(
                            "mesos plugin setting `{key}` = `{v}`: expected a number ≥ 0"
                        ))
                    }),
            }
        };
        let millis = |key: &str, default: f64| -> Result<Duration, FactoryError> {
            Ok(Duration::from_millis(number(key, default)? as u64))
        };
        let network = text("network", "BRIDGE").to_ascii_uppercase();
        if network != "BRIDGE" && network != "HOST" {
            return Err(FactoryError::InvalidSpec(format!(
                "mesos plugin setting `network` = `{network}`: use BRIDGE or HOST"
            )));
        }
        Ok(Settings {
            master: text("master-route", "mesos"),
            framework_name: text("framework-name", "keepwarm"),
            user: text("user", "root"),
            role: text("role", "*"),
            // A week, as the Mesos docs advise for production schedulers.
            failover_timeout: Duration::from_secs_f64(number("failover-timeout-s", 604_800.0)?),
            cpus: number("cpus", 0.1)?,
            offer_wait: millis("offer-wait-ms", 5_000.0)?,
            launch_timeout: millis("launch-timeout-ms", 15_000.0)?,
            reply_timeout: millis("reply-timeout-ms", 5_000.0)?,
            offer_hold: millis("offer-hold-ms", 2_000.0)?,
            refuse_seconds: number("refuse-seconds", 1.0)?,
            network,
        })
    }

    pub fn init(pairs: &Pairs) -> Result<(), FactoryError> {
        let _ = SETTINGS.set(Settings::parse(pairs)?);
        Ok(())
    }

    pub fn get() -> &'static Settings {
        SETTINGS.get().expect("init runs before any other call")
    }
}
