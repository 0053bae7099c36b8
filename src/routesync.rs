//! Kernel routes in vxwg's table kept equal to what the control plane approved.
//!
//! [`RouteSync`] holds the wanted set (prefix -> which of vxwg's links carries it): [`RouteSync::set`]
//! adds what is new and deletes what went away, and [`RouteSync::reconcile`] (called about once a
//! second) compares the table and the rules with the kernel's and puts back whatever someone
//! deleted (`ip route del ... table 52`, `ip rule del ...`). Everything it added is removed when it
//! is dropped (the [`Applied`] records do that).

use std::collections::BTreeMap;

use anyhow::Context;
pub use vxwg::apply::Via;
use vxwg::dataplane::io::netlink::{Applied, Family, Netlink, NetlinkError, Rule};
use vxwg::dataplane::route::IpNet;

/// What a reconciliation or an update did to the kernel, for the log.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
    /// Rules that were missing and were put back.
    pub rules_restored: Vec<Rule>,
    /// What could not be done (tried again at the next reconciliation).
    pub failed: Vec<NetlinkError>,
}

/// The routes vxwg owns in its table, and the rules that send lookups to it.
pub struct RouteSync {
    table: u32,
    rules: Vec<Rule>,
    tunnel: Applied,
    pods: Option<Applied>,
    /// The approved set.
    want: BTreeMap<IpNet, Via>,
    /// What is in the kernel as far as we know (what `set` added and `reconcile` confirmed).
    have: BTreeMap<IpNet, Via>,
}

impl RouteSync {
    /// Routes through `tunnel_ifname` (and `pods_ifname` with the pod path) in `table`; `rules`
    /// are the rules that must exist for the table to be consulted.
    pub fn new(
        tunnel_ifname: &str,
        pods_ifname: Option<&str>,
        table: u32,
        rules: Vec<Rule>,
    ) -> anyhow::Result<RouteSync> {
        let open = |name: &str| -> anyhow::Result<Applied> {
            let mut nl = Netlink::open().context("opening a netlink socket")?;
            let index = nl.link_index(name).with_context(|| format!("finding interface {name}"))?;
            Ok(Applied::new(nl, index))
        };
        Ok(RouteSync {
            table,
            rules,
            tunnel: open(tunnel_ifname)?,
            pods: pods_ifname.map(open).transpose()?,
            want: BTreeMap::new(),
            have: BTreeMap::new(),
        })
    }

    /// The routing table.
    pub fn table(&self) -> u32 {
        self.table
    }

    /// The approved set as last given to [`RouteSync::set`].
    pub fn wanted(&self) -> &BTreeMap<IpNet, Via> {
        &self.want
    }

    /// Makes `want` the approved set: deletes the routes no longer in it (or moved to the other
    /// link), then adds the new ones. A failed step is reported and retried by `reconcile`.
    pub fn set(&mut self, want: BTreeMap<IpNet, Via>) -> SyncReport {
        let mut report = SyncReport::default();
        let gone: Vec<(IpNet, Via)> =
            self.have.iter().filter(|(net, via)| want.get(net) != Some(via)).map(|(n, v)| (*n, *v)).collect();
        let table = self.table;
        for (net, via) in gone {
            match self.link(via).map(|l| l.del_route(net, table)) {
                Some(Err(e)) => report.failed.push(e),
                _ => {
                    self.have.remove(&net);
                    report.removed.push(net);
                }
            }
        }
        self.want = want;
        let new: Vec<(IpNet, Via)> =
            self.want.iter().filter(|(net, _)| !self.have.contains_key(net)).map(|(n, v)| (*n, *v)).collect();
        self.add(new, &mut report);
        report
    }

    /// Compares the table and the rules with the kernel's and puts back what is missing.
    pub fn reconcile(&mut self) -> SyncReport {
        let mut report = SyncReport::default();
        let mut present = BTreeMap::new();
        for via in [Via::Tunnel, Via::Pods] {
            let table = self.table;
            let Some(link) = self.link(via) else { continue };
            let index = link.index();
            match link.netlink().routes(index, table) {
                Ok(routes) => present.extend(routes.into_iter().map(|n| (n, via))),
                Err(e) => {
                    report.failed.push(e);
                    return report;
                }
            }
        }
        // What the kernel lost (deleted by hand, or with a link that went down) is added again.
        let missing: Vec<(IpNet, Via)> =
            self.want.iter().filter(|(net, via)| present.get(net) != Some(via)).map(|(n, v)| (*n, *v)).collect();
        for (net, _) in &missing {
            self.have.remove(net);
        }
        // Routes we once added that are no longer wanted (a failed delete) go now.
        let stale: Vec<(IpNet, Via)> =
            self.have.iter().filter(|(net, via)| self.want.get(net) != Some(via)).map(|(n, v)| (*n, *v)).collect();
        let table = self.table;
        for (net, via) in stale {
            if let Some(Err(e)) = self.link(via).map(|l| l.del_route(net, table)) {
                report.failed.push(e);
            } else {
                self.have.remove(&net);
                report.removed.push(net);
            }
        }
        self.add(missing, &mut report);
        for family in [Family::V4, Family::V6] {
            let wanted: Vec<Rule> = self.rules.iter().filter(|r| r.family == family).copied().collect();
            if wanted.is_empty() {
                continue;
            }
            let present = match self.tunnel.netlink().rules(family) {
                Ok(r) => r,
                Err(e) => {
                    report.failed.push(e);
                    continue;
                }
            };
            for rule in wanted.into_iter().filter(|r| !present.contains(r)) {
                match self.tunnel.add_rule(rule) {
                    Ok(_) => report.rules_restored.push(rule),
                    Err(e) => report.failed.push(e),
                }
            }
        }
        report
    }

    fn add(&mut self, routes: Vec<(IpNet, Via)>, report: &mut SyncReport) {
        for (net, via) in routes {
            let table = self.table;
            match self.link(via).map(|l| l.add_route(net, table)) {
                Some(Ok(_)) => {
                    self.have.insert(net, via);
                    report.added.push(net);
                }
                Some(Err(e)) => report.failed.push(e),
                // The pod link is absent only without the pod path, where nothing asks for it.
                None => {}
            }
        }
    }

    fn link(&mut self, via: Via) -> Option<&mut Applied> {
        match via {
            Via::Tunnel => Some(&mut self.tunnel),
            Via::Pods => self.pods.as_mut(),
        }
    }
}
