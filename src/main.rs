//! The `vxwg` binary.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vxwg::control::keys::Key;

mod admin;
mod assist;
mod config;
mod control_plane;
mod daemon;
mod demo;
mod netconf;
mod packet_io;
mod routesync;
mod status;
mod worker;

#[derive(Parser)]
#[command(name = "vxwg", version, about = "Userspace WireGuard + VXLAN node dataplane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a new private key (base64), as `wg genkey` does.
    Genkey,
    /// Print a new preshared key (base64), as `wg genpsk` does.
    Genpsk,
    /// Read a private key (base64) on stdin and print its public key, as `wg pubkey` does.
    Pubkey,
    /// Create the WireGuard interface IFNAME and serve it (configure it with `wg`), as
    /// wireguard-go does; daemonizes unless -f or WG_PROCESS_FOREGROUND=1.
    Up {
        /// Stay in the foreground.
        #[arg(short, long)]
        foreground: bool,
        /// Configure everything from this TOML file (docs/config.md) instead of waiting for `wg`.
        #[arg(short, long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// Interface name.
        ifname: String,
    },
    /// Show a running interface: peers, endpoints, latest handshakes, transfer, drops by reason.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Interface name.
        ifname: String,
    },
    /// Show every route the netmap advertises (`[control]`): node, approved as primary or standby
    /// or why not, whether it is installed, and every rejected document with the reason.
    Routes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Interface name.
        ifname: String,
    },
    /// Measure round-trip time to a peer's tunnel address through the interface.
    Ping {
        /// Echo requests to send.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
        /// Interface name.
        ifname: String,
        /// An address inside the peer's AllowedIPs.
        peer_ip: std::net::IpAddr,
    },
    /// Operator tools for the signed netmap: keys, node certificates and records, the policy,
    /// and inspecting documents (docs/control.md).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// As root: build three vxwg nodes in network namespaces with a pod behind each, bring the
    /// VXLAN-over-WireGuard mesh up, measure handshakes, pod-to-pod RTT and TCP throughput and the
    /// pod MTU, then remove everything. Otherwise (or with --in-process): two WireGuard nodes in
    /// this process (handshake, traffic both ways, session rollover across ten simulated minutes).
    Demo {
        /// Run the in-process demo even as root.
        #[arg(long)]
        in_process: bool,
        /// Mesh: MiB sent in each pod-to-pod TCP transfer.
        #[arg(long, default_value_t = 100)]
        mb: u32,
        /// In-process: packets to send each way.
        #[arg(long, default_value_t = 20_000)]
        packets: u32,
        /// In-process: inner packet size in bytes.
        #[arg(long, default_value_t = 1420)]
        size: usize,
    },
    /// The demo's TCP measurement, run by `vxwg demo` inside pod namespaces.
    #[command(hide = true)]
    DemoTcp {
        /// `serve` (accept one connection, count to EOF) or `send`.
        #[arg(value_parser = ["serve", "send"])]
        role: String,
        /// Address to listen on or connect to.
        addr: std::net::SocketAddr,
        /// MiB to send.
        #[arg(long, default_value_t = 100)]
        mb: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(wireguard_go_compatible_args(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Genkey => print_line(&Key::generate_private(&mut rand_core::OsRng).to_base64()),
        Command::Genpsk => print_line(&Key::generate_preshared(&mut rand_core::OsRng).to_base64()),
        Command::Pubkey => pubkey(),
        Command::Up { foreground, config, ifname } => daemon::up(&ifname, foreground, config.as_deref()),
        Command::Status { json, ifname } => status::status(&ifname, json),
        Command::Routes { json, ifname } => status::routes(&ifname, json),
        Command::Ping { count, ifname, peer_ip } => status::ping(&ifname, peer_ip, count),
        Command::Admin { command } => admin::run(command),
        Command::Demo { in_process, mb, packets, size } => demo::run(in_process, mb, packets, size),
        Command::DemoTcp { role, addr, mb } => match role.as_str() {
            "serve" => demo::mesh::serve(addr),
            _ => demo::mesh::send(addr, mb),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vxwg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vxwg [-f] IFNAME` means `vxwg up [-f] IFNAME`, the command line wireguard-go takes, so wg-quick
/// can run us through WG_QUICK_USERSPACE_IMPLEMENTATION=vxwg.
fn wireguard_go_compatible_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let command = Cli::command();
    let first_word = args.iter().skip(1).find(|a| !a.to_string_lossy().starts_with('-'));
    let is_subcommand = first_word.is_some_and(|w| {
        let w = w.to_string_lossy();
        w == "help" || command.get_subcommands().any(|c| c.get_name() == w)
    });
    let only_flags_are_foreground = args.iter().skip(1).all(|a| {
        let a = a.to_string_lossy();
        !a.starts_with('-') || a == "-f" || a == "--foreground"
    });
    if first_word.is_some() && !is_subcommand && only_flags_are_foreground {
        args.insert(1, "up".into());
    }
    args
}

fn print_line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}")?;
    Ok(())
}

fn pubkey() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().take(1024).read_to_string(&mut input)?;
    let private = Key::from_base64(&input).map_err(|e| anyhow::anyhow!("reading private key from stdin: {e}"))?;
    print_line(&private.public().to_base64())
}
