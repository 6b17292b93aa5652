//! RTP for the recording tests, built by hand so the tests do not trust the code they test:
//! G.711 encoders (ITU-T G.711, the classic segment/quantisation form), an RFC 3550 packet
//! builder, and classic libpcap files (magic 0xa1b2c3d4, link type 1 = Ethernet) of UDP/IPv4
//! packets, the format SIPp's `play_pcap_audio` replays, plus a reader for our own files and
//! for `rtp_load play-pcap`.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{self, Write};
use std::net::Ipv4Addr;

// ---- G.711 -------------------------------------------------------------------------------

/// Linear 16-bit to µ-law (G.711 §A, bias 0x84, clip 32635).
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + BIAS;
    // exponent = position of the highest set bit among bits 7..=14
    let mut exponent = 7;
    while exponent > 0 && s & (0x80 << exponent) == 0 {
        exponent -= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// µ-law to linear (for checking the encoder).
pub fn ulaw_decode(b: u8) -> i16 {
    let b = !b;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 7);
    let mantissa = i32::from(b & 0x0f);
    let mag = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -mag } else { mag }) as i16
}

/// Linear 16-bit to A-law (G.711 §A, even bits inverted with 0x55).
pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3; // 13-bit
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0
    };
    let s = s.min(0x0fff);
    let out = if s < 32 {
        (s >> 1) as u8
    } else {
        let seg = 31 - (s as u32).leading_zeros() - 4; // 1..=7
        ((seg << 4) as u8) | (((s >> seg) & 0x0f) as u8)
    };
    (out | sign) ^ 0x55
}

/// A-law to linear (for checking the encoder).
pub fn alaw_decode(b: u8) -> i16 {
    let b = b ^ 0x55;
    let sign = b & 0x80;
    let seg = i32::from((b >> 4) & 7);
    let mant = i32::from(b & 0x0f);
    let mag = if seg == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (seg - 1)
    };
    (if sign != 0 { mag } else { -mag }) as i16
}

// ---- RTP ---------------------------------------------------------------------------------

/// A 12-byte RTP header (V=2, no padding/extension/CSRC) followed by `payload`.
pub fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push((pt & 0x7f) | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Static payload types.
pub const PT_PCMU: u8 = 0;
pub const PT_PCMA: u8 = 8;

/// Splits 8 kHz `samples` into 20 ms G.711 RTP packets (160 samples; the last is padded with
/// silence): returns (packets, payload_type).
pub fn g711_packets(samples: &[i16], alaw: bool, ssrc: u32, seq0: u16, ts0: u32) -> Vec<Vec<u8>> {
    samples
        .chunks(160)
        .enumerate()
        .map(|(i, chunk)| {
            let mut payload: Vec<u8> = chunk
                .iter()
                .map(|&s| if alaw { alaw_encode(s) } else { ulaw_encode(s) })
                .collect();
            let silence = if alaw { alaw_encode(0) } else { ulaw_encode(0) };
            payload.resize(160, silence);
            rtp_packet(
                if alaw { PT_PCMA } else { PT_PCMU },
                i == 0,
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(160 * i as u32),
                ssrc,
                &payload,
            )
        })
        .collect()
}

// ---- pcap --------------------------------------------------------------------------------

/// One UDP datagram with its capture time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpRecord {
    pub ts_us: u64,
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub payload: Vec<u8>,
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in header.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes a classic pcap (microsecond timestamps, Ethernet link type) holding `records`
/// as Ethernet/IPv4/UDP frames (UDP checksum 0 = not computed, valid for IPv4).
pub fn write_pcap(out: &mut impl Write, records: &[UdpRecord]) -> io::Result<()> {
    // global header
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&0i32.to_le_bytes())?; // thiszone
    out.write_all(&0u32.to_le_bytes())?; // sigfigs
    out.write_all(&65535u32.to_le_bytes())?; // snaplen
    out.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
    for (i, r) in records.iter().enumerate() {
        let udp_len = 8 + r.payload.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC (locally administered)
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&r.src.0.octets());
        ip[16..20].copy_from_slice(&r.dst.0.octets());
        let c = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&r.src.1.to_be_bytes());
        frame.extend_from_slice(&r.dst.1.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(&r.payload);
        out.write_all(&((r.ts_us / 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&((r.ts_us % 1_000_000) as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&frame)?;
    }
    Ok(())
}

/// A pcap of 20 ms-paced RTP `packets` from `src` to `dst`, starting at `t0_us`.
pub fn rtp_pcap(packets: &[Vec<u8>], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let t0_us = 1_700_000_000_000_000u64;
    let records: Vec<UdpRecord> = packets
        .iter()
        .enumerate()
        .map(|(i, p)| UdpRecord {
            ts_us: t0_us + 20_000 * i as u64,
            src,
            dst,
            payload: p.clone(),
        })
        .collect();
    let mut out = Vec::new();
    write_pcap(&mut out, &records).expect("write to Vec");
    out
}

/// Reads the UDP/IPv4 records of a classic pcap (either byte order, micro- or nanosecond
/// timestamps; Ethernet, Linux cooked (113) or raw IPv4 (101/228) link types). Other frames
/// are skipped.
pub fn read_pcap(data: &[u8]) -> Result<Vec<UdpRecord>, String> {
    if data.len() < 24 {
        return Err("pcap: shorter than its global header".into());
    }
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => return Err(format!("pcap: bad magic {m:#x}")),
    };
    let u32_at = |b: &[u8], o: usize| -> u32 {
        let a: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(data, 20);
    let mut off = 24;
    let mut out = Vec::new();
    while off + 16 <= data.len() {
        let sec = u64::from(u32_at(data, off));
        let frac = u64::from(u32_at(data, off + 4));
        let incl = u32_at(data, off + 8) as usize;
        off += 16;
        if off + incl > data.len() {
            return Err(format!("pcap: record at {off} runs past the end"));
        }
        let frame = &data[off..off + incl];
        off += incl;
        let ts_us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        let ip = match link {
            1 if frame.len() >= 14 && frame[12..14] == [0x08, 0x00] => &frame[14..],
            113 if frame.len() >= 16 && frame[14..16] == [0x08, 0x00] => &frame[16..],
            101 | 228 => frame,
            _ => continue,
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        if udp_len < 8 || udp_len > udp.len() {
            continue;
        }
        out.push(UdpRecord {
            ts_us,
            src: (
                Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
                u16::from_be_bytes([udp[0], udp[1]]),
            ),
            dst: (
                Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
                u16::from_be_bytes([udp[2], udp[3]]),
            ),
            payload: udp[8..udp_len].to_vec(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_round_trips_within_quantisation() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let u = ulaw_decode(ulaw_encode(s));
            let a = alaw_decode(alaw_encode(s));
            let tol = (i32::from(s).abs() / 16).max(16) + 8;
            assert!(
                (i32::from(u) - i32::from(s)).abs() <= tol.max(140),
                "ulaw {s} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(s)).abs() <= tol.max(140),
                "alaw {s} -> {a}"
            );
        }
        // well-known code points
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(alaw_decode(0xd5), 8);
    }

    #[test]
    fn pcap_round_trips() {
        let pkts = g711_packets(&[1000i16; 800], false, 0x1234, 7, 1000);
        assert_eq!(pkts.len(), 5);
        let bytes = rtp_pcap(
            &pkts,
            (Ipv4Addr::new(127, 0, 0, 1), 6000),
            (Ipv4Addr::new(127, 0, 0, 1), 7000),
        );
        let recs = read_pcap(&bytes).unwrap();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[1].ts_us - recs[0].ts_us, 20_000);
        assert_eq!(recs[2].payload, pkts[2]);
        assert_eq!(recs[0].dst.1, 7000);
        assert_eq!(
            u16::from_be_bytes([recs[3].payload[2], recs[3].payload[3]]),
            10
        );
    }
}
