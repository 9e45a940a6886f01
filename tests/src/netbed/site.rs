//! The site most multi-machine runs use: machine `ctl` (the test or demo itself, with its
//! stand-in controller), `h1`–`h3` (keepwarm hosts), engine machines each with a
//! [`RemoteDocker`], and `b` (the broker).

use super::engine::{docker_plugin, RemoteDocker};
use super::NetBed;
use crate::chaos::broker::Broker;
use crate::cluster::Cluster;
use crate::host::HostOptions;
use crate::kafka::Controller;

/// The machines keepwarm hosts run on.
pub const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

/// A site that is up: its bed, engines and broker.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    pub bed: &'a NetBed,
    /// In the order their machines were named.
    pub engines: &'a [RemoteDocker],
    pub broker: &'a Broker,
}

impl Site<'_> {
    /// A stand-in controller (`controller`, for `options.instance`) on the site's broker, and
    /// a cluster on [`HOSTS`] whose Docker plugin reaches every engine over TLS.
    pub fn start_cluster(
        &self,
        rt: &tokio::runtime::Runtime,
        controller: &str,
        mut options: HostOptions,
    ) -> (Controller, Cluster) {
        let address = &self.broker.address;
        let c = rt.block_on(Controller::on(address, options.instance, controller));
        options.brokers = address.clone();
        options.local_engine = false;
        let tls = docker_plugin(self.engines, &mut options);
        let cluster = Cluster::start_on(self.bed, &HOSTS, &options, |_, o| o.extra += &tls);
        (c, cluster)
    }
}

/// Builds the site with `engine_machines` (the keepwarm binary and Docker plugin built first),
/// runs `f` on machine `ctl`, and takes everything down after, the broker first.
pub fn on_site<T: Send>(engine_machines: &[&str], f: impl FnOnce(Site<'_>) -> T + Send) -> T {
    crate::keepwarm_bin();
    crate::component("keepwarm_docker");
    let mut names = vec!["ctl"];
    names.extend(HOSTS);
    names.push("b");
    names.extend(engine_machines);
    let mut bed = NetBed::new(&names);
    let engines: Vec<RemoteDocker> = engine_machines
        .iter()
        .map(|m| RemoteDocker::start(&mut bed, m))
        .collect();
    let broker_at = format!("{}:9092", bed.machine("b").ip);
    let (bed, engines) = (&bed, &engines[..]);
    bed.inside("ctl", || {
        let broker = Broker::start_at(&broker_at, bed.prefix("b"));
        f(Site {
            bed,
            engines,
            broker: &broker,
        })
    })
}
