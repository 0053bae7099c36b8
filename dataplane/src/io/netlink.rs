//! Interface configuration over rtnetlink (a `NETLINK_ROUTE` socket), synchronously: link state
//! and MTU, addresses, routes in a dedicated table and the policy rules that send lookups to it —
//! what `ip link`/`addr`/`route`/`rule` do, without running `ip`.
//!
//! [`Netlink`] is one socket and one request at a time: each call sends a message and reads until
//! the kernel's acknowledgement (or the end of a dump), so a failure is reported by the call that
//! caused it, as a [`NetlinkError`] naming the operation and the kernel's errno (and its extended
//! ack text, when it gives one). [`Applied`] records what it configured and undoes it on drop.
//!
//! # Routing model (tailscaled's)
//! Peers' AllowedIPs become routes via the TUN in a table of their own ([`DEFAULT_TABLE`], 52),
//! never in `main`, and one rule per family at [`DEFAULT_RULE_PRIORITY`] (5270, ahead of `main`
//! at 32766) sends every lookup to that table first; what it does not match falls through to
//! `main`. Removing the rules takes the whole overlay out of the routing decision at once.
//!
//! # Routing loops, and the fwmark rule
//! A plain rule (`from all lookup 52`) also applies to the tunnel's own encrypted UDP datagrams.
//! They stay out of the tunnel only while no peer's endpoint lies inside a route in table 52. That
//! holds for a mesh of overlay addresses whose underlay uses other ranges, but **not in general**:
//! a peer with `0.0.0.0/0` or `::/0` (an exit node), or one announcing a subnet that contains
//! another peer's endpoint, makes the kernel route the datagrams for that endpoint into the TUN —
//! a loop. The general fix is tailscaled's and wg-quick's: mark the tunnel socket's packets
//! (`SO_MARK`, [`BYPASS_MARK`]) and use `not fwmark 0x80000/0xff0000 lookup 52`
//! ([`Rule::not_fwmark`]), so marked packets skip table 52 and take `main`. The rule side is here;
//! the UDP socket must set `SO_MARK` for it to have an effect.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use crate::route::{IpNet, IpNetError};

/// The routing table for peers' AllowedIPs (tailscaled's).
pub const DEFAULT_TABLE: u32 = 52;

/// The priority of the rule that sends lookups to [`DEFAULT_TABLE`] (tailscaled's).
pub const DEFAULT_RULE_PRIORITY: u32 = 5270;

/// The mark for the tunnel's own packets that must bypass the overlay table (tailscaled's
/// `0x80000/0xff0000`); see the module docs.
pub const BYPASS_MARK: FwMark = FwMark { mark: 0x80000, mask: 0xff0000 };

/// How often a dump the kernel flagged as interrupted (`NLM_F_DUMP_INTR`: the table changed while
/// it was being read) is retried before giving up.
const DUMP_TRIES: usize = 4;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn to_netlink(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An interface address: a host address and the length of its subnet's prefix (`100.64.0.1/24`).
/// Unlike [`IpNet`], the host bits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceAddress {
    addr: IpAddr,
    prefix_len: u8,
}

impl InterfaceAddress {
    /// Fails if `prefix_len` exceeds the family's width.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, IpNetError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(IpNetError::PrefixTooLong { len: prefix_len, max });
        }
        Ok(Self { addr, prefix_len })
    }

    /// The host address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The subnet's prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The subnet (`100.64.0.0/24` for `100.64.0.1/24`).
    pub fn network(&self) -> IpNet {
        IpNet::new(self.addr, self.prefix_len).expect("prefix length checked at construction")
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }
}

impl FromStr for InterfaceAddress {
    type Err = IpNetError;

    /// `addr/len`, or a bare address meaning a single host (/32 or /128).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = crate::route::parse_prefix(s)?;
        Self::new(addr, len)
    }
}

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A firewall mark and the mask applied before comparing (`fwmark MARK/MASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FwMark {
    pub mark: u32,
    pub mask: u32,
}

/// A policy routing rule of the one shape vxwg uses: `[not fwmark M/K] lookup TABLE` at a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
    /// `Some(m)`: match only packets whose mark, masked, differs from `m.mark`
    /// (`not fwmark M/K`); `None`: match all packets.
    pub not_fwmark: Option<FwMark>,
}

impl Rule {
    /// `from all lookup table` at `priority`.
    pub fn new(family: Family, priority: u32, table: u32) -> Rule {
        Rule { family, priority, table, not_fwmark: None }
    }

    /// The same rule, skipped by packets marked with `mark` (see the module docs).
    pub fn with_not_fwmark(self, mark: FwMark) -> Rule {
        Rule { not_fwmark: Some(mark), ..self }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule pref {}", self.family, self.priority)?;
        if let Some(m) = self.not_fwmark {
            write!(f, " not fwmark {:#x}/{:#x}", m.mark, m.mask)?;
        }
        write!(f, " lookup {}", self.table)
    }
}

/// Whether a request changed anything: adding what exists (EEXIST) or deleting what does not is
/// not an error, just [`Outcome::Unchanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Changed,
    Unchanged,
}

/// The operation a [`NetlinkError`] comes from (links are named by index, `#7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Open,
    LinkIndex(String),
    GetLink(u32),
    SetLinkUp { index: u32, up: bool },
    SetMtu { index: u32, mtu: u32 },
    SetGsoMaxSegs { index: u32, segs: u32 },
    SetTxQueueLen { index: u32, len: u32 },
    AddAddress { index: u32, addr: InterfaceAddress },
    DelAddress { index: u32, addr: InterfaceAddress },
    ListAddresses(u32),
    AddRoute { index: u32, dst: IpNet, table: u32 },
    DelRoute { index: u32, dst: IpNet, table: u32 },
    ListRoutes { index: u32, table: u32 },
    AddRule(Rule),
    DelRule(Rule),
    ListRules(Family),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Open => write!(f, "open a NETLINK_ROUTE socket"),
            Op::LinkIndex(name) => write!(f, "look up link {name:?}"),
            Op::GetLink(i) => write!(f, "read link #{i}"),
            Op::SetLinkUp { index, up } => write!(f, "set link #{index} {}", if *up { "up" } else { "down" }),
            Op::SetMtu { index, mtu } => write!(f, "set MTU {mtu} on link #{index}"),
            Op::SetGsoMaxSegs { index, segs } => write!(f, "set gso_max_segs {segs} on link #{index}"),
            Op::SetTxQueueLen { index, len } => write!(f, "set txqueuelen {len} on link #{index}"),
            Op::AddAddress { index, addr } => write!(f, "add address {addr} to link #{index}"),
            Op::DelAddress { index, addr } => write!(f, "delete address {addr} from link #{index}"),
            Op::ListAddresses(i) => write!(f, "list addresses of link #{i}"),
            Op::AddRoute { index, dst, table } => write!(f, "add route {dst} dev #{index} table {table}"),
            Op::DelRoute { index, dst, table } => write!(f, "delete route {dst} dev #{index} table {table}"),
            Op::ListRoutes { index, table } => write!(f, "list routes of link #{index} in table {table}"),
            Op::AddRule(r) => write!(f, "add {r}"),
            Op::DelRule(r) => write!(f, "delete {r}"),
            Op::ListRules(family) => write!(f, "list {family} rules"),
        }
    }
}

/// Why a netlink call failed; every variant but `InvalidName` names the operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused the request: `errno` is positive (`libc::ENODEV`, ...), `message` the
    /// extended ack text when the kernel gave one.
    #[error("{op}: {}{}", io::Error::from_raw_os_error(*errno), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel { op: Op, errno: i32, message: Option<String> },
    /// Sending to or receiving from the socket failed.
    #[error("{op}: netlink socket: {source}")]
    Io {
        op: Op,
        #[source]
        source: io::Error,
    },
    /// The kernel's reply could not be decoded or lacked what was asked for.
    #[error("{op}: unexpected reply: {detail}")]
    Reply { op: Op, detail: String },
    #[error("interface name {0:?} must be 1-15 bytes without '/', whitespace or NUL")]
    InvalidName(String),
}

impl NetlinkError {
    /// The kernel's errno, for `Kernel` and OS-level `Io` errors.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The operation that failed.
    pub fn op(&self) -> Option<&Op> {
        match self {
            NetlinkError::Kernel { op, .. } | NetlinkError::Io { op, .. } | NetlinkError::Reply { op, .. } => Some(op),
            NetlinkError::InvalidName(_) => None,
        }
    }
}

/// A failure before it is attached to its operation.
#[derive(Debug)]
enum Failure {
    Kernel(i32, Option<String>),
    Io(io::Error),
    Reply(String),
}

impl Failure {
    fn at(self, op: Op) -> NetlinkError {
        match self {
            Failure::Kernel(errno, message) => NetlinkError::Kernel { op, errno, message },
            Failure::Io(source) => NetlinkError::Io { op, source },
            Failure::Reply(detail) => NetlinkError::Reply { op, detail },
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// `Ok(Unchanged)` for the one errno that means "already so", else the error.
fn tolerate(r: Result<(), Failure>, benign: i32, op: impl FnOnce() -> Op) -> Result<Outcome, NetlinkError> {
    match r {
        Ok(()) => Ok(Outcome::Changed),
        Err(Failure::Kernel(errno, _)) if errno == benign => Ok(Outcome::Unchanged),
        Err(e) => Err(e.at(op())),
    }
}

/// One `NETLINK_ROUTE` socket in the namespace of the thread that opened it. Calls block until
/// the kernel answers (it always does, at once). Needs CAP_NET_ADMIN for changes.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens and binds a socket. Extended acks (the kernel's error text) are asked for where the
    /// kernel supports them.
    pub fn open() -> Result<Self, NetlinkError> {
        let open = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        };
        let socket = open().map_err(|source| NetlinkError::Io { op: Op::Open, source })?;
        // Both optional (Linux 4.2 / 4.12): without them errors lack the kernel's text.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Self { socket, seq: 0 })
    }

    /// The index of the link called `name`; `Kernel { errno: ENODEV, .. }` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        if name.is_empty()
            || name.len() >= libc::IFNAMSIZ
            || name.contains(|c: char| c == '/' || c == '\0' || c.is_whitespace())
        {
            return Err(NetlinkError::InvalidName(name.to_string()));
        }
        let op = || Op::LinkIndex(name.to_string());
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = self.request(RouteNetlinkMessage::GetLink(msg), 0).map_err(|e| e.at(op()))?;
        match replies.into_iter().next() {
            Some(RouteNetlinkMessage::NewLink(link)) => Ok(link.header.index),
            _ => Err(Failure::Reply("no link in the reply".into()).at(op())),
        }
    }

    fn link(&mut self, index: u32) -> Result<LinkMessage, NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = self.request(RouteNetlinkMessage::GetLink(msg), 0).map_err(|e| e.at(Op::GetLink(index)))?;
        match replies.into_iter().next() {
            Some(RouteNetlinkMessage::NewLink(link)) => Ok(link),
            _ => Err(Failure::Reply("no link in the reply".into()).at(Op::GetLink(index))),
        }
    }

    /// Whether the link is administratively up (`IFF_UP`).
    pub fn link_is_up(&mut self, index: u32) -> Result<bool, NetlinkError> {
        Ok(self.link(index)?.header.flags.contains(LinkFlags::Up))
    }

    /// The link's MTU.
    pub fn link_mtu(&mut self, index: u32) -> Result<u32, NetlinkError> {
        let link = self.link(index)?;
        link.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .ok_or_else(|| Failure::Reply("no IFLA_MTU".into()).at(Op::GetLink(index)))
    }

    /// Sets the link administratively up or down (`ip link set up|down`).
    pub fn set_link_up(&mut self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = if up { LinkFlags::Up } else { LinkFlags::empty() };
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::NewLink(msg), 0).map_err(|e| e.at(Op::SetLinkUp { index, up }))
    }

    /// Sets the link's MTU (`ip link set mtu`).
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.ack(RouteNetlinkMessage::NewLink(msg), 0).map_err(|e| e.at(Op::SetMtu { index, mtu }))
    }

    /// Caps how many segments one GSO packet handed to the link's driver may carry (`ip link set
    /// gso_max_segs`): for a TUN device, how many pieces vxwg may have to cut a super-packet into.
    pub fn set_gso_max_segs(&mut self, index: u32, segs: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::GsoMaxSegs(segs));
        self.ack(RouteNetlinkMessage::NewLink(msg), 0).map_err(|e| e.at(Op::SetGsoMaxSegs { index, segs }))
    }

    /// Sets the link's transmit queue length (`ip link set txqueuelen`): for a TUN device, how
    /// many packets the kernel holds for the daemon before it drops.
    pub fn set_txqueuelen(&mut self, index: u32, len: u32) -> Result<(), NetlinkError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::TxQueueLen(len));
        self.ack(RouteNetlinkMessage::NewLink(msg), 0).map_err(|e| e.at(Op::SetTxQueueLen { index, len }))
    }

    /// Adds an address to the link (`ip addr add`); `Unchanged` if it is there already. The kernel
    /// adds the subnet's route to `main`, as for `ip addr add`.
    pub fn add_address(&mut self, index: u32, addr: InterfaceAddress) -> Result<Outcome, NetlinkError> {
        let r = self.ack(RouteNetlinkMessage::NewAddress(address_message(index, addr)), NLM_F_CREATE | NLM_F_EXCL);
        tolerate(r, libc::EEXIST, || Op::AddAddress { index, addr })
    }

    /// Removes an address from the link; `Unchanged` if it was not there.
    pub fn del_address(&mut self, index: u32, addr: InterfaceAddress) -> Result<Outcome, NetlinkError> {
        let r = self.ack(RouteNetlinkMessage::DelAddress(address_message(index, addr)), 0);
        tolerate(r, libc::EADDRNOTAVAIL, || Op::DelAddress { index, addr })
    }

    /// The link's addresses, both families, including those the kernel added (IPv6 link-local).
    pub fn addresses(&mut self, index: u32) -> Result<Vec<InterfaceAddress>, NetlinkError> {
        let op = || Op::ListAddresses(index);
        let replies = self.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default())).map_err(|e| e.at(op()))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else { continue };
            if msg.header.index != index {
                continue;
            }
            // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links
            // that have one, else the same.
            let (mut local, mut address) = (None, None);
            for a in &msg.attributes {
                match a {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                let addr = InterfaceAddress::new(ip, msg.header.prefix_len)
                    .map_err(|e| Failure::Reply(format!("address {ip}: {e}")).at(op()))?;
                out.push(addr);
            }
        }
        Ok(out)
    }

    /// Adds a route to `dst` through the link in `table` (`ip route add DST dev LINK table T`);
    /// `Unchanged` if it exists. The link must be up for IPv4 routes (else `ENETDOWN`).
    pub fn add_route(&mut self, index: u32, dst: IpNet, table: u32) -> Result<Outcome, NetlinkError> {
        let r =
            self.ack(RouteNetlinkMessage::NewRoute(route_message(index, dst, table, true)), NLM_F_CREATE | NLM_F_EXCL);
        tolerate(r, libc::EEXIST, || Op::AddRoute { index, dst, table })
    }

    /// Removes the route to `dst` through the link in `table`, whatever its protocol (so also one
    /// added by hand or by an earlier run); `Unchanged` if there was none (the kernel's ESRCH).
    pub fn del_route(&mut self, index: u32, dst: IpNet, table: u32) -> Result<Outcome, NetlinkError> {
        let r = self.ack(RouteNetlinkMessage::DelRoute(route_message(index, dst, table, false)), 0);
        tolerate(r, libc::ESRCH, || Op::DelRoute { index, dst, table })
    }

    /// The destinations of the unicast routes through the link in `table`, both families, in the
    /// kernel's order. For reconciliation: a whole dump is read and filtered here.
    pub fn routes(&mut self, index: u32, table: u32) -> Result<Vec<IpNet>, NetlinkError> {
        let op = || Op::ListRoutes { index, table };
        let replies = self.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default())).map_err(|e| e.at(op()))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(msg) = reply else { continue };
            if msg.header.kind != RouteType::Unicast {
                continue;
            }
            let (mut t, mut oif, mut dst) = (u32::from(msg.header.table), None, None);
            for a in &msg.attributes {
                match a {
                    RouteAttribute::Table(v) => t = *v,
                    RouteAttribute::Oif(v) => oif = Some(*v),
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(IpAddr::V4(*a)),
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = Some(IpAddr::V6(*a)),
                    _ => {}
                }
            }
            if t != table || oif != Some(index) {
                continue;
            }
            let addr = match (dst, msg.header.address_family) {
                (Some(a), _) => a,
                (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
                (None, AddressFamily::Inet6) => IpAddr::from([0u8; 16]),
                (None, _) => continue,
            };
            let net = IpNet::new(addr, msg.header.destination_prefix_length)
                .map_err(|e| Failure::Reply(format!("route to {addr}: {e}")).at(op()))?;
            out.push(net);
        }
        Ok(out)
    }

    /// Adds a policy rule (`ip rule add`); `Unchanged` if an identical one exists.
    pub fn add_rule(&mut self, rule: Rule) -> Result<Outcome, NetlinkError> {
        let r = self.ack(RouteNetlinkMessage::NewRule(rule_message(rule)), NLM_F_CREATE | NLM_F_EXCL);
        tolerate(r, libc::EEXIST, || Op::AddRule(rule))
    }

    /// Removes one rule matching `rule`'s priority, table and mark; `Unchanged` if there was none.
    /// The kernel treats what is left out as a wildcard: without `not_fwmark` this also removes a
    /// `not fwmark` rule at the same priority and table.
    pub fn del_rule(&mut self, rule: Rule) -> Result<Outcome, NetlinkError> {
        let r = self.ack(RouteNetlinkMessage::DelRule(rule_message(rule)), 0);
        tolerate(r, libc::ENOENT, || Op::DelRule(rule))
    }

    /// The family's rules that look up a table, in priority order, as [`Rule`]s: priority, table,
    /// and an inverted fwmark match. Other selectors (`from`, `iif`, a non-inverted fwmark, ...)
    /// are not represented, so such rules read as `from all`.
    pub fn rules(&mut self, family: Family) -> Result<Vec<Rule>, NetlinkError> {
        let mut msg = RuleMessage::default();
        msg.header.family = family.to_netlink();
        let replies = self.dump(RouteNetlinkMessage::GetRule(msg)).map_err(|e| e.at(Op::ListRules(family)))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRule(msg) = reply else { continue };
            if msg.header.family != family.to_netlink() || msg.header.action != RuleAction::ToTable {
                continue;
            }
            let mut rule = Rule::new(family, 0, u32::from(msg.header.table));
            let (mut mark, mut mask) = (None, None);
            for a in &msg.attributes {
                match a {
                    RuleAttribute::Priority(p) => rule.priority = *p,
                    RuleAttribute::Table(t) => rule.table = *t,
                    RuleAttribute::FwMark(m) => mark = Some(*m),
                    RuleAttribute::FwMask(m) => mask = Some(*m),
                    _ => {}
                }
            }
            if msg.header.flags.contains(RuleFlags::Invert) {
                if let Some(mark) = mark {
                    rule.not_fwmark = Some(FwMark { mark, mask: mask.unwrap_or(u32::MAX) });
                }
            }
            out.push(rule);
        }
        Ok(out)
    }

    /// Sends a request that the kernel acknowledges, and waits for the acknowledgement.
    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), Failure> {
        self.request(msg, flags).map(drop)
    }

    /// Sends a request with `NLM_F_ACK` and returns the replies that came before the
    /// acknowledgement (one for a `GET` of a single object, none for a change).
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.receive(seq).map(|(replies, _)| replies)
    }

    /// Dumps a table, retrying when the kernel says the dump was interrupted by a change.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        for _ in 0..DUMP_TRIES {
            let seq = self.send(msg.clone(), NLM_F_DUMP)?;
            let (replies, interrupted) = self.receive(seq)?;
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(Failure::Reply(format!("dump interrupted by concurrent changes {DUMP_TRIES} times")))
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, Failure> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        retry_interrupted(|| self.socket.send(&buf, 0))?;
        Ok(self.seq)
    }

    /// Reads replies to request `seq` until its acknowledgement, error or end of dump. Returns
    /// the messages and whether a dump was flagged as interrupted.
    fn receive(&mut self, seq: u32) -> Result<(Vec<RouteNetlinkMessage>, bool), Failure> {
        let mut replies = Replies { seq, messages: Vec::new(), interrupted: false };
        loop {
            let (datagram, _) = retry_interrupted(|| self.socket.recv_from_full())?;
            if replies.read(&datagram)? {
                return Ok((replies.messages, replies.interrupted));
            }
        }
    }
}

/// The replies to one request, gathered from the datagrams that carry them.
struct Replies {
    seq: u32,
    messages: Vec<RouteNetlinkMessage>,
    interrupted: bool,
}

impl Replies {
    /// Takes in one datagram (one or more messages); `Ok(true)` once the request's
    /// acknowledgement or end of dump came. Messages with other sequence numbers (left over from
    /// an earlier request that failed half-way through a dump) are skipped without parsing.
    fn read(&mut self, datagram: &[u8]) -> Result<bool, Failure> {
        let mut rest = datagram;
        while !rest.is_empty() {
            // struct nlmsghdr: u32 length, u16 type, u16 flags, u32 sequence, u32 port.
            let field = |at: usize| rest.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            let (Some(len), Some(seq)) = (field(0), field(8)) else {
                return Err(Failure::Reply(format!("truncated message header ({} bytes)", rest.len())));
            };
            let len = len as usize;
            if len < 16 || len > rest.len() {
                return Err(Failure::Reply(format!("message length {len} out of bounds ({} left)", rest.len())));
            }
            let this = &rest[..len];
            rest = rest.get(align4(len)..).unwrap_or_default();
            if seq != self.seq {
                continue;
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(this)
                .map_err(|e| Failure::Reply(format!("malformed message: {e}")))?;
            self.interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => self.messages.push(m),
                NetlinkPayload::Error(e) => match e.code {
                    None => return Ok(true),
                    Some(code) => {
                        let text = error_ack_text(msg.header.flags, &e.header);
                        return Err(Failure::Kernel(code.get().saturating_neg(), text));
                    }
                },
                NetlinkPayload::Done(d) if d.code < 0 => {
                    return Err(Failure::Kernel(d.code.saturating_neg(), ext_ack_text(&d.extended_ack)));
                }
                NetlinkPayload::Done(_) => return Ok(true),
                NetlinkPayload::Noop => {}
                NetlinkPayload::Overrun(_) => return Err(Failure::Reply("overrun".into())),
                _ => return Err(Failure::Reply("unknown payload".into())),
            }
        }
        Ok(false)
    }
}

/// Repeats a syscall a signal interrupted (EINTR) before it did anything.
fn retry_interrupted<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn address_message(index: u32, addr: InterfaceAddress) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = addr.family().to_netlink();
    msg.header.prefix_len = addr.prefix_len;
    msg.header.index = index;
    // As `ip addr add`: IFA_LOCAL is the address, IFA_ADDRESS the same (there is no peer).
    msg.attributes.push(AddressAttribute::Local(addr.addr));
    msg.attributes.push(AddressAttribute::Address(addr.addr));
    msg
}

/// A route through the link, as `ip route add|del DST dev LINK table T` sends it. An addition is
/// a unicast, link-scope route of protocol `static`; a deletion leaves protocol, scope and type
/// open (unspec, nowhere, unspec) so it matches the route whoever added it.
fn route_message(index: u32, dst: IpNet, table: u32, add: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = Family::of(dst.addr()).to_netlink();
    msg.header.destination_prefix_length = dst.prefix_len();
    // Tables above 255 go in RTA_TABLE only, as `ip` does.
    msg.header.table = u8::try_from(table).unwrap_or(0);
    if add {
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
    } else {
        msg.header.scope = RouteScope::NoWhere;
    }
    if dst.prefix_len() > 0 {
        msg.attributes.push(RouteAttribute::Destination(dst.addr().into()));
    }
    msg.attributes.push(RouteAttribute::Oif(index));
    msg.attributes.push(RouteAttribute::Table(table));
    msg
}

fn rule_message(rule: Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = rule.family.to_netlink();
    msg.header.table = u8::try_from(rule.table).unwrap_or(0);
    msg.header.action = RuleAction::ToTable;
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg.attributes.push(RuleAttribute::Table(rule.table));
    if let Some(m) = rule.not_fwmark {
        msg.header.flags = RuleFlags::Invert;
        msg.attributes.push(RuleAttribute::FwMark(m.mark));
        msg.attributes.push(RuleAttribute::FwMask(m.mask));
    }
    msg
}

/// The extended ack text of an `NLMSG_ERROR`: its payload after the errno is the request's
/// header (or the whole request unless `NLM_F_CAPPED`), then TLVs if `NLM_F_ACK_TLVS`.
fn error_ack_text(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        align4(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?) as usize)
    };
    ext_ack_text(payload.get(skip..)?)
}

/// The `NLMSGERR_ATTR_MSG` string among extended ack TLVs.
fn ext_ack_text(mut tlvs: &[u8]) -> Option<String> {
    const NLMSGERR_ATTR_MSG: u16 = 1;
    while tlvs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([tlvs[0], tlvs[1]]));
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]);
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned()).filter(|s| !s.is_empty());
        }
        tlvs = tlvs.get(align4(len)..).unwrap_or_default();
    }
    None
}

/// What vxwg configured on one link, undone (best effort) on drop: rules, then routes, then
/// addresses, then the link's admin state and MTU as they were before the first change.
///
/// It takes ownership of what it is asked to add even when that was already there (a route in
/// vxwg's table, a rule at vxwg's priority, an address on vxwg's link): those are vxwg's by
/// convention, and most likely left by a run that crashed, so they are removed too. Anything
/// already gone when undoing (the link deleted with its addresses and routes, say) is not an error.
#[derive(Debug)]
pub struct Applied {
    netlink: Netlink,
    index: u32,
    addresses: Vec<InterfaceAddress>,
    routes: Vec<(IpNet, u32)>,
    rules: Vec<Rule>,
    was_up: Option<bool>,
    old_mtu: Option<u32>,
}

impl Applied {
    /// Configuration of link `index` through `netlink`, nothing recorded yet.
    pub fn new(netlink: Netlink, index: u32) -> Self {
        Self {
            netlink,
            index,
            addresses: Vec::new(),
            routes: Vec::new(),
            rules: Vec::new(),
            was_up: None,
            old_mtu: None,
        }
    }

    /// The link configured.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The socket, for queries (changes made through it are not recorded).
    pub fn netlink(&mut self) -> &mut Netlink {
        &mut self.netlink
    }

    /// Sets the link up or down, remembering the state before the first change.
    pub fn set_link_up(&mut self, up: bool) -> Result<(), NetlinkError> {
        if self.was_up.is_none() {
            self.was_up = Some(self.netlink.link_is_up(self.index)?);
        }
        self.netlink.set_link_up(self.index, up)
    }

    /// Sets the MTU, remembering the MTU before the first change.
    pub fn set_mtu(&mut self, mtu: u32) -> Result<(), NetlinkError> {
        if self.old_mtu.is_none() {
            self.old_mtu = Some(self.netlink.link_mtu(self.index)?);
        }
        self.netlink.set_mtu(self.index, mtu)
    }

    /// Adds and records an address.
    pub fn add_address(&mut self, addr: InterfaceAddress) -> Result<Outcome, NetlinkError> {
        let outcome = self.netlink.add_address(self.index, addr)?;
        if !self.addresses.contains(&addr) {
            self.addresses.push(addr);
        }
        Ok(outcome)
    }

    /// Removes an address and forgets it.
    pub fn del_address(&mut self, addr: InterfaceAddress) -> Result<Outcome, NetlinkError> {
        let outcome = self.netlink.del_address(self.index, addr)?;
        self.addresses.retain(|a| *a != addr);
        Ok(outcome)
    }

    /// Adds and records a route through the link.
    pub fn add_route(&mut self, dst: IpNet, table: u32) -> Result<Outcome, NetlinkError> {
        let outcome = self.netlink.add_route(self.index, dst, table)?;
        if !self.routes.contains(&(dst, table)) {
            self.routes.push((dst, table));
        }
        Ok(outcome)
    }

    /// Removes a route and forgets it (a peer left, or lost an AllowedIP).
    pub fn del_route(&mut self, dst: IpNet, table: u32) -> Result<Outcome, NetlinkError> {
        let outcome = self.netlink.del_route(self.index, dst, table)?;
        self.routes.retain(|r| *r != (dst, table));
        Ok(outcome)
    }

    /// Adds and records a rule.
    pub fn add_rule(&mut self, rule: Rule) -> Result<Outcome, NetlinkError> {
        let outcome = self.netlink.add_rule(rule)?;
        if !self.rules.contains(&rule) {
            self.rules.push(rule);
        }
        Ok(outcome)
    }

    /// Removes a rule and forgets it.
    pub fn del_rule(&mut self, rule: Rule) -> Result<Outcome, NetlinkError> {
        let outcome = self.netlink.del_rule(rule)?;
        self.rules.retain(|r| *r != rule);
        Ok(outcome)
    }

    /// Undoes everything recorded, newest first within each kind, and forgets it; returns what
    /// could not be undone. Drop calls this and prints the failures to stderr.
    pub fn undo(&mut self) -> Vec<NetlinkError> {
        let index = self.index;
        let mut failed = Vec::new();
        // A link that is gone (ENODEV) took its addresses, routes and settings with it.
        let mut keep = |r: Result<(), NetlinkError>| match r {
            Err(e) if e.errno() != Some(libc::ENODEV) => failed.push(e),
            _ => {}
        };
        for rule in self.rules.drain(..).rev() {
            keep(self.netlink.del_rule(rule).map(drop));
        }
        for (dst, table) in self.routes.drain(..).rev() {
            keep(self.netlink.del_route(index, dst, table).map(drop));
        }
        for addr in self.addresses.drain(..).rev() {
            keep(self.netlink.del_address(index, addr).map(drop));
        }
        if let Some(up) = self.was_up.take() {
            keep(self.netlink.set_link_up(index, up));
        }
        if let Some(mtu) = self.old_mtu.take() {
            keep(self.netlink.set_mtu(index, mtu));
        }
        failed
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        for e in self.undo() {
            eprintln!("vxwg: could not undo network configuration: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_address_keeps_host_bits() {
        let a: InterfaceAddress = "100.64.0.1/24".parse().unwrap();
        assert_eq!(a.to_string(), "100.64.0.1/24");
        assert_eq!(a.network().to_string(), "100.64.0.0/24");
        assert_eq!(a.family(), Family::V4);
        assert_eq!("fd7a::5".parse::<InterfaceAddress>().unwrap().to_string(), "fd7a::5/128");
        assert_eq!(" 10.0.0.1 ".parse::<InterfaceAddress>().unwrap().prefix_len(), 32);
        assert_eq!("10.0.0.1/33".parse::<InterfaceAddress>(), Err(IpNetError::PrefixTooLong { len: 33, max: 32 }));
        assert_eq!("10.0.0/8".parse::<InterfaceAddress>(), Err(IpNetError::Address("10.0.0".into())));
        assert_eq!("::1/x".parse::<InterfaceAddress>(), Err(IpNetError::PrefixLength("x".into())));
    }

    #[test]
    fn big_tables_go_in_the_attribute_only() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        let small = route_message(3, net, 52, true);
        assert_eq!(small.header.table, 52);
        let big = route_message(3, net, 1000, false);
        assert_eq!(big.header.table, 0);
        assert!(big.attributes.contains(&RouteAttribute::Table(1000)));
        assert!(big.attributes.contains(&RouteAttribute::Oif(3)));
        // The default route carries no RTA_DST, as `ip route add default` sends it.
        let default = route_message(3, "::/0".parse().unwrap(), 52, true);
        assert!(!default.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert_eq!(default.header.address_family, AddressFamily::Inet6);
        assert_eq!(rule_message(Rule::new(Family::V4, 5270, 70000)).header.table, 0);
    }

    #[test]
    fn not_fwmark_sets_invert() {
        let plain = rule_message(Rule::new(Family::V6, DEFAULT_RULE_PRIORITY, DEFAULT_TABLE));
        assert!(!plain.header.flags.contains(RuleFlags::Invert));
        assert_eq!(plain.header.family, AddressFamily::Inet6);
        let marked = rule_message(Rule::new(Family::V4, 5270, 52).with_not_fwmark(BYPASS_MARK));
        assert!(marked.header.flags.contains(RuleFlags::Invert));
        assert!(marked.attributes.contains(&RuleAttribute::FwMark(0x80000)));
        assert!(marked.attributes.contains(&RuleAttribute::FwMask(0xff0000)));
        assert_eq!(
            Rule::new(Family::V4, 5270, 52).with_not_fwmark(BYPASS_MARK).to_string(),
            "IPv4 rule pref 5270 not fwmark 0x80000/0xff0000 lookup 52"
        );
    }

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn extended_ack_text_is_found() {
        // Capped: the request's 16-byte header, then an offset TLV (2) and the message TLV (1).
        let mut payload = vec![0u8; 16];
        payload.extend(tlv(2, &24u32.to_ne_bytes()));
        payload.extend(tlv(1, b"Nexthop device is not up\0"));
        assert_eq!(
            error_ack_text(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("Nexthop device is not up")
        );
        assert_eq!(error_ack_text(NLM_F_CAPPED, &payload), None);
        // Not capped: the whole request (its length in the first four bytes) comes first.
        let mut full = 20u32.to_ne_bytes().to_vec();
        full.resize(20, 0);
        full.extend(tlv(1, b"oops\0"));
        assert_eq!(error_ack_text(NLM_F_ACK_TLVS, &full).as_deref(), Some("oops"));
        // Truncated or garbage input yields nothing rather than panicking.
        assert_eq!(error_ack_text(NLM_F_ACK_TLVS, &[1, 2]), None);
        assert_eq!(ext_ack_text(&[0xff, 0xff, 1, 0, b'x']), None);
        assert_eq!(ext_ack_text(&tlv(1, b"\0")), None);
    }

    /// A netlink message: header (length, type, flags, seq, port 0) and payload.
    fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn nlmsg_error(seq: u32, code: i32) -> Vec<u8> {
        let mut payload = code.to_ne_bytes().to_vec();
        payload.extend(nlmsg(0, 0, seq, &[])); // the request's header, capped
        nlmsg(2, NLM_F_CAPPED, seq, &payload)
    }

    #[test]
    fn replies_skip_other_requests_and_end_at_the_ack() {
        let mut r = Replies { seq: 7, messages: Vec::new(), interrupted: false };
        // A leftover of request 6 (garbage payload, never parsed), then request 7's ack.
        let mut datagram = nlmsg(16, 0, 6, &[0xff; 3]);
        datagram.extend(nlmsg_error(7, 0));
        assert!(matches!(r.read(&datagram), Ok(true)));
        assert!(r.messages.is_empty());

        let mut r = Replies { seq: 8, messages: Vec::new(), interrupted: false };
        assert!(matches!(r.read(&nlmsg_error(8, -libc::ENODEV)), Err(Failure::Kernel(libc::ENODEV, None))));
        // A dump's end, with the interrupted flag on the way.
        let mut r = Replies { seq: 9, messages: Vec::new(), interrupted: false };
        assert!(matches!(r.read(&nlmsg(3, NLM_F_DUMP_INTR, 9, &0i32.to_ne_bytes())), Ok(true)));
        assert!(r.interrupted);
        let mut r = Replies { seq: 9, messages: Vec::new(), interrupted: false };
        let failed = nlmsg(3, 0, 9, &(-libc::EBUSY).to_ne_bytes());
        assert!(matches!(r.read(&failed), Err(Failure::Kernel(libc::EBUSY, None))));
        // No terminator yet: read on.
        let mut r = Replies { seq: 10, messages: Vec::new(), interrupted: false };
        assert!(matches!(r.read(&nlmsg(1, 0, 10, &[])), Ok(false)));
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        let mut r = Replies { seq: 1, messages: Vec::new(), interrupted: false };
        assert!(matches!(r.read(&[1, 2, 3]), Err(Failure::Reply(_))));
        let mut long = nlmsg_error(1, 0);
        long[0] = 200; // claims more bytes than the datagram has
        assert!(matches!(r.read(&long), Err(Failure::Reply(_))));
        let mut short = nlmsg_error(1, 0);
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(r.read(&short), Err(Failure::Reply(_))));
        // Our sequence number but an unparsable payload (an error message too short for its code).
        assert!(matches!(r.read(&nlmsg(2, 0, 1, &[0, 0])), Err(Failure::Reply(_))));
    }

    #[test]
    fn errors_name_the_operation_and_errno() {
        let e = Failure::Kernel(libc::ENODEV, None).at(Op::AddRoute {
            index: 99,
            dst: "10.9.0.0/16".parse().unwrap(),
            table: 52,
        });
        let text = e.to_string();
        assert!(text.starts_with("add route 10.9.0.0/16 dev #99 table 52: "), "{text}");
        assert!(text.contains(&format!("os error {}", libc::ENODEV)), "{text}");
        assert_eq!(e.errno(), Some(libc::ENODEV));
        let e = Failure::Kernel(libc::ENETDOWN, Some("Nexthop device is not up".into()))
            .at(Op::SetMtu { index: 4, mtu: 9 });
        assert!(e.to_string().ends_with("(Nexthop device is not up)"), "{e}");
        assert_eq!(
            NetlinkError::InvalidName("x".repeat(16)).to_string(),
            format!("interface name {:?} must be 1-15 bytes without '/', whitespace or NUL", "x".repeat(16))
        );
    }
}
