//! RFC 4733 telephone-events (DTMF) kept as metadata, never decoded as audio.
//!
//! Every packet of one event carries the event's start timestamp and a growing duration;
//! the end packet (E bit) is sent three times (RFC 4733 §2.5.1.4). One event is therefore
//! identified by (SSRC, timestamp, event code) and reported once.

use std::fmt;

/// One decoded telephone-event payload (the first 4 bytes; redundant blocks are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfError(pub usize);

impl fmt::Display for DtmfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "telephone-event payload of {} bytes, need 4", self.0)
    }
}

impl std::error::Error for DtmfError {}

/// Parses the first event block of a telephone-event payload.
pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
    if payload.len() < 4 {
        return Err(DtmfError(payload.len()));
    }
    Ok(TelephoneEvent {
        event: payload[0],
        end: payload[1] & 0x80 != 0,
        volume: payload[1] & 0x3F,
        duration: u16::from_be_bytes([payload[2], payload[3]]),
    })
}

/// Builds a telephone-event payload (tests, load generators).
pub fn build(ev: &TelephoneEvent) -> [u8; 4] {
    let d = ev.duration.to_be_bytes();
    [
        ev.event,
        (ev.volume & 0x3F) | if ev.end { 0x80 } else { 0 },
        d[0],
        d[1],
    ]
}

/// The DTMF symbol for an event code (RFC 4733 §3.2), if it is one.
pub fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// A DTMF event as reported to the recording's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfEvent {
    pub event: u8,
    pub digit: Option<char>,
    /// Caller's clock (ms) when the first packet of the event arrived.
    pub at_ms: u64,
    pub duration_ms: u32,
    /// False when the event was cut short (no E bit seen before another event / the end).
    pub ended: bool,
}

/// At most this many events are held between `take` calls (bounded memory).
pub const MAX_PENDING_EVENTS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    ssrc: u32,
    timestamp: u32,
    event: u8,
}

/// Collapses the packets of each event into one [`DtmfEvent`].
#[derive(Debug, Default)]
pub struct DtmfTracker {
    current: Option<(Key, u64, u16)>,
    last_reported: Option<Key>,
    events: Vec<DtmfEvent>,
    dropped: u64,
}

impl DtmfTracker {
    pub fn new() -> DtmfTracker {
        DtmfTracker::default()
    }

    /// Feeds one telephone-event packet. `clock_rate` converts durations to ms.
    pub fn on_packet(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
        clock_rate: u32,
        now_ms: u64,
    ) -> Result<(), DtmfError> {
        let ev = parse(payload)?;
        let key = Key {
            ssrc,
            timestamp,
            event: ev.event,
        };
        if self.last_reported == Some(key) {
            return Ok(()); // retransmitted end packet
        }
        match &mut self.current {
            Some((k, _, dur)) if *k == key => *dur = (*dur).max(ev.duration),
            _ => {
                self.cut_current();
                self.current = Some((key, now_ms, ev.duration));
            }
        }
        if ev.end {
            if let Some((k, at, dur)) = self.current.take() {
                self.report(k, at, dur, clock_rate, true);
            }
        }
        Ok(())
    }

    fn cut_current(&mut self) {
        if let Some((k, at, dur)) = self.current.take() {
            // Without the clock rate of the cut event, 8000 is the only rate telephone-event
            // uses with the narrowband codecs; Opus calls use 48000 and pass it on the end.
            self.report(k, at, dur, 8000, false);
        }
    }

    fn report(&mut self, k: Key, at_ms: u64, duration: u16, clock_rate: u32, ended: bool) {
        self.last_reported = Some(k);
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.dropped += 1;
            return;
        }
        let rate = clock_rate.max(1) as u64;
        self.events.push(DtmfEvent {
            event: k.event,
            digit: digit(k.event),
            at_ms,
            duration_ms: (duration as u64 * 1000 / rate) as u32,
            ended,
        });
    }

    /// Reports an event still in progress (call ended mid-digit).
    pub fn flush(&mut self) {
        self.cut_current();
    }

    /// Events completed since the last call.
    pub fn take(&mut self) -> Vec<DtmfEvent> {
        std::mem::take(&mut self.events)
    }

    /// Events dropped because more than [`MAX_PENDING_EVENTS`] were waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        build(&TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        })
    }

    #[test]
    fn one_event_reported_once() {
        let mut t = DtmfTracker::new();
        t.on_packet(1, 800, &pkt(5, false, 160), 8000, 100).unwrap();
        t.on_packet(1, 800, &pkt(5, false, 320), 8000, 120).unwrap();
        for _ in 0..3 {
            t.on_packet(1, 800, &pkt(5, true, 800), 8000, 200).unwrap();
        }
        let ev = t.take();
        assert_eq!(
            ev,
            vec![DtmfEvent {
                event: 5,
                digit: Some('5'),
                at_ms: 100,
                duration_ms: 100,
                ended: true
            }]
        );
        // Same digit again later = a new event (new timestamp).
        t.on_packet(1, 4000, &pkt(5, true, 400), 8000, 900).unwrap();
        assert_eq!(t.take().len(), 1);
    }

    #[test]
    fn cut_short_and_flush() {
        let mut t = DtmfTracker::new();
        t.on_packet(1, 0, &pkt(11, false, 160), 8000, 0).unwrap();
        t.on_packet(1, 1000, &pkt(10, false, 160), 8000, 50)
            .unwrap();
        t.flush();
        let ev = t.take();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].digit, Some('#'));
        assert!(!ev[0].ended);
        assert_eq!(ev[1].digit, Some('*'));
        assert_eq!(t.on_packet(1, 0, &[1, 2, 3], 8000, 0), Err(DtmfError(3)));
        assert_eq!(digit(15), Some('D'));
        assert_eq!(digit(16), None);
    }

    proptest! {
        #[test]
        fn bounded_and_no_panic(pkts in proptest::collection::vec(
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..8)), 0..600)) {
            let mut t = DtmfTracker::new();
            for (i, (ts, p)) in pkts.iter().enumerate() {
                let _ = t.on_packet(7, *ts, p, 8000, i as u64);
            }
            t.flush();
            prop_assert!(t.take().len() <= MAX_PENDING_EVENTS);
        }
    }
}
