//! The `vxwg` binary.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vxwg::control::keys::Key;

mod daemon;
mod demo;

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
        /// Interface name.
        ifname: String,
    },
    /// Run two WireGuard nodes in this process on an embedded default: handshake, traffic both
    /// ways, session rollover across ten simulated minutes; print what happened.
    Demo {
        /// Packets to send each way.
        #[arg(long, default_value_t = 20_000)]
        packets: u32,
        /// Inner packet size in bytes.
        #[arg(long, default_value_t = 1420)]
        size: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Genkey => print_line(&Key::generate_private(&mut rand_core::OsRng).to_base64()),
        Command::Genpsk => print_line(&Key::generate_preshared(&mut rand_core::OsRng).to_base64()),
        Command::Pubkey => pubkey(),
        Command::Up { foreground, ifname } => daemon::up(&ifname, foreground),
        Command::Demo { packets, size } => demo::run(packets, size),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vxwg: {e:#}");
            ExitCode::FAILURE
        }
    }
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
