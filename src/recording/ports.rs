//! The RTP/RTCP port pool: even ports for RTP with the odd port above for RTCP (RFC 3550
//! §11), bound before the SDP answer names them.
//!
//! A port counts as free only when both binds succeed, so another program on the host (or a
//! recording whose sockets are still being closed) simply makes the pool move on to the next
//! pair. The cursor walks the range round-robin so a port just released is the last to be
//! reused: late packets of an old call do not land in a new one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};

use super::uas::PortSource;

/// The sockets of one stream.
#[derive(Debug)]
pub struct StreamSockets {
    pub port: u16,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

pub struct PortPool {
    ip: IpAddr,
    first: u16,
    /// Number of even ports in the range.
    pairs: u16,
    cursor: u16,
    in_use: HashSet<u16>,
    /// Bound, waiting for the media side to pick them up.
    bound: HashMap<u16, StreamSockets>,
    /// Receive buffer asked of the kernel per RTP socket: a recorder that stalls for a moment
    /// (a disk hiccup) must not lose what arrived meanwhile.
    rcvbuf: usize,
}

impl PortPool {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> PortPool {
        let first = min.next_multiple_of(2);
        let pairs = if first >= max {
            0
        } else {
            (max - first).div_ceil(2)
        };
        PortPool {
            ip,
            first,
            pairs,
            cursor: 0,
            in_use: HashSet::new(),
            bound: HashMap::new(),
            rcvbuf: 256 * 1024,
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    pub fn capacity(&self) -> usize {
        usize::from(self.pairs)
    }

    /// The sockets bound for `port` by [`PortSource::take`], handed over once.
    pub fn claim(&mut self, port: u16) -> Option<StreamSockets> {
        self.bound.remove(&port)
    }

    fn bind_pair(&self, port: u16) -> Option<StreamSockets> {
        let rtp = bind(SocketAddr::new(self.ip, port), self.rcvbuf).ok()?;
        let rtcp = bind(SocketAddr::new(self.ip, port.checked_add(1)?), 64 * 1024).ok()?;
        Some(StreamSockets { port, rtp, rtcp })
    }
}

fn bind(addr: SocketAddr, rcvbuf: usize) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(rcvbuf);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

impl PortSource for PortPool {
    fn take(&mut self, n: usize) -> Option<Vec<u16>> {
        let mut got = Vec::with_capacity(n);
        let mut tried = 0u16;
        while got.len() < n && tried < self.pairs {
            let port = self.first + 2 * self.cursor;
            self.cursor = (self.cursor + 1) % self.pairs.max(1);
            tried += 1;
            if self.in_use.contains(&port) {
                continue;
            }
            if let Some(s) = self.bind_pair(port) {
                self.in_use.insert(port);
                self.bound.insert(port, s);
                got.push(port);
            }
        }
        if got.len() < n {
            self.give_back(&got);
            return None;
        }
        Some(got)
    }

    fn give_back(&mut self, ports: &[u16]) {
        for p in ports {
            self.in_use.remove(p);
            // Sockets never claimed are closed here; claimed ones close with their session.
            self.bound.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_range(len: u16) -> (u16, u16) {
        // An ephemeral port tells us a region the kernel is not using right now; the pool
        // skips anything taken anyway.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port().clamp(20_000, 60_000);
        (base, base + len)
    }

    #[test]
    fn takes_even_pairs_and_skips_busy_ports() {
        let (lo, hi) = free_range(40);
        let mut pool = PortPool::new("127.0.0.1".parse().unwrap(), lo, hi);
        // Occupy the first even port's RTCP neighbour: that pair must be skipped.
        let first = lo.next_multiple_of(2);
        let _squatter = UdpSocket::bind(("127.0.0.1", first + 1));
        let ports = pool.take(3).expect("three pairs");
        for p in &ports {
            assert_eq!(p % 2, 0);
            assert!((lo..=hi).contains(p));
            let s = pool.claim(*p).unwrap();
            assert_eq!(s.rtp.local_addr().unwrap().port(), *p);
            assert_eq!(s.rtcp.local_addr().unwrap().port(), p + 1);
        }
        if _squatter.is_ok() {
            assert!(!ports.contains(&first));
        }
        assert_eq!(pool.in_use(), 3);
        pool.give_back(&ports);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn exhaustion_returns_none_and_keeps_nothing() {
        let (lo, hi) = free_range(4);
        let mut pool = PortPool::new("127.0.0.1".parse().unwrap(), lo, hi);
        let cap = pool.capacity();
        assert!(pool.take(cap + 1).is_none());
        assert_eq!(pool.in_use(), 0);
        let all = pool.take(1).unwrap();
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn empty_range_never_panics() {
        let mut pool = PortPool::new("127.0.0.1".parse().unwrap(), 40_001, 40_001);
        assert_eq!(pool.capacity(), 0);
        assert!(pool.take(1).is_none());
        assert_eq!(pool.take(0), Some(vec![]));
    }
}
