//! `vxwg status` and `vxwg ping`: asking a running daemon, and measuring through its tunnel.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::control_plane::ROUTES_REQUEST;
use crate::daemon::{SOCKET_DIR, STATUS_REQUEST};

fn query(ifname: &str) -> anyhow::Result<serde_json::Value> {
    request(ifname, STATUS_REQUEST)
}

/// Sends one of vxwg's own UAPI requests and parses the one-line JSON answer.
fn request(ifname: &str, request: &str) -> anyhow::Result<serde_json::Value> {
    let path = Path::new(SOCKET_DIR).join(format!("{ifname}.sock"));
    let mut s = UnixStream::connect(&path)
        .with_context(|| format!("no vxwg daemon serves {ifname} ({} not reachable)", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.starts_with("errno=") {
        bail!("{ifname} is served by something other than vxwg (it answered {})", line.trim());
    }
    serde_json::from_str(&line).context("parsing the daemon's status")
}

/// Prints a daemon's status, as text or JSON.
pub fn status(ifname: &str, json: bool) -> anyhow::Result<()> {
    let v = query(ifname)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    println!("interface: {}", v["interface"].as_str().unwrap_or(ifname));
    println!("  public key: {}", v["public_key"].as_str().unwrap_or("(none)"));
    println!("  listening port: {}", v["listen_port"]);
    println!("  packets: {} out, {} in", v["packets_out"], v["packets_in"]);
    for (i, w) in v["workers"].as_array().into_iter().flatten().enumerate() {
        let cpu = w["cpu"].as_u64().map_or("unpinned".to_string(), |c| format!("CPU {c}"));
        let time = match (w["cpu_seconds"].as_f64(), w["cpu_wait_seconds"].as_f64()) {
            (Some(ran), Some(waited)) => format!("; ran {ran:.1} s, waited {waited:.1} s for a CPU"),
            _ => String::new(),
        };
        let resealed = match w["packets_resealed"].as_u64() {
            Some(n) if n > 0 => format!(" ({n} resealed on fresh counters)"),
            _ => String::new(),
        };
        let helped = match (w["packets_opened_for_others"].as_u64(), w["packets_opened_by_others"].as_u64()) {
            (Some(for_others), Some(by_others)) if for_others + by_others > 0 => {
                format!(" (decrypted {for_others} for other workers, {by_others} of its own by them)")
            }
            _ => String::new(),
        };
        println!("  worker {i} ({cpu}): {} out{resealed}, {} in{helped}{time}", w["packets_out"], w["packets_in"]);
    }
    for p in v["peers"].as_array().into_iter().flatten() {
        println!("\npeer: {}", p["public_key"].as_str().unwrap_or("?"));
        println!("  endpoint: {}", p["endpoint"].as_str().unwrap_or("(none)"));
        let ips: Vec<&str> = p["allowed_ips"].as_array().into_iter().flatten().filter_map(|x| x.as_str()).collect();
        println!("  allowed ips: {}", if ips.is_empty() { "(none)".to_string() } else { ips.join(", ") });
        match p["latest_handshake"].as_u64() {
            Some(t) => println!("  latest handshake: {} s ago", now.saturating_sub(t)),
            None => println!("  latest handshake: never"),
        }
        println!("  transfer: {} B received, {} B sent", p["rx_bytes"], p["tx_bytes"]);
    }
    println!("\ndrops: {}", nonzero_counters(&v["drops"]));
    let pod = &v["pod"];
    if pod.is_object() {
        println!(
            "\npod path: VTEP {} {} (VNI {}, port {}), pod MTU {}",
            pod["vtep_ip"].as_str().unwrap_or("?"),
            pod["vtep_mac"].as_str().unwrap_or("?"),
            pod["vni"],
            pod["port"],
            pod["pod_mtu"]
        );
        for r in pod["routes"].as_array().into_iter().flatten() {
            println!(
                "  {} via VTEP {} {}",
                r["cidr"].as_str().unwrap_or("?"),
                r["vtep_ip"].as_str().unwrap_or("?"),
                r["vtep_mac"].as_str().unwrap_or("?")
            );
        }
        println!("  packets: {} out, {} in (plus {} plain L3 in)", pod["packets_out"], pod["packets_in"], pod["l3_in"]);
        println!("  pod drops: {}", nonzero_counters(&pod["drops"]));
    }
    let c = &v["control"];
    if c.is_object() {
        println!("\ncontrol: node {} from {}", c["node"].as_str().unwrap_or("?"), c["source"].as_str().unwrap_or("?"));
        match c["netmap_age_secs"].as_u64() {
            Some(age) => println!("  netmap: last changed {age} s ago, {} applied so far", c["netmaps_applied"]),
            None => println!("  netmap: none yet"),
        }
        match c["policy_version"].as_u64() {
            Some(v) => println!("  policy version {v}"),
            None => println!("  no valid policy: nothing approved, no peers (fail closed)"),
        }
        println!(
            "  {} peers, {} approved routes, {} rejected documents (vxwg routes {ifname})",
            c["peers"], c["routes_approved"], c["rejections"]
        );
        if let Some(held) = c["held"].as_str() {
            println!("  newest netmap held back: {held}");
        }
        if let Some(e) = c["source_error"].as_str() {
            println!("  source error: {e}");
        }
    }
    Ok(())
}

/// `vxwg routes`: every advertised route and what became of it, and every rejected document.
pub fn routes(ifname: &str, json: bool) -> anyhow::Result<()> {
    let v = request(ifname, ROUTES_REQUEST)?;
    if v.is_null() {
        bail!("{ifname} has no control plane (start it with a [control] section)");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("node {} from {}", v["node"].as_str().unwrap_or("?"), v["source"].as_str().unwrap_or("?"));
    if let Some(held) = v["held"].as_str() {
        println!("newest netmap held back: {held}");
    }
    let routes = v["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        println!("\nno advertised routes");
    } else {
        println!("\n{:<20} {:<20} {:<13} detail", "prefix", "node", "state");
    }
    for r in &routes {
        let detail = match (r["reason"].as_str(), r["own"].as_bool(), r["installed"].as_bool()) {
            (Some(why), _, _) => why.to_string(),
            (None, Some(true), _) => "advertised by this node".to_string(),
            (None, _, Some(true)) => "installed".to_string(),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<20} {:<13} {detail}",
            r["prefix"].as_str().unwrap_or("?"),
            r["node"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?")
        );
    }
    let rejections = v["rejections"].as_array().cloned().unwrap_or_default();
    if !rejections.is_empty() {
        println!("\nrejected documents:");
        for r in &rejections {
            let node = r["node"].as_str().map(|n| format!(" (node {n})")).unwrap_or_default();
            println!("  {}{node}: {}", r["key"].as_str().unwrap_or("?"), r["reason"].as_str().unwrap_or("?"));
        }
    }
    Ok(())
}

/// Sends ICMP echo requests to `peer_ip` out of `ifname` and prints the round-trip times.
pub fn ping(ifname: &str, peer_ip: IpAddr, count: u32) -> anyhow::Result<()> {
    let (domain, proto, echo_type, reply_type) = match peer_ip {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    // Datagram ICMP sockets need no privilege where net.ipv4.ping_group_range allows them (the
    // kernel then fills in identifier and checksum); elsewhere, as root, a raw socket.
    let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, false),
        Err(_) => (
            Socket::new(domain, Type::RAW, Some(proto))
                .context("opening an ICMP socket (needs root, or net.ipv4.ping_group_range)")?,
            true,
        ),
    };
    let ident = (std::process::id() & 0xffff) as u16;
    socket.bind_device(Some(ifname.as_bytes())).with_context(|| format!("binding to {ifname}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let dst = SockAddr::from(SocketAddr::new(peer_ip, 0));
    let mut rtts = Vec::new();
    for seq in 1..=count as u16 {
        let mut req = [0u8; 64];
        req[0] = echo_type;
        req[4..6].copy_from_slice(&ident.to_be_bytes());
        req[6..8].copy_from_slice(&seq.to_be_bytes());
        if raw && peer_ip.is_ipv4() {
            // ICMPv4 checksum over the message (the kernel computes ICMPv6's itself).
            let sum = vxwg::dataplane::wire::checksum::finish(vxwg::dataplane::wire::checksum::sum(&req));
            req[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let sent = Instant::now();
        socket.send_to(&req, &dst)?;
        let mut buf = [0u8; 1500];
        let deadline = sent + Duration::from_secs(2);
        let mut got = None;
        while Instant::now() < deadline {
            let n = match (&socket).read(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.into()),
            };
            let mut bytes = &buf[..n];
            if raw && peer_ip.is_ipv4() {
                // Raw IPv4 sockets hand over the IP header too.
                let ihl = usize::from(bytes.first().map_or(0, |b| b & 0x0f)) * 4;
                bytes = bytes.get(ihl..).unwrap_or(&[]);
            }
            let ours = !raw || bytes.get(4..6) == Some(&ident.to_be_bytes()[..]);
            if bytes.len() >= 8 && bytes[0] == reply_type && bytes[6..8] == seq.to_be_bytes() && ours {
                got = Some(sent.elapsed());
                break;
            }
        }
        match got {
            Some(rtt) => {
                println!("reply from {peer_ip} via {ifname}: seq={seq} time={:.3} ms", rtt.as_secs_f64() * 1e3);
                rtts.push(rtt);
            }
            None => println!("no reply from {peer_ip} via {ifname}: seq={seq}"),
        }
        if seq < count as u16 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if rtts.is_empty() {
        bail!("{peer_ip}: no reply to {count} echo requests through {ifname}");
    }
    let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let avg = ms.iter().sum::<f64>() / ms.len() as f64;
    let min = ms.iter().cloned().fold(f64::MAX, f64::min);
    let max = ms.iter().cloned().fold(0.0, f64::max);
    println!("{} sent, {} received; rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms", count, rtts.len());
    Ok(())
}

/// `name=count` for every non-zero counter of a JSON object, or "none".
fn nonzero_counters(counters: &serde_json::Value) -> String {
    let set: Vec<String> = counters
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if set.is_empty() {
        "none".to_string()
    } else {
        set.join(" ")
    }
}
