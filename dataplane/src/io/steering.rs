//! The queue-steering program for a multi-queue TUN device: a tiny eBPF socket filter that
//! returns a hash of a packet's flow, which the tun driver (TUNSETSTEERINGEBPF) reduces modulo
//! the number of queues to pick the queue each packet the kernel routes into the device comes
//! out of.
//!
//! Why: without it the tun driver learns flows from writes (a write on a queue moves the flow's
//! next packets to that queue). vxwg writes a peer's decrypted packets on the worker that
//! received them, and one peer's packets all arrive on one worker, so every flow to that peer
//! would follow it there. With a steering program attached the driver learns nothing and asks
//! the program for every packet.
//!
//! The hash ([`flow_hash`], which mirrors [`PROGRAM`] exactly) is a pure function of a key fixed
//! when the program is loaded and the packet's source and destination addresses and protocol,
//! plus its source and destination ports for TCP and UDP. The key is random unless the caller
//! gives one, so that nobody outside can choose flows that all land on one queue (a mixing
//! function, not a cryptographic one, but every output bit depends on the key).
//!
//! IPv4 options are skipped (the ports are found after IHL words); IPv4 fragments hash without
//! ports (later fragments have none, and all must go one way); IPv6 extension headers are not
//! walked (next header not TCP or UDP: addresses and next header only). A packet neither IPv4
//! nor IPv6 hashes the key alone; one too short for what the program reads hashes to 0. At this
//! hook `skb->data` is the IP header: a TUN device has no link header.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// Destination register in the low nibble, source register in the high (on little-endian
    /// machines; the C bitfields swap on big-endian ones).
    pub regs: u8,
    /// Jump offset (instructions after the next).
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_H: u8 = 0x08;
const BPF_B: u8 = 0x10;
const BPF_ABS: u8 = 0x20;
const BPF_IND: u8 = 0x40;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_MUL: u8 = 0x20;
const BPF_AND: u8 = 0x50;
const BPF_LSH: u8 = 0x60;
const BPF_RSH: u8 = 0x70;
const BPF_XOR: u8 = 0xa0;
const BPF_MOV: u8 = 0xb0;
const BPF_JA: u8 = 0x00;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

const fn regs(dst: u8, src: u8) -> u8 {
    if cfg!(target_endian = "little") {
        dst | src << 4
    } else {
        dst << 4 | src
    }
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: regs(dst, src), off, imm }
}

/// `r0 = ntohl(*(u32 *)(skb->data + at))`; leaves the program with 0 past the packet's end.
/// Needs the context in r6, clobbers r1-r5.
const fn ld_abs_w(at: i32) -> Insn {
    insn(BPF_LD | BPF_ABS | BPF_W, 0, 0, 0, at)
}
/// `r0 = ntohs(*(u16 *)(skb->data + at))`, as [`ld_abs_w`].
const fn ld_abs_h(at: i32) -> Insn {
    insn(BPF_LD | BPF_ABS | BPF_H, 0, 0, 0, at)
}
/// `r0 = *(u8 *)(skb->data + at)`, as [`ld_abs_w`].
const fn ld_abs_b(at: i32) -> Insn {
    insn(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, at)
}
/// `r0 = ntohl(*(u32 *)(skb->data + src + at))`, as [`ld_abs_w`].
const fn ld_ind_w(src: u8, at: i32) -> Insn {
    insn(BPF_LD | BPF_IND | BPF_W, 0, src, 0, at)
}
/// `dst = src` (64-bit).
const fn mov64(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}
/// `dst = imm` (32-bit, upper half zeroed).
const fn mov32_imm(dst: u8, imm: u32) -> Insn {
    insn(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, imm as i32)
}
/// `dst = (u32)src`.
const fn mov32(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
}
/// `dst ^= src` (32-bit).
const fn xor32(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU | BPF_XOR | BPF_X, dst, src, 0, 0)
}
/// `dst *= imm` (32-bit, wrapping).
const fn mul32_imm(dst: u8, imm: u32) -> Insn {
    insn(BPF_ALU | BPF_MUL | BPF_K, dst, 0, 0, imm as i32)
}
/// `dst &= imm` (32-bit).
const fn and32_imm(dst: u8, imm: u32) -> Insn {
    insn(BPF_ALU | BPF_AND | BPF_K, dst, 0, 0, imm as i32)
}
/// `dst >>= imm` (32-bit, logical).
const fn rsh32_imm(dst: u8, imm: u32) -> Insn {
    insn(BPF_ALU | BPF_RSH | BPF_K, dst, 0, 0, imm as i32)
}
/// `dst <<= imm` (32-bit).
const fn lsh32_imm(dst: u8, imm: u32) -> Insn {
    insn(BPF_ALU | BPF_LSH | BPF_K, dst, 0, 0, imm as i32)
}
/// `if dst == imm goto pc + 1 + off`.
const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
}
/// `if dst != imm goto pc + 1 + off`.
const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm)
}
/// `goto pc + 1 + off`.
const fn ja(off: i16) -> Insn {
    insn(BPF_JMP | BPF_JA, 0, 0, off, 0)
}
/// `return r0`.
const fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

// Registers: r0 loads, r1 the context on entry, r2 scratch (the loads clobber r1-r5, so only
// between them), r6 the context (the loads need it there), r7 the hash, r8 the IPv4 header
// length, r9 the IP version, then the protocol.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;

/// Where [`PROGRAM`] sets the hash's starting value, the key: [`program`] patches it in.
const KEY_AT: usize = 1;
/// Multiplier that folds each 32-bit word into the hash (odd: the 32-bit golden ratio).
const FOLD: u32 = 0x9e37_79b1;
/// The final mix is murmur3's fmix32: every output bit depends on every input bit, so that
/// `hash % queues` spreads flows whatever their differing bits are.
const FMIX1: u32 = 0x85eb_ca6b;
const FMIX2: u32 = 0xc2b2_ae35;

/// The steering program, with key 0 ([`program`] gives it another). Starting from the key, per
/// word `w` read: `h = (h ^ w) * FOLD`, then fmix32 on the result. Loads read big-endian
/// (network order) values.
pub const PROGRAM: [Insn; 75] = [
    mov64(R6, R1),         // 0: r6 = ctx (for the packet loads)
    mov32_imm(R7, 0),      // 1 (KEY_AT): h = key
    ld_abs_b(0),           // 2: r0 = version << 4 | IHL
    mov64(R9, R0),         // 3: r9 = r0
    rsh32_imm(R9, 4),      // 4: r9 = IP version
    jeq_imm(R9, 6, 23),    // 5: IPv6: goto V6 (29)
    jne_imm(R9, 4, 55),    // 6: not IPv4: goto FINISH (62) with h = key
    mov64(R8, R0),         // 7: r8 = version << 4 | IHL
    and32_imm(R8, 0x0f),   // 8: r8 = IHL (words)
    lsh32_imm(R8, 2),      // 9: r8 = header length (bytes): where the ports are
    ld_abs_w(12),          // 10: r0 = source address
    xor32(R7, R0),         // 11: h ^= r0
    mul32_imm(R7, FOLD),   // 12: h *= FOLD
    ld_abs_w(16),          // 13: r0 = destination address
    xor32(R7, R0),         // 14: h ^= r0
    mul32_imm(R7, FOLD),   // 15: h *= FOLD
    ld_abs_b(9),           // 16: r0 = protocol
    mov64(R9, R0),         // 17: r9 = protocol
    xor32(R7, R0),         // 18: h ^= r0
    mul32_imm(R7, FOLD),   // 19: h *= FOLD
    jeq_imm(R9, 6, 1),     // 20: TCP: goto 22
    jne_imm(R9, 17, 40),   // 21: not UDP either: goto FINISH (62)
    ld_abs_h(6),           // 22: r0 = flags and fragment offset
    and32_imm(R0, 0x3fff), // 23: r0 = more-fragments flag and offset
    jne_imm(R0, 0, 37),    // 24: a fragment: no ports, goto FINISH (62)
    ld_ind_w(R8, 0),       // 25: r0 = source port << 16 | destination port
    xor32(R7, R0),         // 26: h ^= r0
    mul32_imm(R7, FOLD),   // 27: h *= FOLD
    ja(33),                // 28: goto FINISH (62)
    ld_abs_w(8),           // 29 (V6): r0 = source address, word 0
    xor32(R7, R0),         // 30: h ^= r0
    mul32_imm(R7, FOLD),   // 31: h *= FOLD
    ld_abs_w(12),          // 32: r0 = source address, word 1
    xor32(R7, R0),         // 33: h ^= r0
    mul32_imm(R7, FOLD),   // 34: h *= FOLD
    ld_abs_w(16),          // 35: r0 = source address, word 2
    xor32(R7, R0),         // 36: h ^= r0
    mul32_imm(R7, FOLD),   // 37: h *= FOLD
    ld_abs_w(20),          // 38: r0 = source address, word 3
    xor32(R7, R0),         // 39: h ^= r0
    mul32_imm(R7, FOLD),   // 40: h *= FOLD
    ld_abs_w(24),          // 41: r0 = destination address, word 0
    xor32(R7, R0),         // 42: h ^= r0
    mul32_imm(R7, FOLD),   // 43: h *= FOLD
    ld_abs_w(28),          // 44: r0 = destination address, word 1
    xor32(R7, R0),         // 45: h ^= r0
    mul32_imm(R7, FOLD),   // 46: h *= FOLD
    ld_abs_w(32),          // 47: r0 = destination address, word 2
    xor32(R7, R0),         // 48: h ^= r0
    mul32_imm(R7, FOLD),   // 49: h *= FOLD
    ld_abs_w(36),          // 50: r0 = destination address, word 3
    xor32(R7, R0),         // 51: h ^= r0
    mul32_imm(R7, FOLD),   // 52: h *= FOLD
    ld_abs_b(6),           // 53: r0 = next header
    mov64(R9, R0),         // 54: r9 = next header
    xor32(R7, R0),         // 55: h ^= r0
    mul32_imm(R7, FOLD),   // 56: h *= FOLD
    jeq_imm(R9, 6, 1),     // 57: TCP: goto 59
    jne_imm(R9, 17, 3),    // 58: not UDP either: goto FINISH (62)
    ld_abs_w(40),          // 59: r0 = source port << 16 | destination port
    xor32(R7, R0),         // 60: h ^= r0
    mul32_imm(R7, FOLD),   // 61: h *= FOLD
    mov32(R2, R7),         // 62 (FINISH): r2 = h
    rsh32_imm(R2, 16),     // 63: r2 = h >> 16
    xor32(R7, R2),         // 64: h ^= h >> 16
    mul32_imm(R7, FMIX1),  // 65: h *= FMIX1
    mov32(R2, R7),         // 66: r2 = h
    rsh32_imm(R2, 13),     // 67: r2 = h >> 13
    xor32(R7, R2),         // 68: h ^= h >> 13
    mul32_imm(R7, FMIX2),  // 69: h *= FMIX2
    mov32(R2, R7),         // 70: r2 = h
    rsh32_imm(R2, 16),     // 71: r2 = h >> 16
    xor32(R7, R2),         // 72: h ^= h >> 16
    mov32(R0, R7),         // 73: r0 = h
    exit(),                // 74: return h (the driver takes it modulo the queue count)
];

/// [`PROGRAM`] with `key` as the hash's starting value.
pub fn program(key: u32) -> [Insn; PROGRAM.len()] {
    let mut program = PROGRAM;
    program[KEY_AT] = mov32_imm(R7, key);
    program
}

/// What [`program`]`(key)` returns for `packet` (an IP packet, no link header): the same hash,
/// computed in Rust, so callers and tests can tell which queue a flow will come out of
/// (`flow_hash(key, p) % queues`).
pub fn flow_hash(key: u32, packet: &[u8]) -> u32 {
    flow_words(packet).map_or(0, |words| fmix(words.fold(key, |h, w| (h ^ w).wrapping_mul(FOLD))))
}

/// A key from the kernel's random pool.
pub fn random_key() -> io::Result<u32> {
    let mut key = [0u8; 4];
    // SAFETY: getrandom writes at most `key.len()` bytes to the pointer, valid across the call.
    let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
    if n != key.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::from_ne_bytes(key))
}

/// The words the program folds in, in order; `None` where it would read past the end (and so
/// return 0 at once).
fn flow_words(p: &[u8]) -> Option<impl Iterator<Item = u32>> {
    // At most 8 address words, the protocol and the ports.
    let mut words = [0u32; 10];
    let mut len = 0;
    let mut push = |w: u32| {
        words[len] = w;
        len += 1;
    };
    let byte = |at: usize| p.get(at).map(|&b| u32::from(b));
    let half = |at: usize| Some(u32::from(u16::from_be_bytes(p.get(at..at + 2)?.try_into().ok()?)));
    let word = |at: usize| Some(u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?));
    let first = byte(0)?;
    match first >> 4 {
        4 => {
            let header = (first as usize & 0x0f) * 4;
            push(word(12)?);
            push(word(16)?);
            let protocol = byte(9)?;
            push(protocol);
            if (protocol == 6 || protocol == 17) && half(6)? & 0x3fff == 0 {
                push(word(header)?);
            }
        }
        6 => {
            for at in (8..40).step_by(4) {
                push(word(at)?);
            }
            let next = byte(6)?;
            push(next);
            if next == 6 || next == 17 {
                push(word(40)?);
            }
        }
        _ => {}
    }
    Some(words.into_iter().take(len))
}

fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(FMIX1);
    h ^= h >> 13;
    h = h.wrapping_mul(FMIX2);
    h ^ (h >> 16)
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// The head of `union bpf_attr` for BPF_PROG_LOAD, up to the program name (the kernel takes a
/// shorter attr and treats the rest as zero).
#[repr(C, align(8))]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// Loads [`program`]`(key)` as a socket filter (needs CAP_BPF or CAP_SYS_ADMIN). On failure the
/// error carries the verifier's log.
pub fn load(key: u32) -> io::Result<OwnedFd> {
    load_program(&program(key))
}

fn load_program(program: &[Insn]) -> io::Result<OwnedFd> {
    match load_with_log(program, None) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            // Load again for the verifier's reasons (not asked for the first time: it costs).
            let mut log = vec![0u8; 64 * 1024];
            let why = match load_with_log(program, Some(&mut log)) {
                Ok(_) => String::new(),
                Err(_) => {
                    let len = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    String::from_utf8_lossy(&log[..len]).trim().to_string()
                }
            };
            Err(io::Error::new(e.kind(), format!("loading the TUN steering program: {e}; verifier: {why:?}")))
        }
    }
}

fn load_with_log(program: &[Insn], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let license = b"Dual MIT/GPL\0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..10].copy_from_slice(b"vxwg_steer");
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    // SAFETY: BPF_PROG_LOAD reads `attr` (size passed) and the instructions, license and log
    // buffer it points to, all of which outlive the call; it writes at most `log_size` bytes of
    // log. It returns a new descriptor we then own.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &mut attr as *mut ProgLoadAttr, std::mem::size_of::<ProgLoadAttr>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any key, for the tests that compare the program with `flow_hash`.
    const KEY: u32 = 0x6a09_e667;

    /// Runs [`program`]`(key)` on `packet` as the kernel would: just the instructions it uses.
    fn run(key: u32, packet: &[u8]) -> u32 {
        let program = program(key);
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        let dst_src = |i: &Insn| {
            let (lo, hi) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
            if cfg!(target_endian = "little") {
                (lo, hi)
            } else {
                (hi, lo)
            }
        };
        loop {
            let i = program[pc];
            let (dst, src) = dst_src(&i);
            pc += 1;
            let class = i.code & 0x07;
            match class {
                BPF_LD => {
                    let at = if i.code & 0xe0 == BPF_IND { r[src] as i64 + i64::from(i.imm) } else { i64::from(i.imm) };
                    let len = match i.code & 0x18 {
                        BPF_W => 4,
                        BPF_H => 2,
                        BPF_B => 1,
                        other => panic!("load size {other:#x}"),
                    };
                    let Some(bytes) = usize::try_from(at).ok().and_then(|at| packet.get(at..at + len)) else {
                        return 0;
                    };
                    r[0] = bytes.iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
                    r[1..6].fill(0xdead_beef);
                }
                BPF_ALU | BPF_ALU64 => {
                    let operand = if i.code & BPF_X != 0 { r[src] } else { i64::from(i.imm) as u64 };
                    let v = match i.code & 0xf0 {
                        BPF_MOV => operand,
                        BPF_XOR => r[dst] ^ operand,
                        BPF_AND => r[dst] & operand,
                        BPF_MUL => r[dst].wrapping_mul(operand),
                        BPF_LSH if class == BPF_ALU => u64::from((r[dst] as u32) << operand),
                        BPF_RSH if class == BPF_ALU => u64::from((r[dst] as u32) >> operand),
                        other => panic!("alu op {other:#x}"),
                    };
                    r[dst] = if class == BPF_ALU { u64::from(v as u32) } else { v };
                }
                BPF_JMP => {
                    let taken = match i.code & 0xf0 {
                        BPF_JA => true,
                        BPF_JEQ => r[dst] == i64::from(i.imm) as u64,
                        BPF_JNE => r[dst] != i64::from(i.imm) as u64,
                        BPF_EXIT => return r[0] as u32,
                        other => panic!("jump op {other:#x}"),
                    };
                    if taken {
                        pc = (pc as isize + isize::from(i.off)) as usize;
                    }
                }
                other => panic!("class {other:#x}"),
            }
        }
    }

    /// An IPv4 header of `ihl` words, then `l4` (zeroed fields but those given).
    fn ipv4(ihl: u8, protocol: u8, frag: u16, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(ihl) * 4];
        p[0] = 0x40 | ihl;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[6] = next;
        p[7] = 64;
        p[8..24].copy_from_slice(&src);
        p[24..40].copy_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn ports(src: u16, dst: u16, rest: &[u8]) -> Vec<u8> {
        [&src.to_be_bytes()[..], &dst.to_be_bytes(), rest].concat()
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const A6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn examples() -> Vec<Vec<u8>> {
        vec![
            ipv4(5, 17, 0x4000, A, B, &ports(40000, 53, b"payload")),
            ipv4(5, 6, 0, A, B, &ports(40000, 443, &[0; 16])),
            ipv4(7, 17, 0, A, B, &ports(40000, 53, b"behind options")),
            ipv4(5, 17, 0x2000, A, B, &ports(40000, 53, b"first fragment")),
            ipv4(5, 17, 0x0010, A, B, b"a later fragment"),
            ipv4(5, 1, 0, A, B, &[8, 0, 0, 0]),
            ipv4(5, 17, 0, A, B, &[0x9c]),
            ipv6(17, A6, B6, &ports(40000, 53, b"payload")),
            ipv6(6, A6, B6, &ports(40000, 443, &[0; 16])),
            ipv6(58, A6, B6, &[128, 0, 0, 0]),
            ipv6(44, A6, B6, &[17, 0, 0, 1, 0, 0, 0, 0]),
            ipv6(17, A6, B6, &[]),
            ipv4(5, 17, 0, A, B, &[])[..19].to_vec(),
            vec![0x45],
            vec![0x20, 0, 0, 0],
            vec![],
        ]
    }

    #[test]
    fn the_program_computes_flow_hash() {
        for (n, p) in examples().iter().enumerate() {
            assert_eq!(run(KEY, p), flow_hash(KEY, p), "example {n}: {p:02x?}");
            assert_eq!(run(!KEY, p), flow_hash(!KEY, p), "example {n}, another key");
        }
    }

    #[test]
    fn what_the_hash_covers() {
        let h = |p: Vec<u8>| flow_hash(KEY, &p);
        let udp = h(ipv4(5, 17, 0, A, B, &ports(40000, 53, b"x")));
        // Not the payload, TTL, DF or options: one flow, one hash.
        assert_eq!(h(ipv4(5, 17, 0x4000, A, B, &ports(40000, 53, b"other payload"))), udp);
        assert_eq!(h(ipv4(6, 17, 0, A, B, &ports(40000, 53, b"x"))), udp);
        // Each part of the 5-tuple.
        assert_ne!(h(ipv4(5, 17, 0, B, A, &ports(40000, 53, b"x"))), udp);
        assert_ne!(h(ipv4(5, 17, 0, A, [10, 0, 0, 3], &ports(40000, 53, b"x"))), udp);
        assert_ne!(h(ipv4(5, 6, 0, A, B, &ports(40000, 53, b"x"))), udp);
        assert_ne!(h(ipv4(5, 17, 0, A, B, &ports(40001, 53, b"x"))), udp);
        assert_ne!(h(ipv4(5, 17, 0, A, B, &ports(40000, 54, b"x"))), udp);
        // Fragments and other protocols: addresses and protocol only.
        let frag = h(ipv4(5, 17, 0x2000, A, B, &ports(40000, 53, b"x")));
        assert_eq!(h(ipv4(5, 17, 0x0010, A, B, b"anything")), frag);
        assert_eq!(h(ipv4(5, 1, 0, A, B, &ports(1, 2, b""))), h(ipv4(5, 1, 0, A, B, &ports(3, 4, b""))));
        let v6 = h(ipv6(17, A6, B6, &ports(40000, 53, b"x")));
        assert_ne!(h(ipv6(17, A6, B6, &ports(40001, 53, b"x"))), v6);
        assert_ne!(h(ipv6(17, B6, A6, &ports(40000, 53, b"x"))), v6);
        assert_eq!(h(ipv6(58, A6, B6, &[1, 2, 3, 4])), h(ipv6(58, A6, B6, &[5, 6, 7, 8])));
        // Too short for what it reads: 0.
        assert_eq!(h(ipv6(17, A6, B6, &[0, 1])), 0);
        // The key changes every hash.
        assert_ne!(flow_hash(KEY ^ 1, &ipv4(5, 17, 0, A, B, &ports(40000, 53, b"x"))), udp);
        assert_ne!(flow_hash(KEY ^ 1, &ipv6(17, A6, B6, &ports(40000, 53, b"x"))), v6);
    }

    #[test]
    fn random_keys_differ() {
        let keys: std::collections::HashSet<u32> = (0..8).map(|_| random_key().unwrap()).collect();
        assert!(keys.len() > 1, "{keys:?}");
    }

    #[test]
    fn flows_spread_evenly_over_any_queue_count() {
        for queues in [2u32, 3, 4, 8] {
            let mut count = vec![0u32; queues as usize];
            for port in 0..4096u16 {
                count[(flow_hash(KEY, &ipv4(5, 17, 0, A, B, &ports(32768 + port, 53, b""))) % queues) as usize] += 1;
            }
            let fair = 4096 / queues;
            for (q, &n) in count.iter().enumerate() {
                assert!(n > fair * 8 / 10 && n < fair * 12 / 10, "{queues} queues: queue {q} got {n} of 4096");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_program_computes_flow_hash_for_any_bytes(
            version in proptest::sample::select(vec![0x40u8, 0x60, 0x00]),
            low in 0u8..16,
            protocol in proptest::sample::select(vec![6u8, 17, 1, 58]),
            fragment in proptest::bool::ANY,
            key in proptest::num::u32::ANY,
            mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
        ) {
            if let Some(b) = bytes.first_mut() {
                *b = version | low;
            }
            // Where each version keeps its protocol; IPv4 unfragmented half the time.
            let at = if version == 0x60 { 6 } else { 9 };
            if let Some(b) = bytes.get_mut(at) {
                *b = protocol;
            }
            if version == 0x40 && !fragment && bytes.len() > 7 {
                bytes[6] &= 0xc0;
                bytes[7] = 0;
            }
            proptest::prop_assert_eq!(run(key, &bytes), flow_hash(key, &bytes));
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn the_kernel_verifier_accepts_the_program_and_its_reasons_name_a_bad_one() {
        if !is_root() {
            eprintln!("skipped: loading eBPF needs root");
            return;
        }
        load(random_key().unwrap()).expect("the verifier accepts the program");
        // r2 is never written before it is read.
        let e = load_program(&[mov32(R0, R2), exit()]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "the verifier's EACCES: {e}");
        let text = e.to_string();
        assert!(text.contains("TUN steering program") && text.contains("R2 !read_ok"), "{text}");
    }

    const BPF_PROG_TEST_RUN: libc::c_long = 10;

    /// The head of `union bpf_attr` for BPF_PROG_TEST_RUN.
    #[repr(C, align(8))]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
    }

    /// Runs the loaded program `repeat` times in the kernel on `packet` behind an Ethernet header
    /// (which the kernel strips, as none is there at the TUN hook); returns what it returned and
    /// the mean time per run in ns.
    fn kernel_run(prog: &OwnedFd, packet: &[u8], repeat: u32) -> (u32, u32) {
        use std::os::fd::AsRawFd;
        // The local-experimental ethertype: the program reads no protocol field, and the kernel
        // refuses an IPv4 ethertype on a packet shorter than an IPv4 header.
        let frame = [&[0u8; 12][..], &0x88b5u16.to_be_bytes(), packet].concat();
        let mut attr = TestRunAttr {
            prog_fd: prog.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ..TestRunAttr::default()
        };
        // SAFETY: BPF_PROG_TEST_RUN reads `attr` (size passed) and `data_size_in` bytes of the
        // frame, which outlive the call; no output buffer is given, so it writes only `attr`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        assert_eq!(rc, 0, "BPF_PROG_TEST_RUN on {} bytes: {}", packet.len(), io::Error::last_os_error());
        (attr.retval, attr.duration)
    }

    /// The kernel's own execution (JIT) agrees with `flow_hash`, on the examples and on a few
    /// thousand random IPv4/IPv6 headers.
    #[test]
    fn the_kernel_runs_the_program_as_flow_hash_says() {
        if !is_root() {
            eprintln!("skipped: loading eBPF needs root");
            return;
        }
        let prog = load(KEY).unwrap();
        for (n, p) in examples().iter().enumerate() {
            assert_eq!(kernel_run(&prog, p, 1).0, flow_hash(KEY, p), "example {n}: {p:02x?}");
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut random = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in 0..4000 {
            let mut p: Vec<u8> = (0..random() % 72).map(|_| random() as u8).collect();
            if let Some(b) = p.first_mut() {
                // IPv4 with IHL 5, 6 and 15; IPv6 with any traffic-class bits.
                *b = match n % 4 {
                    0 => 0x45,
                    1 => 0x46,
                    2 => 0x4f,
                    _ => 0x60 | (*b & 0x0f),
                };
            }
            let protocol = [6, 17, 1][n % 3];
            if let Some(b) = p.get_mut(if n % 4 == 3 { 6 } else { 9 }) {
                *b = protocol;
            }
            if n % 8 < 4 && n % 4 != 3 && p.len() > 7 {
                p[6] = 0x40;
                p[7] = 0;
            }
            assert_eq!(kernel_run(&prog, &p, 1).0, flow_hash(KEY, &p), "random packet {n}: {p:02x?}");
        }
        // A measurement, not a check: next to a program that does nothing, for the harness's share.
        let udp = &examples()[0];
        let nothing = load_program(&[mov32_imm(R0, 0), exit()]).unwrap();
        eprintln!(
            "per IPv4/UDP packet: the program {} ns, an empty one {} ns",
            kernel_run(&prog, udp, 1_000_000).1,
            kernel_run(&nothing, udp, 1_000_000).1
        );
    }

    /// Where the IPv6 path starts and where both paths meet, as the comments say.
    const V6: usize = 29;
    const FINISH: usize = 62;

    #[test]
    fn labels_point_where_the_comments_say() {
        assert_eq!(PROGRAM[KEY_AT], mov32_imm(R7, 0));
        assert_eq!(program(KEY)[KEY_AT], mov32_imm(R7, KEY));
        assert_eq!(PROGRAM[V6], ld_abs_w(8));
        assert_eq!(PROGRAM[FINISH], mov32(R2, R7));
        assert_eq!(PROGRAM.last(), Some(&exit()));
    }
}
