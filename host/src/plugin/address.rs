//! Where a plugin may send the host. The host POSTs action code to `/init` and the caller's
//! parameters and `api_key` to `/run` at whatever address a plugin returns from `create`,
//! `attach` or `list-containers`; so that address must fall inside the operator's
//! `allowed-addresses` for the plugin, else a malicious or confused plugin could redirect
//! that traffic anywhere.
//!
//! Each entry is an IP or CIDR with an optional port or port range: `10.0.0.0/8`,
//! `10.0.0.5:8080`, `10.0.0.0/8:30000-32767`, `[fd00::/8]:8080`. The default is what the
//! plugin's own settings imply: its `publish-ip` (else `127.0.0.1`, where the engine plugins
//! publish by default) and the hosts of its TCP routes, any port.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    net: IpNet,
    ports: RangeInclusive<u16>,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = match self.net {
            IpNet::V6(n) if self.ports != (0..=u16::MAX) => format!("[{n}]"),
            n => n.to_string(),
        };
        match (*self.ports.start(), *self.ports.end()) {
            (0, u16::MAX) => write!(f, "{net}"),
            (a, b) if a == b => write!(f, "{net}:{a}"),
            (a, b) => write!(f, "{net}:{a}-{b}"),
        }
    }
}

/// The addresses one plugin's containers may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedAddresses {
    rules: Vec<Rule>,
}

impl std::fmt::Display for AllowedAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<String> = self.rules.iter().map(Rule::to_string).collect();
        write!(f, "[{}]", rules.join(", "))
    }
}

impl AllowedAddresses {
    /// Parses the operator's list; an error names the entry and the form expected.
    pub fn parse(list: &[String]) -> Result<AllowedAddresses, String> {
        let rules = list
            .iter()
            .map(|entry| {
                parse_rule(entry).ok_or_else(|| {
                    format!(
                        "allowed-addresses entry `{entry}` is not an IP or CIDR with an optional \
                         port or port range (10.0.0.0/8, 10.0.0.5:8080, 10.0.0.0/8:30000-32767, \
                         [fd00::/8]:8080)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedAddresses { rules })
    }

    /// What a plugin's settings imply: its `publish-ip` (else `127.0.0.1`) and the hosts of
    /// its TCP routes (names resolved now), any port.
    pub fn implied(routes: &[(String, String)], config: &[(String, String)]) -> AllowedAddresses {
        let any = |ip: IpAddr| Rule {
            net: IpNet::from(ip),
            ports: 0..=u16::MAX,
        };
        let publish = config
            .iter()
            .find(|(k, _)| k == "publish-ip")
            .and_then(|(_, v)| v.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let mut rules = vec![any(publish)];
        for (_, target) in routes {
            let Ok(super::route::Endpoint::Tcp(hostport)) = super::route::Endpoint::parse(target)
            else {
                continue;
            };
            match hostport.to_socket_addrs() {
                Ok(addrs) => rules.extend(addrs.map(|a| any(a.ip()))),
                Err(e) => tracing::warn!(route = %hostport, "cannot resolve a route's host: {e}"),
            }
        }
        rules.dedup();
        AllowedAddresses { rules }
    }

    fn allows(&self, addr: SocketAddr) -> bool {
        self.rules
            .iter()
            .any(|r| r.net.contains(&addr.ip()) && r.ports.contains(&addr.port()))
    }

    /// The address the host may use for `address` (`host:port`): itself when it is an
    /// allowed `ip:port`; a host name is resolved once and every address it names must be
    /// allowed, and the first is returned, so the host never resolves it again (a DNS answer
    /// that changes later cannot redirect traffic).
    pub async fn admit(&self, address: &str) -> Result<String, String> {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            return if self.allows(addr) {
                Ok(address.to_owned())
            } else {
                Err(format!("{addr} is outside allowed-addresses {self}"))
            };
        }
        // within a deadline: a resolver that does not answer must not stall a takeover
        let resolved: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host(address))
                .await
                .map_err(|_| format!("`{address}` did not resolve within {RESOLVE_WITHIN:?}"))?
                .map_err(|e| format!("`{address}` is not host:port or does not resolve: {e}"))?
                .collect();
        if let Some(bad) = resolved.iter().find(|a| !self.allows(**a)) {
            return Err(format!(
                "{address} resolves to {bad}, outside allowed-addresses {self}"
            ));
        }
        resolved
            .first()
            .map(SocketAddr::to_string)
            .ok_or_else(|| format!("`{address}` resolves to no address"))
    }
}

/// How long a plugin-supplied host name may take to resolve.
pub const RESOLVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

fn parse_rule(entry: &str) -> Option<Rule> {
    let entry = entry.trim();
    let (net, ports) = if let Some(rest) = entry.strip_prefix('[') {
        let (net, after) = rest.split_once(']')?;
        (net, after.strip_prefix(':'))
    } else if entry.matches(':').count() == 1 {
        let (net, ports) = entry.split_once(':')?;
        (net, Some(ports))
    } else {
        (entry, None)
    };
    let net = net
        .parse::<IpNet>()
        .ok()
        .or_else(|| net.parse::<IpAddr>().ok().map(IpNet::from))?;
    let ports = match ports {
        None => 0..=u16::MAX,
        Some(p) => match p.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                a..=b
            }
            None => {
                let p = p.parse().ok()?;
                p..=p
            }
        },
    };
    Some(Rule {
        net: net.trunc(),
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowedAddresses {
        AllowedAddresses::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[tokio::test]
    async fn only_addresses_inside_the_list_are_admitted() {
        let allowed = list(&["10.0.0.0/8:30000-32767", "192.168.1.5", "[fd00::/8]:8080"]);
        assert_eq!(
            allowed.admit("10.1.2.3:31000").await.unwrap(),
            "10.1.2.3:31000"
        );
        assert!(allowed.admit("10.1.2.3:8080").await.is_err());
        assert!(allowed.admit("192.168.1.5:1").await.is_ok());
        assert!(allowed.admit("192.168.1.6:1").await.is_err());
        assert!(allowed.admit("[fd00::1]:8080").await.is_ok());
        assert!(allowed.admit("[fd00::1]:8081").await.is_err());
        let e = allowed.admit("169.254.169.254:80").await.unwrap_err();
        assert!(
            e.contains("169.254.169.254:80") && e.contains("10.0.0.0/8:30000-32767"),
            "{e}"
        );
        assert!(allowed.admit("nonsense").await.is_err());
    }

    #[tokio::test]
    async fn a_host_name_is_resolved_once_and_every_answer_checked() {
        let loopback = list(&["127.0.0.0/8", "::1"]);
        let admitted = loopback.admit("localhost:8080").await.unwrap();
        assert!(admitted.parse::<SocketAddr>().unwrap().ip().is_loopback());
        assert!(list(&["10.0.0.0/8"]).admit("localhost:8080").await.is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1:70000",
            "10.0.0.1:9-1",
            "docker",
            "[fd00::",
        ] {
            let e = AllowedAddresses::parse(&[bad.to_string()]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_default_is_the_publish_ip_and_the_tcp_routes() {
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        let implied = AllowedAddresses::implied(
            &[
                pair("docker", "unix:///var/run/docker.sock"),
                pair("mesos", "http://10.0.0.9:5050"),
            ],
            &[pair("publish-ip", "10.0.0.7")],
        );
        assert_eq!(implied.to_string(), "[10.0.0.7/32, 10.0.0.9/32]");
        let local = AllowedAddresses::implied(&[], &[]);
        assert_eq!(local.to_string(), "[127.0.0.1/32]");
    }
}
