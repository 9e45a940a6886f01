//! Matching a container's needs against resource offers.

use crate::proto::{Offer, Resource};

/// What one task needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Needs {
    pub cpus: f64,
    pub mem: f64,
}

fn scalar(offer: &Offer, name: &str) -> f64 {
    offer
        .resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
        .sum()
}

/// The role a resource of `name` was offered under (`*` when the offer does not say).
pub fn role_of(offer: &Offer, name: &str) -> String {
    offer
        .resources
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.role.clone())
        .unwrap_or_else(|| "*".into())
}

/// The lowest offered port, if the offer has one.
fn first_port(offer: &Offer) -> Option<u64> {
    offer
        .resources
        .iter()
        .filter(|r| r.name == "ports")
        .filter_map(|r| r.ranges.as_ref())
        .flat_map(|r| r.range.iter())
        .filter(|r| r.begin <= r.end && r.end <= u16::MAX as u64 && r.begin > 0)
        .map(|r| r.begin)
        .min()
}

/// The port to use when `offer` fits `needs`.
pub fn fits(offer: &Offer, needs: Needs) -> Option<u16> {
    // Offers carry floating-point scalars; Mesos itself compares with a small tolerance.
    const EPSILON: f64 = 1e-6;
    if scalar(offer, "cpus") + EPSILON < needs.cpus || scalar(offer, "mem") + EPSILON < needs.mem {
        return None;
    }
    first_port(offer).map(|p| p as u16)
}

/// The resources a task takes out of `offer`.
pub fn take(offer: &Offer, needs: Needs, port: u16) -> Vec<Resource> {
    vec![
        Resource::scalar("cpus", needs.cpus, &role_of(offer, "cpus")),
        Resource::scalar("mem", needs.mem, &role_of(offer, "mem")),
        Resource::port(port as u64, &role_of(offer, "ports")),
    ]
}

/// A short description of what is on offer, for a `capacity` error.
pub fn summary(offers: &[Offer]) -> String {
    if offers.is_empty() {
        return "none".into();
    }
    offers
        .iter()
        .map(|o| {
            format!(
                "{}: {:.2} cpus, {:.0} MB, {}",
                o.hostname,
                scalar(o, "cpus"),
                scalar(o, "mem"),
                first_port(o).map_or("no port".into(), |p| format!("port {p}"))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(json: serde_json::Value) -> Offer {
        serde_json::from_value(json).unwrap()
    }

    fn sample(cpus: f64, mem: f64, ports: &[(u64, u64)]) -> Offer {
        let ranges: Vec<_> = ports
            .iter()
            .map(|(b, e)| serde_json::json!({"begin": b, "end": e}))
            .collect();
        offer(serde_json::json!({
            "id": {"value": "o1"}, "framework_id": {"value": "f"}, "agent_id": {"value": "a1"},
            "hostname": "127.0.0.1",
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}, "role": "*"},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}, "role": "*"},
                {"name": "ports", "type": "RANGES", "ranges": {"range": ranges}, "role": "*"}
            ]
        }))
    }

    #[test]
    fn an_offer_fits_when_cpus_mem_and_a_port_are_there() {
        let needs = Needs {
            cpus: 0.25,
            mem: 128.0,
        };
        assert_eq!(
            fits(&sample(1.0, 512.0, &[(31005, 31010)]), needs),
            Some(31005)
        );
        assert_eq!(fits(&sample(0.1, 512.0, &[(31005, 31010)]), needs), None);
        assert_eq!(fits(&sample(1.0, 64.0, &[(31005, 31010)]), needs), None);
        assert_eq!(fits(&sample(1.0, 512.0, &[]), needs), None);
        // exactly what is asked, with floating-point noise
        assert!(fits(&sample(0.25, 128.0, &[(1, 1)]), needs).is_some());
    }

    #[test]
    fn a_task_takes_what_it_needs_under_the_offered_role() {
        let o = sample(1.0, 512.0, &[(31005, 31010)]);
        let r = take(
            &o,
            Needs {
                cpus: 0.5,
                mem: 256.0,
            },
            31005,
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json[0]["scalar"]["value"], 0.5);
        assert_eq!(json[1]["name"], "mem");
        assert_eq!(json[2]["ranges"]["range"][0]["begin"], 31005);
        assert_eq!(json[2]["role"], "*");
    }
}
