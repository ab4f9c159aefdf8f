//! Free TCP ports on loopback addresses, so that tests (and their Envoys) run side by
//! side without fixed ports.
//!
//! Ports are taken from below Linux's ephemeral range (32768+), so an outgoing
//! connection cannot grab a port between the moment it is chosen here and the moment
//! the server binds it; each is checked by binding it, and never handed out twice by one
//! process. Different test processes start their search at different places.

use anyhow::{Result, bail};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

static HANDED_OUT: Mutex<Option<HashSet<SocketAddrV4>>> = Mutex::new(None);

/// A port on `ip` that nothing listens on now and that this process has not handed out.
pub fn free_addr(ip: Ipv4Addr) -> Result<SocketAddr> {
    let mut guard = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let handed_out = guard.get_or_insert_with(HashSet::new);
    let span = u32::from(LAST - FIRST);
    let start = search_start() % span;
    for i in 0..span {
        let port = FIRST + ((start + i) % span) as u16;
        let addr = SocketAddrV4::new(ip, port);
        if handed_out.contains(&addr) {
            continue;
        }
        if TcpListener::bind(addr).is_ok() {
            handed_out.insert(addr);
            return Ok(SocketAddr::V4(addr));
        }
    }
    bail!("no free TCP port on {ip} between {FIRST} and {LAST}")
}

/// A port that is free on every one of `ips` (e.g. a gateway's instances, which share
/// one port), handed out on each of them.
pub fn free_port_on_all(ips: &[Ipv4Addr]) -> Result<u16> {
    let Some((first, others)) = ips.split_first() else {
        bail!("no address to find a port on");
    };
    // A port free on the first address is almost always free on the others (nothing
    // else binds these loopback addresses); try a few before giving up.
    for _ in 0..100 {
        let port = free_addr(*first)?.port();
        let mut guard = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let handed_out = guard.get_or_insert_with(HashSet::new);
        let addrs: Vec<SocketAddrV4> = others
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, port))
            .collect();
        if addrs
            .iter()
            .all(|a| !handed_out.contains(a) && TcpListener::bind(a).is_ok())
        {
            handed_out.extend(addrs);
            return Ok(port);
        }
    }
    bail!("no TCP port free on all of {ips:?}")
}

/// Differs between processes (pid) and between runs (clock), so parallel test
/// processes do not probe the same ports in the same order.
fn search_start() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::process::id().wrapping_mul(7919) ^ nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_and_never_repeated() {
        let ip = Ipv4Addr::new(127, 0, 0, 1);
        let a = free_addr(ip).unwrap();
        let b = free_addr(ip).unwrap();
        assert_ne!(a, b);
        TcpListener::bind(a).unwrap();
        TcpListener::bind(b).unwrap();
    }

    #[test]
    fn a_shared_port_is_free_on_every_address() {
        let ips = [Ipv4Addr::new(127, 0, 9, 1), Ipv4Addr::new(127, 0, 9, 2)];
        let port = free_port_on_all(&ips).unwrap();
        for ip in ips {
            TcpListener::bind(SocketAddrV4::new(ip, port)).unwrap();
        }
        assert_ne!(free_port_on_all(&ips).unwrap(), port);
    }
}
