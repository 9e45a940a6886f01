//! Whether an action's limits fit its namespace, as upstream's `ActionLimits.checkLimits`
//! decides before an activation runs: each namespace may narrow the system's range through
//! its `limits` in the activation message (`minActionMemory`, `maxActionTimeout`, ...), and
//! never widen it. The system ranges are upstream's defaults (`application.conf`), except
//! concurrency, whose upstream default maximum of 1 would turn keepwarm's intra-container
//! concurrency off; deployments raise it, keepwarm allows up to 500. `[limits]` in the config
//! sets them, as upstream's `whisk.memory`, `whisk.time-limit`, ... settings do.

use super::Limits;
use serde_json::Value;

/// An inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

/// The system's ranges; a namespace's own are clamped into them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemLimits {
    /// Milliseconds.
    pub timeout: Range,
    /// MB.
    pub memory: Range,
    /// MB.
    pub logs: Range,
    pub concurrency: Range,
}

impl Default for SystemLimits {
    fn default() -> Self {
        SystemLimits {
            timeout: Range {
                min: 100,
                max: 300_000,
            },
            memory: Range { min: 128, max: 512 },
            logs: Range { min: 0, max: 10 },
            concurrency: Range { min: 1, max: 500 },
        }
    }
}

impl SystemLimits {
    /// Upstream's messages, word for word: `Err` is the application error's text.
    pub fn check(&self, limits: &Limits, namespace: &Value) -> Result<(), String> {
        let range = |system: Range, min_key: &str, max_key: &str| Range {
            min: namespace
                .get(min_key)
                .and_then(Value::as_u64)
                .map_or(system.min, |n| n.max(system.min)),
            max: namespace
                .get(max_key)
                .and_then(Value::as_u64)
                .map_or(system.max, |n| n.min(system.max)),
        };
        let timeout = range(self.timeout, "minActionTimeout", "maxActionTimeout");
        let memory = range(self.memory, "minActionMemory", "maxActionMemory");
        let logs = range(self.logs, "minActionLogs", "maxActionLogs");
        let concurrency = range(
            self.concurrency,
            "minActionConcurrency",
            "maxActionConcurrency",
        );
        let duration = |is: u64, bound: u64, what: &str| {
            format!("duration {is} milliseconds {what} allowed threshold of {bound} milliseconds")
        };
        let size = |field: &str, is: u64, bound: u64, what: &str| {
            format!("{field} size {is} MB {what} allowed threshold of {bound} MB")
        };
        let t = limits.timeout;
        if t > timeout.max {
            return Err(duration(t, timeout.max, "exceeds"));
        }
        if t < timeout.min {
            return Err(duration(t, timeout.min, "below"));
        }
        let m = u64::from(limits.memory);
        if m > memory.max {
            return Err(size("memory", m, memory.max, "exceeds"));
        }
        if m < memory.min {
            return Err(size("memory", m, memory.min, "below"));
        }
        let c = u64::from(limits.concurrency);
        if c > concurrency.max {
            return Err(format!(
                "concurrency {c} exceeds allowed threshold of {}",
                concurrency.max
            ));
        }
        if c < concurrency.min {
            return Err(format!(
                "concurrency {c} below allowed threshold of {}",
                concurrency.min
            ));
        }
        let l = u64::from(limits.logs);
        if l > logs.max {
            return Err(size("log", l, logs.max, "exceeds"));
        }
        if l < logs.min {
            return Err(size("log", l, logs.min, "below"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(timeout: u64, memory: u32, logs: u32, concurrency: u32) -> Limits {
        Limits {
            timeout,
            memory,
            logs,
            concurrency,
        }
    }

    #[test]
    fn upstream_messages_for_each_limit() {
        let s = SystemLimits::default();
        let none = json!({});
        assert_eq!(s.check(&limits(60_000, 256, 10, 1), &none), Ok(()));
        assert_eq!(
            s.check(&limits(60_000, 1024, 10, 1), &none),
            Err("memory size 1024 MB exceeds allowed threshold of 512 MB".into())
        );
        assert_eq!(
            s.check(&limits(50, 256, 10, 1), &none),
            Err("duration 50 milliseconds below allowed threshold of 100 milliseconds".into())
        );
        assert_eq!(
            s.check(&limits(60_000, 256, 11, 1), &none),
            Err("log size 11 MB exceeds allowed threshold of 10 MB".into())
        );
        assert_eq!(
            s.check(&limits(60_000, 256, 10, 501), &none),
            Err("concurrency 501 exceeds allowed threshold of 500".into())
        );
    }

    #[test]
    fn a_namespace_narrows_but_never_widens_the_system_range() {
        let s = SystemLimits::default();
        let narrow = json!({ "maxActionMemory": 256, "maxActionTimeout": 1000 });
        assert_eq!(
            s.check(&limits(60_000, 256, 10, 1), &narrow),
            Err(
                "duration 60000 milliseconds exceeds allowed threshold of 1000 milliseconds".into()
            )
        );
        let wide = json!({ "maxActionMemory": 4096 });
        assert_eq!(
            s.check(&limits(1000, 1024, 10, 1), &wide),
            Err("memory size 1024 MB exceeds allowed threshold of 512 MB".into())
        );
    }
}
