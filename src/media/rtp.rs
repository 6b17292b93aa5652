//! RFC 3550 RTP fixed-header parsing (zero-copy) and a small builder for tests, benches and
//! load generators.
//!
//! The parser refuses anything it cannot vouch for rather than guessing: a wrong version, a
//! buffer shorter than the header, CSRCs / header extension / padding that run past the end,
//! and a padding count of zero with the P bit set (RFC 3550 §5.1: the last octet counts
//! itself, so zero is impossible).

use std::fmt;

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Why a datagram is not a usable RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Fewer than the 12 bytes of the fixed header (or the CSRC list).
    TooShort(usize),
    /// Version field other than 2.
    Version(u8),
    /// The CSRC list runs past the end of the datagram.
    CsrcPastEnd,
    /// The header extension runs past the end of the datagram.
    ExtensionPastEnd,
    /// The P bit is set but the padding count is 0 or larger than what follows the header.
    BadPadding,
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtpError::TooShort(n) => write!(f, "RTP datagram too short ({n} bytes, need 12)"),
            RtpError::Version(v) => write!(f, "RTP version {v}, expected 2"),
            RtpError::CsrcPastEnd => f.write_str("RTP CSRC list runs past the end of the datagram"),
            RtpError::ExtensionPastEnd => {
                f.write_str("RTP header extension runs past the end of the datagram")
            }
            RtpError::BadPadding => f.write_str("RTP padding count is zero or past the header"),
        }
    }
}

impl std::error::Error for RtpError {}

/// Size of the fixed RTP header.
pub const HEADER_LEN: usize = 12;

/// Parses one datagram as RTP.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if buf.len() < HEADER_LEN {
        return Err(RtpError::TooShort(buf.len()));
    }
    let b0 = buf[0];
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let padding = b0 & 0x20 != 0;
    let extension = b0 & 0x10 != 0;
    let csrc_count = (b0 & 0x0F) as usize;
    let b1 = buf[1];
    let mut offset = HEADER_LEN + 4 * csrc_count;
    if offset > buf.len() {
        return Err(RtpError::CsrcPastEnd);
    }
    if extension {
        if offset + 4 > buf.len() {
            return Err(RtpError::ExtensionPastEnd);
        }
        let words = u16::from_be_bytes([buf[offset + 2], buf[offset + 3]]) as usize;
        offset += 4 + 4 * words;
        if offset > buf.len() {
            return Err(RtpError::ExtensionPastEnd);
        }
    }
    let mut end = buf.len();
    if padding {
        let pad = buf[end - 1] as usize;
        if pad == 0 || pad > end - offset {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    Ok(RtpPacket {
        marker: b1 & 0x80 != 0,
        payload_type: b1 & 0x7F,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload: &buf[offset..end],
    })
}

/// RFC 5761 §4: with RTP and RTCP multiplexed on one port, a second byte in 192..=223 is an
/// RTCP packet type (SR 200, RR 201, …); no RTP payload type we accept maps there.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Fields for [`build`]; a plain struct keeps call sites readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Writes a minimal RTP packet (no CSRC, extension or padding) into `out`, replacing its
/// contents; lets benches and load generators reuse one buffer.
pub fn build_into(h: &Header, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x80);
    out.push((h.payload_type & 0x7F) | if h.marker { 0x80 } else { 0 });
    out.extend_from_slice(&h.sequence.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Builds a minimal RTP packet.
pub fn build(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    build_into(h, payload, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hdr() -> Header {
        Header {
            marker: true,
            payload_type: 8,
            sequence: 0xBEEF,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x1234_5678,
        }
    }

    #[test]
    fn round_trip() {
        let pkt = build(&hdr(), &[1, 2, 3]);
        let p = parse(&pkt).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.sequence, 0xBEEF);
        assert_eq!(p.timestamp, 0xDEAD_BEEF);
        assert_eq!(p.ssrc, 0x1234_5678);
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn csrc_extension_and_padding() {
        let mut pkt = vec![0x80 | 0x20 | 0x10 | 2, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        pkt.extend_from_slice(&[0; 8]); // two CSRCs
        pkt.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // one-word extension
        pkt.extend_from_slice(&[7, 7]); // payload
        pkt.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let p = parse(&pkt).unwrap();
        assert_eq!(p.payload, &[7, 7]);
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort(11)));
        let mut pkt = build(&hdr(), &[1]);
        pkt[0] = 0x40;
        assert_eq!(parse(&pkt), Err(RtpError::Version(1)));
        let mut pkt = build(&hdr(), &[]);
        pkt[0] = 0x81;
        assert_eq!(parse(&pkt), Err(RtpError::CsrcPastEnd));
        let mut pkt = build(&hdr(), &[0xBE, 0xDE]);
        pkt[0] = 0x90;
        assert_eq!(parse(&pkt), Err(RtpError::ExtensionPastEnd));
        let mut pkt = build(&hdr(), &[0xBE, 0xDE, 0, 5, 1, 2, 3, 4]);
        pkt[0] = 0x90;
        assert_eq!(parse(&pkt), Err(RtpError::ExtensionPastEnd));
        let mut pkt = build(&hdr(), &[1, 2, 0]);
        pkt[0] = 0xA0;
        assert_eq!(parse(&pkt), Err(RtpError::BadPadding));
        let mut pkt = build(&hdr(), &[1, 2, 9]);
        pkt[0] = 0xA0;
        assert_eq!(parse(&pkt), Err(RtpError::BadPadding));
        // Padding that eats exactly the whole payload is legal.
        let mut pkt = build(&hdr(), &[1, 2, 3]);
        pkt[0] = 0xA0;
        assert_eq!(parse(&pkt).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn rtcp_detection() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201, 0, 7]));
        assert!(!is_rtcp(&[0x80, 0, 0, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 8]));
        assert!(!is_rtcp(&[0x80]));
    }

    proptest! {
        #[test]
        fn never_panics_and_payload_is_inside(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = parse(&buf) {
                prop_assert!(p.payload.len() + HEADER_LEN <= buf.len());
            }
            let _ = is_rtcp(&buf);
        }

        #[test]
        fn build_parse_identity(m in any::<bool>(), pt in 0u8..128, seq in any::<u16>(),
                                ts in any::<u32>(), ssrc in any::<u32>(),
                                payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let h = Header { marker: m, payload_type: pt, sequence: seq, timestamp: ts, ssrc };
            let pkt = build(&h, &payload);
            let p = parse(&pkt).unwrap();
            prop_assert_eq!(p, RtpPacket { marker: m, payload_type: pt, sequence: seq,
                timestamp: ts, ssrc, payload: &payload });
        }
    }
}
