//! The interface side of `vxwg up --config`: addresses, MTU, link state, routes for peers'
//! AllowedIPs in vxwg's table and the rule that consults it, all through netlink. Everything is
//! recorded and undone when [`InterfaceSetup`] is dropped (on exit, or when a step fails half-way).

use anyhow::Context;
use vxwg::dataplane::io::netlink::{Applied, Family, FwMark, Netlink, Outcome, Rule};
use vxwg::dataplane::route::IpNet;

use crate::config::Config;

/// Mask of the mark bits vxwg owns by default (tailscaled uses the same layout).
pub const DEFAULT_FWMARK_MASK: u32 = 0x00ff_0000;

/// What `--config` set up on the interface; dropping it removes it again.
pub struct InterfaceSetup {
    /// The pod TUN's routes and state (with `[vxlan]`); undone first.
    _pod_undo_on_drop: Option<Applied>,
    /// Held for its `Drop`, which removes what was added.
    _undo_on_drop: Applied,
}

impl InterfaceSetup {
    /// Configures `ifname` from `config`, routing `prefixes` (the peers' AllowedIPs) through it;
    /// with `[vxlan]`, also the pod TUN `pod_ifname`: its MTU, link up, and the peers' pod CIDRs
    /// routed into it, in the same table as the AllowedIPs (so the same rule covers them).
    pub fn apply(
        ifname: &str,
        config: &Config,
        prefixes: &[IpNet],
        pod_ifname: Option<&str>,
    ) -> anyhow::Result<InterfaceSetup> {
        let mut netlink = Netlink::open().context("opening a netlink socket")?;
        let index = netlink.link_index(ifname).with_context(|| format!("finding interface {ifname}"))?;
        let mut applied = Applied::new(netlink, index);
        applied.set_mtu(config.mtu).with_context(|| format!("mtu = {}", config.mtu))?;
        for a in &config.addresses {
            applied.add_address(*a).with_context(|| format!("address {a}"))?;
        }
        applied.set_link_up(true).context("bringing the interface up")?;
        let routing = config.routing;
        if routing.enabled {
            for p in prefixes {
                let outcome = applied
                    .add_route(*p, routing.table)
                    .with_context(|| format!("route {p} in table {}", routing.table))?;
                refuse_foreign_route(&mut applied, outcome, *p, routing.table)?;
            }
            for rule in rules(config) {
                applied.add_rule(rule).with_context(|| format!("{rule}"))?;
            }
        }
        let pod = match (&config.vxlan, pod_ifname) {
            (Some(vxlan), Some(pod_ifname)) => {
                let mut netlink = Netlink::open().context("opening a netlink socket")?;
                let index =
                    netlink.link_index(pod_ifname).with_context(|| format!("finding pod interface {pod_ifname}"))?;
                let mut pod = Applied::new(netlink, index);
                pod.set_mtu(vxlan.pod_mtu).with_context(|| format!("vxlan.pod_mtu = {}", vxlan.pod_mtu))?;
                pod.set_link_up(true).with_context(|| format!("bringing {pod_ifname} up"))?;
                if routing.enabled {
                    for r in &vxlan.routes {
                        let outcome = pod.add_route(r.net, routing.table).with_context(|| {
                            format!("pod route {} via {pod_ifname} in table {}", r.net, routing.table)
                        })?;
                        refuse_foreign_route(&mut pod, outcome, r.net, routing.table)?;
                    }
                }
                Some(pod)
            }
            _ => None,
        };
        Ok(InterfaceSetup { _pod_undo_on_drop: pod, _undo_on_drop: applied })
    }
}

/// A route the kernel already had (`outcome` Unchanged: EEXIST) is fine only if it goes through
/// our link: a route of someone else's to the same prefix in the table (another interface, a
/// `throw` or `unreachable` route, e.g. tailscaled's, which uses table 52 too) would take that
/// prefix's traffic while we report success. It is not ours, so it is neither used nor removed.
fn refuse_foreign_route(applied: &mut Applied, outcome: Outcome, net: IpNet, table: u32) -> anyhow::Result<()> {
    if outcome == Outcome::Unchanged {
        let index = applied.index();
        let ours = applied.netlink().routes(index, table).with_context(|| format!("route {net} in table {table}"))?;
        if !ours.contains(&net) {
            anyhow::bail!(
                "route {net} in table {table}: the table already has a route to {net} that is not through this \
                 interface (another interface's, or a throw/unreachable route); remove it or set [routing] table"
            );
        }
    }
    Ok(())
}

/// The rules that send lookups to vxwg's table (one per family). The tunnel's own UDP carries the
/// mark and skips the table, so a peer that owns a default route can never swallow the packets
/// that reach it.
pub fn rules(config: &Config) -> Vec<Rule> {
    let routing = config.routing;
    let mark = config.fwmark();
    let mask = if config.fwmark_is_default() { DEFAULT_FWMARK_MASK } else { u32::MAX };
    [Family::V4, Family::V6]
        .into_iter()
        .map(|family| Rule::new(family, routing.rule_priority, routing.table).with_not_fwmark(FwMark { mark, mask }))
        .collect()
}
