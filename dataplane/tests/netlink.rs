//! `io::netlink` against the kernel, inside throwaway network namespaces (root only; CI runs as
//! root). Outside CI a non-root run skips with a note.
//!
//! Each test makes its own namespace (`vxwgnl-<pid>-<n>`) with veth links made by `ip`, and makes
//! its netlink calls from a thread that has entered that namespace (checked before any socket is
//! opened), so the root namespace's links, routes and rules are never touched. `ip -n NS ...` is
//! the independent witness of what the calls did. The namespace is deleted on drop, panics too.

use vxwg_dataplane::io::netlink::{
    Applied, Family, InterfaceAddress, Netlink, NetlinkError, Op, Outcome, Rule, BYPASS_MARK, DEFAULT_RULE_PRIORITY,
    DEFAULT_TABLE,
};
use vxwg_dataplane::route::IpNet;

mod common;
use common::{require, Netns};

/// A veth link named `name`, down, whose peer (`{name}p`) is up so that `name` has carrier once
/// it is up. (Veth rather than dummy: not every kernel has the dummy driver.)
fn add_veth(ns: &Netns, name: &str) {
    ns.ip(&format!("link add {name} type veth peer name {name}p"));
    ns.ip(&format!("link set {name}p up"));
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn addr(s: &str) -> InterfaceAddress {
    s.parse().unwrap()
}

/// The lines of `ip [-6] route show table all` that are in table 52.
fn table_52_routes(ns: &Netns, family: &str) -> Vec<String> {
    ns.ip(&format!("{family} route show table all"))
        .lines()
        .filter(|l| l.contains(" table 52"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn configures_a_link_and_leaves_nothing_behind() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgnl");
    add_veth(&ns, "vxd0");
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let index = nl.link_index("vxd0").unwrap();
        assert_eq!(nl.link_mtu(index).unwrap(), 1500);
        assert!(!nl.link_is_up(index).unwrap());

        let mut applied = Applied::new(nl, index);
        applied.set_mtu(1380).unwrap();
        assert_eq!(applied.add_address(addr("100.64.0.1/24")).unwrap(), Outcome::Changed);
        assert_eq!(applied.add_address(addr("fd7a:115c:a1e0::1/48")).unwrap(), Outcome::Changed);
        applied.set_link_up(true).unwrap();
        let routes = [net("10.99.0.0/16"), net("100.64.1.7/32"), net("fd7a:115c:a1e0:ab12::/64")];
        for r in routes {
            assert_eq!(applied.add_route(r, DEFAULT_TABLE).unwrap(), Outcome::Changed);
        }
        for family in [Family::V4, Family::V6] {
            let rule = Rule::new(family, DEFAULT_RULE_PRIORITY, DEFAULT_TABLE);
            assert_eq!(applied.add_rule(rule).unwrap(), Outcome::Changed);
        }

        // What `ip` sees.
        let link = ns.ip("link show vxd0");
        assert!(link.contains("mtu 1380"), "{link}");
        assert!(link.contains(",UP,") || link.contains(",UP>"), "{link}");
        let v4 = ns.ip("-4 addr show dev vxd0");
        assert!(v4.contains("inet 100.64.0.1/24 "), "{v4}");
        let v6 = ns.ip("-6 addr show dev vxd0");
        assert!(v6.contains("inet6 fd7a:115c:a1e0::1/48 "), "{v6}");
        assert_eq!(
            table_52_routes(&ns, "-4"),
            [
                "10.99.0.0/16 dev vxd0 table 52 proto static scope link",
                "100.64.1.7 dev vxd0 table 52 proto static scope link"
            ]
        );
        let v6_routes = table_52_routes(&ns, "-6");
        assert_eq!(v6_routes.len(), 1, "{v6_routes:?}");
        assert!(v6_routes[0].starts_with("fd7a:115c:a1e0:ab12::/64 dev vxd0 table 52 proto static"), "{v6_routes:?}");
        let main4 = ns.ip("-4 route show table main");
        assert!(!main4.contains("10.99.") && !main4.contains("100.64.1.7"), "overlay routes leaked into main: {main4}");
        assert!(!ns.ip("-6 route show table main").contains("ab12"), "overlay route leaked into main");
        assert!(ns.ip("-4 rule show").contains("5270:\tfrom all lookup 52"), "{}", ns.ip("-4 rule show"));
        assert!(ns.ip("-6 rule show").contains("5270:\tfrom all lookup 52"), "{}", ns.ip("-6 rule show"));
        // The rule works: lookups for an AllowedIP resolve in table 52.
        let get = ns.ip("route get 10.99.3.4");
        assert!(get.contains("dev vxd0 table 52"), "{get}");
        let get = ns.ip("route get fd7a:115c:a1e0:ab12::9");
        assert!(get.contains("dev vxd0 table 52"), "{get}");

        // What the API reads back.
        let nl = applied.netlink();
        let mut listed = nl.routes(index, DEFAULT_TABLE).unwrap();
        listed.sort();
        assert_eq!(listed, routes);
        assert_eq!(nl.routes(index, 254).unwrap().iter().filter(|n| routes.contains(n)).count(), 0);
        assert_eq!(nl.link_mtu(index).unwrap(), 1380);
        assert!(nl.link_is_up(index).unwrap());
        let addrs = nl.addresses(index).unwrap();
        assert!(addrs.contains(&addr("100.64.0.1/24")) && addrs.contains(&addr("fd7a:115c:a1e0::1/48")), "{addrs:?}");
        for family in [Family::V4, Family::V6] {
            let rules = nl.rules(family).unwrap();
            assert!(rules.contains(&Rule::new(family, 5270, 52)), "{rules:?}");
            // The kernel's own rules come back too, so the parse is exercised on them.
            assert!(rules.contains(&Rule::new(family, 32766, 254)), "{rules:?}");
        }

        drop(applied);

        let link = ns.ip("link show vxd0");
        assert!(link.contains("mtu 1500") && !link.contains(",UP"), "link not restored: {link}");
        let addrs = ns.ip("addr show dev vxd0");
        assert!(!addrs.contains("100.64.0.1") && !addrs.contains("fd7a:"), "addresses left behind: {addrs}");
        assert!(!ns.ip("-4 route show table all").contains("100.64.0.0/24"), "prefix route left behind");
        assert_eq!(table_52_routes(&ns, "-4"), Vec::<String>::new());
        assert_eq!(table_52_routes(&ns, "-6"), Vec::<String>::new());
        for family in ["-4", "-6"] {
            let rules = ns.ip(&format!("{family} rule show"));
            assert!(!rules.contains("5270"), "rule left behind: {rules}");
        }
    });
}

#[test]
fn adds_and_deletes_are_idempotent() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgnl");
    add_veth(&ns, "vxd0");
    ns.ip("link set vxd0 up");
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let index = nl.link_index("vxd0").unwrap();
        let (a, r) = (addr("10.50.0.1/16"), net("10.60.0.0/16"));
        let rule = Rule::new(Family::V6, 5270, 52);
        assert_eq!(nl.add_address(index, a).unwrap(), Outcome::Changed);
        assert_eq!(nl.add_address(index, a).unwrap(), Outcome::Unchanged);
        assert_eq!(nl.add_route(index, r, 52).unwrap(), Outcome::Changed);
        assert_eq!(nl.add_route(index, r, 52).unwrap(), Outcome::Unchanged);
        assert_eq!(nl.add_rule(rule).unwrap(), Outcome::Changed);
        assert_eq!(nl.add_rule(rule).unwrap(), Outcome::Unchanged);
        assert_eq!(ns.ip("-6 rule show").matches("5270:").count(), 1, "duplicate rule");

        assert_eq!(nl.del_rule(rule).unwrap(), Outcome::Changed);
        assert_eq!(nl.del_rule(rule).unwrap(), Outcome::Unchanged);
        assert_eq!(nl.del_route(index, r, 52).unwrap(), Outcome::Changed);
        assert_eq!(nl.del_route(index, r, 52).unwrap(), Outcome::Unchanged);
        assert_eq!(nl.del_address(index, a).unwrap(), Outcome::Changed);
        assert_eq!(nl.del_address(index, a).unwrap(), Outcome::Unchanged);
        assert!(!ns.ip("addr show dev vxd0").contains("10.50.0.1"));

        // Leftovers of a crashed run are claimed: added again (Unchanged), they still go on drop.
        ns.ip("route add 10.77.0.0/16 dev vxd0 table 52");
        ns.ip("rule add pref 5270 table 52");
        let mut applied = Applied::new(nl, index);
        assert_eq!(applied.add_route(net("10.77.0.0/16"), 52).unwrap(), Outcome::Unchanged);
        assert_eq!(applied.add_rule(Rule::new(Family::V4, 5270, 52)).unwrap(), Outcome::Unchanged);
        // A route deleted through Applied is forgotten, so undo does not trip over it.
        applied.add_route(net("10.78.0.0/16"), 52).unwrap();
        assert_eq!(applied.del_route(net("10.78.0.0/16"), 52).unwrap(), Outcome::Changed);
        assert!(applied.undo().is_empty());
        assert_eq!(table_52_routes(&ns, "-4"), Vec::<String>::new());
        assert!(!ns.ip("rule show").contains("5270"));
    });
}

#[test]
fn routes_lists_only_this_link_and_table() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgnl");
    for link in ["vxd0", "vxd1"] {
        add_veth(&ns, link);
        ns.ip(&format!("link set {link} up"));
    }
    ns.ip("route add 10.5.0.0/16 dev vxd0");
    ns.ip("route add 10.6.0.0/16 dev vxd1 table 52");
    ns.ip("route add 10.7.0.0/16 dev vxd0 table 53");
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let (i0, i1) = (nl.link_index("vxd0").unwrap(), nl.link_index("vxd1").unwrap());
        let ours = [net("0.0.0.0/0"), net("10.8.0.0/16"), net("::/0"), net("fd00::/8")];
        for r in ours {
            nl.add_route(i0, r, 52).unwrap();
        }
        // A table number above 255 travels in RTA_TABLE only.
        nl.add_route(i0, net("10.9.0.0/16"), 1000).unwrap();

        let mut listed = nl.routes(i0, 52).unwrap();
        listed.sort();
        assert_eq!(listed, ours);
        assert_eq!(nl.routes(i1, 52).unwrap(), [net("10.6.0.0/16")]);
        assert_eq!(nl.routes(i0, 53).unwrap(), [net("10.7.0.0/16")]);
        assert_eq!(nl.routes(i0, 1000).unwrap(), [net("10.9.0.0/16")]);
        assert!(ns.ip("route show table 1000").contains("10.9.0.0/16 dev vxd0"));
        assert!(nl.routes(i0, 254).unwrap().contains(&net("10.5.0.0/16")));
        assert!(!nl.routes(i0, 254).unwrap().contains(&net("10.8.0.0/16")));
    });
}

#[test]
fn not_fwmark_rule_lets_marked_packets_bypass_the_table() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgnl");
    for link in ["vxd0", "vxd1"] {
        add_veth(&ns, link);
        ns.ip(&format!("link set {link} up"));
    }
    // The underlay (main) reaches 10.0.0.0/8 via vxd1; the overlay claims 10.99.0.0/16 via vxd0.
    ns.ip("route add 10.0.0.0/8 dev vxd1");
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let index = nl.link_index("vxd0").unwrap();
        let mut applied = Applied::new(nl, index);
        applied.add_route(net("10.99.0.0/16"), DEFAULT_TABLE).unwrap();
        for family in [Family::V4, Family::V6] {
            applied
                .add_rule(Rule::new(family, DEFAULT_RULE_PRIORITY, DEFAULT_TABLE).with_not_fwmark(BYPASS_MARK))
                .unwrap();
        }
        for family in ["-4", "-6"] {
            let rules = ns.ip(&format!("{family} rule show"));
            assert!(rules.contains("5270:\tnot from all fwmark 0x80000/0xff0000 lookup 52"), "{rules}");
        }
        for family in [Family::V4, Family::V6] {
            let rules = applied.netlink().rules(family).unwrap();
            let want = Rule::new(family, 5270, 52).with_not_fwmark(BYPASS_MARK);
            assert!(rules.contains(&want), "{rules:?}");
        }
        let unmarked = ns.ip("route get 10.99.0.1");
        assert!(unmarked.contains("dev vxd0 table 52"), "{unmarked}");
        // The tunnel's own datagrams (marked) to an endpoint inside an AllowedIP go via main.
        let marked = ns.ip("route get 10.99.0.1 mark 0x80000");
        assert!(marked.contains("dev vxd1") && !marked.contains("table 52"), "{marked}");
        let other_bits = ns.ip("route get 10.99.0.1 mark 0x1");
        assert!(other_bits.contains("dev vxd0 table 52"), "{other_bits}");

        drop(applied);
        assert!(!ns.ip("-4 rule show").contains("5270"));
        assert!(!ns.ip("-6 rule show").contains("5270"));
    });
}

#[test]
fn errors_name_what_failed() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgnl");
    add_veth(&ns, "vxd0");
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();

        let e = nl.link_index("nosuch0").unwrap_err();
        assert!(
            matches!(e, NetlinkError::Kernel { op: Op::LinkIndex(ref n), errno: libc::ENODEV, .. } if n == "nosuch0"),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("look up link \"nosuch0\": "), "{e}");
        assert!(matches!(nl.link_index("a-name-much-too-long"), Err(NetlinkError::InvalidName(_))));

        let e = nl.add_route(999_999, net("10.1.0.0/16"), 52).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e:?}");
        assert_eq!(e.op(), Some(&Op::AddRoute { index: 999_999, dst: net("10.1.0.0/16"), table: 52 }));
        let text = e.to_string();
        assert!(text.starts_with("add route 10.1.0.0/16 dev #999999 table 52: "), "{text}");
        assert!(text.contains(&format!("os error {}", libc::ENODEV)), "{text}");

        let e = nl.add_address(999_999, addr("10.2.0.1/24")).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e:?}");
        assert!(e.to_string().starts_with("add address 10.2.0.1/24 to link #999999: "), "{e}");

        let e = nl.set_mtu(999_999, 1400).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e:?}");

        // A down link refuses IPv4 routes, and the kernel says why (extended ack).
        let index = nl.link_index("vxd0").unwrap();
        let e = nl.add_route(index, net("10.3.0.0/16"), 52).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENETDOWN), "{e:?}");
        let NetlinkError::Kernel { message, .. } = &e else { panic!("{e:?}") };
        assert!(message.is_some(), "no extended ack text: {e}");
        eprintln!("example error: {e}");

        // Nothing half-applied.
        assert!(!ns.ip("-4 route show table all").contains("10.3.0.0"));
    });
}

#[test]
fn undo_tolerates_a_vanished_link() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgnl");
    add_veth(&ns, "vxd0");
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let index = nl.link_index("vxd0").unwrap();
        let mut applied = Applied::new(nl, index);
        applied.set_mtu(1300).unwrap();
        applied.set_link_up(true).unwrap();
        applied.add_address(addr("10.40.0.1/24")).unwrap();
        applied.add_route(net("10.41.0.0/16"), 52).unwrap();
        applied.add_rule(Rule::new(Family::V4, 5270, 52)).unwrap();
        // The TUN's case: closing it deletes the link, and its addresses and routes with it.
        ns.ip("link del vxd0");
        let failures: Vec<String> = applied.undo().iter().map(|e| e.to_string()).collect();
        assert!(failures.is_empty(), "{failures:?}");
        assert!(!ns.ip("rule show").contains("5270"), "rule left behind");
    });
}

#[test]
fn namespace_is_deleted_even_on_panic() {
    if !require(&["ip"]) {
        return;
    }
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new("vxwgnl");
        *name.lock().unwrap() = ns.name.clone();
        ns.run(|| panic!("deliberate panic inside the namespace"));
    }));
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty());
    let list = common::run("ip", &["netns", "list"]);
    assert!(!list.lines().any(|l| l.split_whitespace().next() == Some(&name)), "{name} survived: {list}");
}
