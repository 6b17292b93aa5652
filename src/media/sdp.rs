//! SDP offer parsing (RFC 4566) and answer building (RFC 3264) for a recording server.
//!
//! A recorder only receives, so the answer is simple: one codec per accepted audio line plus
//! telephone-event, `recvonly`, and port 0 for anything we cannot take. The parser is strict
//! about shape and numeric ranges because offers come from the network: everything it cannot
//! read is an `Err` with the line number, never a panic, and sizes are bounded before any work.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::media::codec::Codec;

/// Bounds applied before and while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_media: usize,
    pub max_formats: usize,
    /// Total `a=` lines (session and media), so a body under `max_bytes` cannot still make us
    /// allocate thousands of small strings.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 * 1024,
            max_media: 16,
            max_formats: 64,
            max_attributes: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body is {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("SDP body is not UTF-8")]
    NotUtf8,
    #[error("SDP body is empty")]
    Empty,
    #[error("SDP must start with v=0")]
    MissingVersion,
    #[error("SDP has no o= line")]
    MissingOrigin,
    #[error("SDP m= line {media} has no c= at media or session level")]
    MissingConnection { media: usize },
    #[error("SDP has more than {max} m= lines")]
    TooManyMedia { max: usize },
    #[error("SDP line {line} lists more than {max} formats")]
    TooManyFormats { line: usize, max: usize },
    #[error("SDP has more than {max} a= lines")]
    TooManyAttributes { max: usize },
    #[error("SDP line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("SDP offer has no audio stream we can record")]
    NotAcceptable,
}

fn malformed(line: usize, reason: impl Into<String>) -> SdpError {
    SdpError::Malformed {
        line,
        reason: reason.into(),
    }
}

/// Media direction attribute (RFC 4566 §6; RFC 3264 §6.1 for how the answer mirrors it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn as_attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// The o= line. Session id and version are kept as text: RFC 4566 wants digits, but we only
/// ever echo or compare them, and many stacks put other tokens there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub session_version: String,
    pub address: String,
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaOffer {
    /// "audio", "video", "application", ... as offered.
    pub kind: String,
    pub port: u16,
    pub proto: String,
    /// Media-level c= (session-level is in [`Offer::connection`]).
    pub connection: Option<IpAddr>,
    /// Format tokens exactly as offered, so rejected non-RTP lines can be echoed.
    pub format_tokens: Vec<String>,
    /// Payload types, only for RTP profiles (empty otherwise).
    pub formats: Vec<u8>,
    pub rtpmap: Vec<RtpMap>,
    pub fmtp: Vec<(u8, String)>,
    /// Media-level direction, or the session-level one, or sendrecv (RFC 4566 §6 default).
    pub direction: Direction,
    pub label: Option<String>,
    pub ptime: Option<u32>,
    /// `a=rtcp:<port>` (RFC 3605); the address part, if any, is ignored.
    pub rtcp_port: Option<u16>,
    pub rtcp_mux: bool,
}

impl MediaOffer {
    /// Effective connection address: media level, else session level.
    pub fn address(&self, offer: &Offer) -> Option<IpAddr> {
        self.connection.or(offer.connection)
    }

    fn rtpmap_for(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmap.iter().find(|m| m.pt == pt)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub origin: Origin,
    pub session_name: Option<String>,
    pub connection: Option<IpAddr>,
    pub media: Vec<MediaOffer>,
}

/// Parses an SDP offer. Accepts CRLF or bare LF line ends.
pub fn parse_offer(body: &[u8], limits: &Limits) -> Result<Offer, SdpError> {
    if body.len() > limits.max_bytes {
        return Err(SdpError::TooLarge {
            len: body.len(),
            max: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(SdpError::Empty);
    }

    let mut origin = None;
    let mut session_name = None;
    let mut connection = None;
    let mut session_direction = None;
    let mut media: Vec<MediaOffer> = Vec::new();
    // Direction seen on the current m= section, applied after the section ends so the
    // session-level default can fill it in.
    let mut media_direction: Vec<Option<Direction>> = Vec::new();
    let mut attributes = 0usize;
    let mut saw_version = false;

    for (index, raw) in text.split('\n').enumerate() {
        let line_no = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            // Trailing or doubled line ends are common from hand-built SIP stacks; harmless.
            continue;
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(malformed(line_no, "control character in line"));
        }
        let mut chars = line.chars();
        let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
            return Err(malformed(line_no, "expected <letter>=<value>"));
        };
        if !kind.is_ascii_lowercase() {
            return Err(malformed(line_no, "type is not a lower-case letter"));
        }
        let value = &line[2..];
        if !saw_version {
            if kind != 'v' {
                return Err(SdpError::MissingVersion);
            }
            if value != "0" {
                return Err(malformed(line_no, format!("unsupported version {value:?}")));
            }
            saw_version = true;
            continue;
        }
        match kind {
            'v' => return Err(malformed(line_no, "second v= line")),
            'o' => {
                if origin.is_some() || !media.is_empty() {
                    return Err(malformed(line_no, "o= repeated or after m="));
                }
                origin = Some(parse_origin(value, line_no)?);
            }
            's' if media.is_empty() => session_name = Some(value.to_string()),
            'c' => {
                let addr = parse_connection(value, line_no)?;
                match media.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => connection = Some(addr),
                }
            }
            'm' => {
                if media.len() >= limits.max_media {
                    return Err(SdpError::TooManyMedia {
                        max: limits.max_media,
                    });
                }
                media.push(parse_media(value, line_no, limits)?);
                media_direction.push(None);
            }
            'a' => {
                attributes += 1;
                if attributes > limits.max_attributes {
                    return Err(SdpError::TooManyAttributes {
                        max: limits.max_attributes,
                    });
                }
                let (name, arg) = match value.split_once(':') {
                    Some((n, a)) => (n, Some(a)),
                    None => (value, None),
                };
                let direction = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (media.last_mut(), media_direction.last_mut()) {
                    (Some(m), Some(dir)) => {
                        if let Some(d) = direction {
                            *dir = Some(d);
                        } else {
                            media_attribute(m, name, arg, line_no, limits)?;
                        }
                    }
                    _ => {
                        if direction.is_some() {
                            session_direction = direction;
                        }
                        // Other session-level attributes do not concern a recorder.
                    }
                }
            }
            // t, b, i, u, e, p, z, k, r and unknown letters: nothing a recorder needs.
            _ => {}
        }
    }

    if !saw_version {
        return Err(SdpError::MissingVersion);
    }
    let origin = origin.ok_or(SdpError::MissingOrigin)?;
    for (i, (m, dir)) in media.iter_mut().zip(media_direction).enumerate() {
        m.direction = dir.or(session_direction).unwrap_or(Direction::SendRecv);
        // A disabled line (port 0) needs no address; every live one does (RFC 4566 §5.7).
        if m.port != 0 && m.connection.is_none() && connection.is_none() {
            return Err(SdpError::MissingConnection { media: i });
        }
    }
    Ok(Offer {
        origin,
        session_name,
        connection,
        media,
    })
}

fn parse_origin(value: &str, line: usize) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split(' ').collect();
    let [username, session_id, session_version, nettype, _addrtype, address] = fields[..] else {
        return Err(malformed(line, "o= needs six fields"));
    };
    if nettype != "IN" || fields.iter().any(|f| f.is_empty()) {
        return Err(malformed(
            line,
            "o= is not `<user> <id> <version> IN <type> <addr>`",
        ));
    }
    Ok(Origin {
        username: username.to_string(),
        session_id: session_id.to_string(),
        session_version: session_version.to_string(),
        address: address.to_string(),
    })
}

/// `c=IN IP4 <addr>[/ttl[/count]]` or `c=IN IP6 <addr>[/count]`. Host names are refused: we
/// need an address to send RTCP to and to check RTP sources against, and resolving names in
/// the signalling path is not something an edge recorder should do.
fn parse_connection(value: &str, line: usize) -> Result<IpAddr, SdpError> {
    let fields: Vec<&str> = value.split(' ').collect();
    let [nettype, addrtype, address] = fields[..] else {
        return Err(malformed(line, "c= needs three fields"));
    };
    if nettype != "IN" {
        return Err(malformed(
            line,
            format!("c= network type {nettype:?} is not IN"),
        ));
    }
    let host = address.split('/').next().unwrap_or(address);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| malformed(line, format!("c= address {host:?} is not an IP literal")))?;
    match (addrtype, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(malformed(
            line,
            format!("c= address type {addrtype:?} does not match {host:?}"),
        )),
    }
}

fn parse_media(value: &str, line: usize, limits: &Limits) -> Result<MediaOffer, SdpError> {
    let mut fields = value.split(' ');
    let (Some(kind), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed(line, "m= needs <media> <port> <proto> <fmt>..."));
    };
    if kind.is_empty() || proto.is_empty() {
        return Err(malformed(line, "m= has an empty media or proto field"));
    }
    // `<port>/<count>` (RFC 4566 §5.14); the count is meaningless for unicast RTP.
    let port_text = port.split_once('/').map_or(port, |(p, _)| p);
    let port = parse_decimal::<u16>(port_text)
        .ok_or_else(|| malformed(line, format!("m= port {port:?} is not 0..=65535")))?;
    let mut format_tokens = Vec::new();
    for token in fields {
        if token.is_empty() {
            return Err(malformed(line, "m= has an empty format"));
        }
        if format_tokens.len() >= limits.max_formats {
            return Err(SdpError::TooManyFormats {
                line,
                max: limits.max_formats,
            });
        }
        format_tokens.push(token.to_string());
    }
    if format_tokens.is_empty() {
        return Err(malformed(line, "m= lists no formats"));
    }
    let mut formats = Vec::new();
    if proto.starts_with("RTP/") {
        for token in &format_tokens {
            formats.push(parse_pt(token).ok_or_else(|| {
                malformed(line, format!("payload type {token:?} is not 0..=127"))
            })?);
        }
    }
    Ok(MediaOffer {
        kind: kind.to_string(),
        port,
        proto: proto.to_string(),
        connection: None,
        format_tokens,
        formats,
        rtpmap: Vec::new(),
        fmtp: Vec::new(),
        direction: Direction::SendRecv,
        label: None,
        ptime: None,
        rtcp_port: None,
        rtcp_mux: false,
    })
}

fn media_attribute(
    m: &mut MediaOffer,
    name: &str,
    arg: Option<&str>,
    line: usize,
    limits: &Limits,
) -> Result<(), SdpError> {
    let need = |what: &str| malformed(line, format!("a={name} needs {what}"));
    match name {
        "rtpmap" => {
            let arg = arg.ok_or_else(|| need("a value"))?;
            let (pt, rest) = arg
                .split_once(' ')
                .ok_or_else(|| need("`<pt> <enc>/<rate>`"))?;
            let pt =
                parse_pt(pt).ok_or_else(|| malformed(line, format!("rtpmap PT {pt:?} invalid")))?;
            let mut parts = rest.trim().split('/');
            let encoding = parts.next().unwrap_or("");
            let rate = parts.next().and_then(parse_decimal::<u32>);
            let channels = match parts.next() {
                None => Some(1),
                Some(c) => parse_decimal::<u8>(c),
            };
            let (Some(clock_rate @ 1..), Some(channels @ 1..)) = (rate, channels) else {
                return Err(malformed(line, "rtpmap clock rate or channels invalid"));
            };
            if encoding.is_empty() || parts.next().is_some() {
                return Err(malformed(line, "rtpmap is not `<enc>/<rate>[/<ch>]`"));
            }
            if m.rtpmap.len() >= limits.max_formats {
                return Err(SdpError::TooManyFormats {
                    line,
                    max: limits.max_formats,
                });
            }
            // First mapping wins; a repeat must not silently change what we decode.
            if m.rtpmap_for(pt).is_none() {
                m.rtpmap.push(RtpMap {
                    pt,
                    encoding: encoding.to_string(),
                    clock_rate,
                    channels,
                });
            }
        }
        "fmtp" => {
            let arg = arg.ok_or_else(|| need("a value"))?;
            let (pt, params) = arg.split_once(' ').unwrap_or((arg, ""));
            // Non-RTP lines use fmtp with non-numeric formats (e.g. BFCP); keep only RTP ones.
            if let Some(pt) = parse_pt(pt) {
                if m.fmtp.len() >= limits.max_formats {
                    return Err(SdpError::TooManyFormats {
                        line,
                        max: limits.max_formats,
                    });
                }
                m.fmtp.push((pt, params.trim().to_string()));
            }
        }
        "ptime" => {
            let arg = arg.ok_or_else(|| need("a value"))?;
            // Some stacks write "20.0"; the integer part is what matters.
            let whole = arg.trim().split('.').next().unwrap_or("");
            match parse_decimal::<u32>(whole) {
                Some(p @ 1..=10_000) => m.ptime = Some(p),
                _ => return Err(malformed(line, format!("ptime {arg:?} not 1..=10000"))),
            }
        }
        "label" => {
            let arg = arg.ok_or_else(|| need("a value"))?;
            if arg.is_empty() || arg.contains(' ') {
                return Err(malformed(line, "label must be one non-empty token"));
            }
            m.label = Some(arg.to_string());
        }
        "rtcp" => {
            let arg = arg.ok_or_else(|| need("a port"))?;
            let port = arg.split(' ').next().unwrap_or("");
            m.rtcp_port = Some(
                parse_decimal::<u16>(port)
                    .ok_or_else(|| malformed(line, format!("rtcp port {port:?} invalid")))?,
            );
        }
        "rtcp-mux" => m.rtcp_mux = true,
        _ => {}
    }
    Ok(())
}

/// Plain decimal digits only: `str::parse` would also take a leading '+'.
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_pt(s: &str) -> Option<u8> {
    parse_decimal::<u8>(s).filter(|pt| *pt <= 127)
}

/// One accepted m= line, as the media layer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedStream {
    /// Index of the m= line in the offer (and the answer).
    pub index: usize,
    pub codec: Codec,
    /// Payload type → codec for the stream's decoder (the chosen codec's PT).
    pub codec_pt: Vec<(u8, Codec)>,
    pub dtmf_pt: Option<u8>,
    pub label: Option<String>,
    pub local_port: u16,
    /// Where the offerer sends from / expects RTCP; `None` for an unspecified (0.0.0.0 hold)
    /// address.
    pub remote: Option<SocketAddr>,
    pub rtcp_mux: bool,
    pub ptime: Option<u32>,
    /// Direction we answered (recvonly, or inactive when the offerer does not send).
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub sdp: String,
    /// One entry per offered m= line: `None` where the answer has port 0.
    pub streams: Vec<Option<AcceptedStream>>,
}

/// What [`answer`] would do with each m= line: `Some(codec)` when it can accept the line
/// (so the caller knows which lines need a local port), `None` when it will reject it.
pub fn acceptable(offer: &Offer, opus: bool) -> Vec<Option<Codec>> {
    offer
        .media
        .iter()
        .map(|m| choose(m, opus).map(|(_, codec)| codec))
        .collect()
}

/// Builds the RFC 3264 answer. `ports[i]` is our local RTP port for m= line `i`; a line
/// without a (non-zero) port, with a non-audio or SRTP proto, or with no supported codec is
/// rejected with port 0. Errors with [`SdpError::NotAcceptable`] when nothing is accepted
/// (the caller answers 488).
pub fn answer(
    offer: &Offer,
    local_ip: IpAddr,
    ports: &[u16],
    session_id: u64,
    version: u64,
    opus: bool,
) -> Result<Answer, SdpError> {
    let ip_type = match local_ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut sdp = String::with_capacity(256 + 160 * offer.media.len());
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        sdp,
        "v=0\r\no=gridedge {session_id} {version} IN {ip_type} {local_ip}\r\ns=gridedge\r\n\
         c=IN {ip_type} {local_ip}\r\nt=0 0\r\n"
    );
    let mut streams = Vec::with_capacity(offer.media.len());
    for (index, m) in offer.media.iter().enumerate() {
        let local_port = ports.get(index).copied().unwrap_or(0);
        let chosen = if local_port == 0 {
            None
        } else {
            choose(m, opus)
        };
        let Some((pt, codec)) = chosen else {
            // RFC 3264 §6: a rejected stream keeps its line, port 0, and at least one format.
            let _ = write!(
                sdp,
                "m={} 0 {} {}\r\n",
                m.kind,
                m.proto,
                m.format_tokens.join(" ")
            );
            streams.push(None);
            continue;
        };
        let dtmf_pt = telephone_event(m, codec.clock_rate());
        let _ = write!(sdp, "m=audio {local_port} {} {pt}", m.proto);
        if let Some(d) = dtmf_pt {
            let _ = write!(sdp, " {d}");
        }
        sdp.push_str("\r\n");
        let channels = if codec == Codec::Opus { "/2" } else { "" };
        let _ = write!(
            sdp,
            "a=rtpmap:{pt} {}/{}{channels}\r\n",
            codec.name(),
            codec.clock_rate()
        );
        if let Some(d) = dtmf_pt {
            let _ = write!(
                sdp,
                "a=rtpmap:{d} telephone-event/{}\r\n",
                codec.clock_rate()
            );
            let events = m
                .fmtp
                .iter()
                .find(|(p, _)| *p == d)
                .map(|(_, f)| f.as_str())
                .filter(|f| !f.is_empty())
                .unwrap_or("0-15");
            let _ = write!(sdp, "a=fmtp:{d} {events}\r\n");
        }
        if let Some(label) = &m.label {
            let _ = write!(sdp, "a=label:{label}\r\n");
        }
        if m.rtcp_mux {
            sdp.push_str("a=rtcp-mux\r\n");
        } else if let Some(rtcp) = local_port.checked_add(1) {
            let _ = write!(sdp, "a=rtcp:{rtcp}\r\n");
        }
        let direction = match m.direction {
            Direction::SendRecv | Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        };
        let _ = write!(sdp, "a={}\r\n", direction.as_attr());
        let remote = m
            .address(offer)
            .filter(|ip| !ip.is_unspecified() && m.port != 0)
            .map(|ip| SocketAddr::new(ip, m.port));
        streams.push(Some(AcceptedStream {
            index,
            codec,
            codec_pt: vec![(pt, codec)],
            dtmf_pt,
            label: m.label.clone(),
            local_port,
            remote,
            rtcp_mux: m.rtcp_mux,
            ptime: m.ptime,
            direction,
        }));
    }
    if streams.iter().all(Option::is_none) {
        return Err(SdpError::NotAcceptable);
    }
    Ok(Answer { sdp, streams })
}

/// First offered format (offerer's preference order, RFC 3264 §6.1) that we decode.
fn choose(m: &MediaOffer, opus: bool) -> Option<(u8, Codec)> {
    // SAVP/SAVPF would need SDES/DTLS keying we do not do; only plain AVP and AVPF.
    if m.kind != "audio" || m.port == 0 || !matches!(m.proto.as_str(), "RTP/AVP" | "RTP/AVPF") {
        return None;
    }
    m.formats.iter().find_map(|&pt| {
        let codec = match m.rtpmap_for(pt) {
            Some(map) => codec_for(map, opus)?,
            // Static assignments (RFC 3551 table 4) need no rtpmap.
            None => match pt {
                0 => Codec::Pcmu,
                8 => Codec::Pcma,
                9 => Codec::G722,
                _ => return None,
            },
        };
        Some((pt, codec))
    })
}

fn codec_for(map: &RtpMap, opus: bool) -> Option<Codec> {
    let name = map.encoding.to_ascii_lowercase();
    match (name.as_str(), map.clock_rate, map.channels) {
        ("pcmu", 8000, 1) => Some(Codec::Pcmu),
        ("pcma", 8000, 1) => Some(Codec::Pcma),
        ("g722", 8000, 1) => Some(Codec::G722),
        // RFC 7587 §7: always opus/48000/2, whatever is actually sent.
        ("opus", 48000, 2) if opus => Some(Codec::Opus),
        _ => None,
    }
}

/// The offered telephone-event PT whose clock matches the audio codec (RFC 4733 §2.1: the
/// event clock is the audio clock, otherwise durations would be mis-scaled).
fn telephone_event(m: &MediaOffer, clock: u32) -> Option<u8> {
    m.formats.iter().copied().find(|&pt| {
        m.rtpmap_for(pt).is_some_and(|map| {
            map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == clock
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    fn parse(s: &str) -> Result<Offer, SdpError> {
        parse_offer(s.as_bytes(), &Limits::default())
    }

    fn ok(s: &str) -> Offer {
        match parse(s) {
            Ok(o) => o,
            Err(e) => panic!("offer refused: {e}\n{s}"),
        }
    }

    fn answer_all(offer: &Offer, opus: bool) -> Result<Answer, SdpError> {
        let ports: Vec<u16> = (0..offer.media.len())
            .map(|i| 30000 + 2 * i as u16)
            .collect();
        answer(offer, LOCAL, &ports, 42, 1, opus)
    }

    /// RFC 3264 §10.1 offer (audio PCMU + video), written out with LF endings.
    const RFC3264_OFFER: &str = "v=0\n\
        o=carol 28908764872 28908764872 IN IP4 100.3.6.6\n\
        s=-\n\
        t=0 0\n\
        c=IN IP4 192.0.2.4\n\
        m=audio 0 RTP/AVP 0 1 3\n\
        a=rtpmap:0 PCMU/8000\n\
        a=rtpmap:1 1016/8000\n\
        a=rtpmap:3 GSM/8000\n\
        m=video 0 RTP/AVP 31 34\n\
        a=rtpmap:31 H261/90000\n\
        a=rtpmap:34 H263/90000\n";

    /// RFC 3264 §10.1, first example: Alice offers two audio lines and video.
    const RFC3264_ALICE: &str = "v=0\r\n\
        o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n\
        s=\r\n\
        c=IN IP4 192.0.2.1\r\n\
        t=0 0\r\n\
        m=audio 49170 RTP/AVP 0 8 97\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:97 iLBC/8000\r\n\
        m=video 51372 RTP/AVP 31 32\r\n\
        a=rtpmap:31 H261/90000\r\n\
        a=rtpmap:32 MPV/90000\r\n";

    /// Shape of a SIPREC SRC offer (RFC 7866 §8.1.1 style): two sendonly labelled streams.
    const SIPREC_OFFER: &str = "v=0\r\n\
        o=SRC 2890844526 2890844526 IN IP4 198.51.100.1\r\n\
        s=-\r\n\
        c=IN IP4 198.51.100.1\r\n\
        t=0 0\r\n\
        m=audio 12240 RTP/AVP 0 4 8\r\n\
        a=sendonly\r\n\
        a=label:1\r\n\
        m=audio 12242 RTP/AVP 0 4 8\r\n\
        a=sendonly\r\n\
        a=label:2\r\n";

    /// FreeSWITCH-like offer: several codecs, telephone-event/8000 and /48000, ptime, rtcp.
    const FREESWITCH_OFFER: &str = "v=0\r\n\
        o=FreeSWITCH 1700000000 1700000001 IN IP4 10.0.0.5\r\n\
        s=FreeSWITCH\r\n\
        c=IN IP4 10.0.0.5\r\n\
        t=0 0\r\n\
        m=audio 24566 RTP/AVP 102 9 0 8 103 101 13\r\n\
        a=rtpmap:102 opus/48000/2\r\n\
        a=fmtp:102 useinbandfec=1; maxplaybackrate=16000\r\n\
        a=rtpmap:9 G722/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:103 telephone-event/48000\r\n\
        a=fmtp:103 0-16\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=rtpmap:13 CN/8000\r\n\
        a=ptime:20\r\n\
        a=sendrecv\r\n\
        a=rtcp:24567 IN IP4 10.0.0.5\r\n";

    #[test]
    fn rfc3264_alice_audio_accepted_video_rejected() {
        let offer = ok(RFC3264_ALICE);
        assert_eq!(offer.origin.username, "alice");
        assert_eq!(offer.media.len(), 2);
        assert_eq!(offer.media[0].formats, vec![0, 8, 97]);
        let a = answer_all(&offer, false).unwrap();
        let lines: Vec<&str> = a.sdp.lines().collect();
        assert!(lines.contains(&"m=audio 30000 RTP/AVP 0"), "{}", a.sdp);
        assert!(lines.contains(&"m=video 0 RTP/AVP 31 32"), "{}", a.sdp);
        assert!(lines.contains(&"a=recvonly"));
        assert!(lines.contains(&"a=rtcp:30001"));
        assert!(lines.contains(&"o=gridedge 42 1 IN IP4 192.0.2.10"));
        assert!(lines.contains(&"c=IN IP4 192.0.2.10"));
        let s = a.streams[0].as_ref().unwrap();
        assert_eq!(s.codec_pt, vec![(0, Codec::Pcmu)]);
        assert_eq!(s.remote, Some("192.0.2.1:49170".parse().unwrap()));
        assert_eq!(s.dtmf_pt, None);
        assert!(a.streams[1].is_none());
        // Same number of m= lines in the same order.
        let kinds: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("m="))
            .copied()
            .collect();
        assert_eq!(kinds.len(), 2);
        assert!(kinds[0].starts_with("m=audio") && kinds[1].starts_with("m=video"));
    }

    #[test]
    fn rfc3264_disabled_lines_parse_and_are_not_acceptable() {
        let offer = ok(RFC3264_OFFER);
        assert_eq!(offer.media[0].port, 0);
        assert_eq!(answer_all(&offer, false), Err(SdpError::NotAcceptable));
    }

    #[test]
    fn siprec_two_sendonly_streams() {
        let offer = ok(SIPREC_OFFER);
        let a = answer_all(&offer, false).unwrap();
        let s: Vec<&AcceptedStream> = a.streams.iter().flatten().collect();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label.as_deref(), Some("1"));
        assert_eq!(s[1].label.as_deref(), Some("2"));
        assert_eq!(s[1].remote, Some("198.51.100.1:12242".parse().unwrap()));
        assert_eq!(a.sdp.matches("a=recvonly").count(), 2);
        assert!(a.sdp.contains("a=label:1\r\n") && a.sdp.contains("a=label:2\r\n"));
        assert!(a.sdp.contains("m=audio 30002 RTP/AVP 0\r\n"));
    }

    #[test]
    fn freeswitch_prefers_offer_order_and_matching_telephone_event() {
        let offer = ok(FREESWITCH_OFFER);
        let m = &offer.media[0];
        assert_eq!(m.ptime, Some(20));
        assert_eq!(m.rtcp_port, Some(24567));
        assert_eq!(m.direction, Direction::SendRecv);
        let a = answer_all(&offer, true).unwrap();
        let s = a.streams[0].as_ref().unwrap();
        assert_eq!(s.codec_pt, vec![(102, Codec::Opus)]);
        assert_eq!(s.dtmf_pt, Some(103));
        assert!(
            a.sdp.contains("m=audio 30000 RTP/AVP 102 103\r\n"),
            "{}",
            a.sdp
        );
        assert!(a.sdp.contains("a=rtpmap:102 opus/48000/2\r\n"));
        assert!(a.sdp.contains("a=rtpmap:103 telephone-event/48000\r\n"));
        assert!(a.sdp.contains("a=fmtp:103 0-16\r\n"));
        // Without Opus, the next in the offerer's order is G.722 with te/8000.
        let a = answer_all(&offer, false).unwrap();
        let s = a.streams[0].as_ref().unwrap();
        assert_eq!(s.codec, Codec::G722);
        assert_eq!(s.dtmf_pt, Some(101));
        assert!(
            a.sdp.contains("m=audio 30000 RTP/AVP 9 101\r\n"),
            "{}",
            a.sdp
        );
    }

    #[test]
    fn sbc_offer_with_media_level_c_rtcp_mux_and_avpf() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 203.0.113.9\r\ns=SBC\r\nt=0 0\r\n\
            m=audio 40000 RTP/AVPF 8 96\r\nc=IN IP4 203.0.113.20\r\n\
            a=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n\
            a=rtcp-mux\r\na=sendonly\r\n";
        let offer = ok(sdp);
        assert_eq!(offer.connection, None);
        let a = answer_all(&offer, false).unwrap();
        let s = a.streams[0].as_ref().unwrap();
        assert_eq!(s.codec_pt, vec![(8, Codec::Pcma)]);
        assert_eq!(s.dtmf_pt, Some(96));
        assert!(s.rtcp_mux);
        assert_eq!(s.remote, Some("203.0.113.20:40000".parse().unwrap()));
        assert!(a.sdp.contains("a=rtcp-mux\r\n"));
        assert!(!a.sdp.contains("a=rtcp:"));
        assert!(a.sdp.contains("a=fmtp:96 0-15\r\n"));
        assert!(a.sdp.contains("m=audio 30000 RTP/AVPF 8 96\r\n"));
    }

    #[test]
    fn opensips_style_ipv6_and_static_pts_without_rtpmap() {
        let sdp = "v=0\no=user1 53655765 2353687637 IN IP6 2001:db8::1\ns=-\n\
            c=IN IP6 2001:db8::1\nt=0 0\nm=audio 6000 RTP/AVP 18 8 0\n";
        let offer = ok(sdp);
        let ip6: IpAddr = "2001:db8::2".parse().unwrap();
        let a = answer(&offer, ip6, &[7000], 5, 6, false).unwrap();
        assert!(a.sdp.contains("c=IN IP6 2001:db8::2\r\n"));
        assert!(a.sdp.contains("m=audio 7000 RTP/AVP 8\r\n"));
        assert_eq!(
            a.streams[0].as_ref().unwrap().remote,
            Some("[2001:db8::1]:6000".parse().unwrap())
        );
    }

    #[test]
    fn directions_map_to_recvonly_or_inactive() {
        let base = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";
        for (session, media, expect) in [
            ("", "a=sendrecv\r\n", Direction::RecvOnly),
            ("", "a=sendonly\r\n", Direction::RecvOnly),
            ("", "a=recvonly\r\n", Direction::Inactive),
            ("", "a=inactive\r\n", Direction::Inactive),
            ("a=inactive\r\n", "", Direction::Inactive),
            ("a=inactive\r\n", "a=sendonly\r\n", Direction::RecvOnly),
            ("", "", Direction::RecvOnly),
        ] {
            let sdp = format!("{base}{session}m=audio 5000 RTP/AVP 0\r\n{media}");
            let a = answer_all(&ok(&sdp), false).unwrap();
            let s = a.streams[0].as_ref().unwrap();
            assert_eq!(s.direction, expect, "{sdp}");
            assert!(a.sdp.contains(&format!("a={}\r\n", expect.as_attr())));
        }
    }

    #[test]
    fn hold_address_gives_no_remote() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
            m=audio 5000 RTP/AVP 0\r\na=sendonly\r\n";
        let a = answer_all(&ok(sdp), false).unwrap();
        assert_eq!(a.streams[0].as_ref().unwrap().remote, None);
    }

    #[test]
    fn rejected_lines_srtp_no_codec_no_port() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n\
            m=audio 5002 RTP/AVP 18 4\r\n\
            m=application 5004 UDP/BFCP *\r\n\
            m=image 5006 udptl t38\r\n\
            m=audio 5008 RTP/AVP 0\r\n\
            m=audio 5010 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\n";
        let offer = ok(sdp);
        // The last PCMU line gets no local port: it is rejected too.
        let a = answer(&offer, LOCAL, &[1, 2, 3, 4, 0, 6], 1, 1, false);
        assert_eq!(a, Err(SdpError::NotAcceptable));
        let a = answer(&offer, LOCAL, &[1, 2, 3, 4, 30000, 6], 1, 1, false).unwrap();
        let m: Vec<&str> = a.sdp.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            vec![
                "m=audio 0 RTP/SAVP 0",
                "m=audio 0 RTP/AVP 18 4",
                "m=application 0 UDP/BFCP *",
                "m=image 0 udptl t38",
                "m=audio 30000 RTP/AVP 0",
                "m=audio 0 RTP/AVP 97",
            ]
        );
        assert_eq!(
            acceptable(&offer, true),
            vec![None, None, None, None, Some(Codec::Pcmu), Some(Codec::Opus)]
        );
    }

    #[test]
    fn opus_needs_48000_over_2() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\n\
            m=audio 5000 RTP/AVP 96 97\r\na=rtpmap:96 opus/48000\r\na=rtpmap:97 OPUS/48000/2\r\n";
        let a = answer_all(&ok(sdp), true).unwrap();
        assert_eq!(
            a.streams[0].as_ref().unwrap().codec_pt,
            vec![(97, Codec::Opus)]
        );
    }

    #[test]
    fn rtpmap_overrides_static_meaning() {
        // PT 0 remapped to something else must not be decoded as PCMU.
        let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\n\
            m=audio 5000 RTP/AVP 0 8\r\na=rtpmap:0 L16/8000\r\n";
        let a = answer_all(&ok(sdp), false).unwrap();
        assert_eq!(a.streams[0].as_ref().unwrap().codec, Codec::Pcma);
    }

    type ErrorCheck = fn(&SdpError) -> bool;

    #[test]
    fn refusals() {
        let good_head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n";
        let cases: Vec<(String, ErrorCheck)> = vec![
            (String::new(), |e| *e == SdpError::Empty),
            ("o=- 1 1 IN IP4 1.2.3.4\r\n".into(), |e| {
                *e == SdpError::MissingVersion
            }),
            ("v=1\r\n".into(), |e| {
                matches!(e, SdpError::Malformed { line: 1, .. })
            }),
            ("v=0\r\ns=-\r\n".into(), |e| *e == SdpError::MissingOrigin),
            ("v=0\r\no=- 1 1 IN IP4\r\n".into(), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\n".into(),
                |e| *e == SdpError::MissingConnection { media: 0 },
            ),
            (format!("{good_head}m=audio 70000 RTP/AVP 0\r\n"), |e| {
                matches!(e, SdpError::Malformed { line: 5, .. })
            }),
            (format!("{good_head}m=audio -1 RTP/AVP 0\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}m=audio +5 RTP/AVP 0\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}m=audio 5000 RTP/AVP 128\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}m=audio 5000 RTP/AVP\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}m=audio 5000 RTP/AVP 0  8\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}m=audio 5000\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 96\r\na=rtpmap:96 opus/0\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 96\r\na=rtpmap:200 x/8000\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 96\r\na=rtpmap:96 x/8000/0\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 96\r\na=rtpmap:96\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 0\r\na=ptime:0\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 0\r\na=ptime:abc\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 0\r\na=rtcp:99999\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (
                format!("{good_head}m=audio 5000 RTP/AVP 0\r\na=label:\r\n"),
                |e| matches!(e, SdpError::Malformed { .. }),
            ),
            (format!("{good_head}c=IN IP4 example.com\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}c=IN IP6 192.0.2.1\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}c=ATM NSAP 1\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}garbage\r\n"), |e| {
                matches!(e, SdpError::Malformed { line: 5, .. })
            }),
            (format!("{good_head}X=1\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}a=x\0y\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}a=x\ry\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}v=0\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
            (format!("{good_head}o=- 1 1 IN IP4 192.0.2.1\r\n"), |e| {
                matches!(e, SdpError::Malformed { .. })
            }),
        ];
        for (sdp, expect) in cases {
            match parse(&sdp) {
                Err(e) => {
                    assert!(expect(&e), "unexpected error {e:?} for\n{sdp}");
                    assert!(!e.to_string().is_empty());
                }
                Ok(o) => panic!("accepted bad offer {o:?}\n{sdp}"),
            }
        }
    }

    #[test]
    fn refuses_non_utf8_and_limits() {
        assert_eq!(
            parse_offer(b"v=0\r\ns=\xff\r\n", &Limits::default()),
            Err(SdpError::NotUtf8)
        );
        let head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\n";
        let big = format!("{head}{}", "a=x\r\n".repeat(14_000));
        assert!(matches!(parse(&big), Err(SdpError::TooLarge { .. })));
        let many_attrs = format!("{head}{}", "a=x\r\n".repeat(1025));
        assert_eq!(
            parse(&many_attrs),
            Err(SdpError::TooManyAttributes { max: 1024 })
        );
        let many_m = format!("{head}{}", "m=audio 5000 RTP/AVP 0\r\n".repeat(17));
        assert_eq!(parse(&many_m), Err(SdpError::TooManyMedia { max: 16 }));
        assert!(parse(&format!(
            "{head}{}",
            "m=audio 5000 RTP/AVP 0\r\n".repeat(16)
        ))
        .is_ok());
        let fmts: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        let many_f = format!("{head}m=audio 5000 RTP/AVP {}\r\n", fmts.join(" "));
        assert_eq!(
            parse(&many_f),
            Err(SdpError::TooManyFormats { line: 4, max: 64 })
        );
        let fmts64 = format!("{head}m=audio 5000 RTP/AVP {}\r\n", fmts[..64].join(" "));
        assert!(parse(&fmts64).is_ok());
    }

    #[test]
    fn crlf_and_lf_parse_the_same() {
        let lf = RFC3264_ALICE.replace("\r\n", "\n");
        assert_eq!(ok(&lf), ok(RFC3264_ALICE));
    }

    #[test]
    fn answer_parses_back_as_an_offer() {
        for sdp in [RFC3264_ALICE, SIPREC_OFFER, FREESWITCH_OFFER] {
            let a = answer_all(&ok(sdp), true).unwrap();
            let back = ok(&a.sdp);
            assert_eq!(back.media.len(), ok(sdp).media.len());
            assert_eq!(back.origin.session_id, "42");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(offer) = parse_offer(&bytes, &Limits::default()) {
                let _ = answer_all(&offer, true);
            }
        }

        #[test]
        fn mutated_offers_never_panic(
            cut in 0usize..600,
            insert in "[ -~\r\n]{0,40}",
            opus in any::<bool>(),
        ) {
            let base = FREESWITCH_OFFER;
            let at = base.char_indices().map(|(i, _)| i).nth(cut % base.len()).unwrap_or(0);
            let s = format!("{}{}{}", &base[..at], insert, &base[at..]);
            if let Ok(offer) = parse(&s) {
                if let Ok(a) = answer_all(&offer, opus) {
                    prop_assert_eq!(
                        a.sdp.lines().filter(|l| l.starts_with("m=")).count(),
                        offer.media.len()
                    );
                    prop_assert!(parse(&a.sdp).is_ok(), "answer does not parse: {}", a.sdp);
                }
            }
        }
    }
}
