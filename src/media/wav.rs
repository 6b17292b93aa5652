//! WAV files: the live stereo recording, A-law output, and crash repair.
//!
//! The live writer writes the canonical 44-byte PCM header itself and streams raw
//! little-endian i16 frames through a `BufWriter`, instead of going through
//! `hound::WavWriter::write_sample`: the reference measured hound at ≈8 ns per sample, i.e.
//! ≈2.6 µs per 20 ms stereo packet pair, more than the whole per-packet budget for 1,000
//! calls per core; the raw path is a memcpy. The header is byte-for-byte what hound writes
//! for 16-bit stereo PCM (WAVE_FORMAT_PCM, 16-byte fmt chunk), and the tests read every file
//! back with `hound::WavReader`.
//!
//! Crash safety: [`StereoWavWriter::checkpoint`] flushes the data and rewrites the sizes, so
//! the file is valid up to the last checkpoint; [`repair`] recovers everything written after
//! it from the file length (dropping a torn final frame).

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::g711;

/// Sample rate of recordings.
pub const RATE: u32 = 8000;
const PCM_HEADER_LEN: u64 = 44;
/// RIFF sizes are u32; keep a margin for the header.
const MAX_DATA: u64 = u32::MAX as u64 - 64;

fn riff_header(fmt_tag: u16, channels: u16, rate: u32, bits: u16, extra: &[u8]) -> Vec<u8> {
    let block_align = channels * bits / 8;
    let fmt_len: u32 = if fmt_tag == 1 { 16 } else { 18 };
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    h.extend_from_slice(&fmt_len.to_le_bytes());
    h.extend_from_slice(&fmt_tag.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * block_align as u32).to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    if fmt_len == 18 {
        h.extend_from_slice(&0u16.to_le_bytes()); // cbSize
    }
    h.extend_from_slice(extra);
    h.extend_from_slice(b"data");
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

fn patch_u32<W: Write + Seek>(w: &mut W, at: u64, v: u32) -> io::Result<()> {
    w.seek(SeekFrom::Start(at))?;
    w.write_all(&v.to_le_bytes())
}

/// Incremental 8 kHz, 16-bit, two-channel PCM WAV writer with bounded memory (one
/// `BufWriter` buffer plus a reusable frame scratch).
pub struct StereoWavWriter<W: Write + Seek> {
    out: BufWriter<W>,
    data_bytes: u64,
    scratch: Vec<u8>,
}

impl<W: Write + Seek> StereoWavWriter<W> {
    /// Writes the header (sizes 0 until the first checkpoint) at the sink's start.
    pub fn new(sink: W) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(32 * 1024, sink);
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&riff_header(1, 2, RATE, 16, &[]))?;
        Ok(StereoWavWriter {
            out,
            data_bytes: 0,
            scratch: Vec::with_capacity(4 * 1024),
        })
    }

    /// Appends `left.len()` frames; `left` and `right` must be equally long.
    pub fn write_frames(&mut self, left: &[i16], right: &[i16]) -> io::Result<()> {
        if left.len() != right.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "left and right channel lengths differ",
            ));
        }
        let bytes = left.len() as u64 * 4;
        if self.data_bytes + bytes > MAX_DATA {
            return Err(io::Error::other(
                "WAV data would exceed the 4 GiB RIFF limit (≈37 h at 8 kHz stereo)",
            ));
        }
        // Interleave in bounded pieces through the scratch buffer.
        for (l, r) in left.chunks(1024).zip(right.chunks(1024)) {
            self.scratch.clear();
            self.scratch.resize(l.len() * 4, 0);
            for ((dst, &a), &b) in self.scratch.chunks_exact_mut(4).zip(l).zip(r) {
                dst[..2].copy_from_slice(&a.to_le_bytes());
                dst[2..].copy_from_slice(&b.to_le_bytes());
            }
            self.out.write_all(&self.scratch)?;
        }
        self.data_bytes += bytes;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.data_bytes / 4
    }

    /// Makes everything written so far durable-as-a-valid-file: flushes the data and
    /// rewrites the RIFF and data sizes (like hound's `flush`).
    pub fn checkpoint(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let w = self.out.get_mut();
        patch_u32(w, 4, (PCM_HEADER_LEN - 8 + self.data_bytes) as u32)?;
        patch_u32(w, PCM_HEADER_LEN - 4, self.data_bytes as u32)?;
        w.seek(SeekFrom::Start(PCM_HEADER_LEN + self.data_bytes))?;
        w.flush()
    }

    /// The sink (without what is still buffered).
    pub fn sink_ref(&self) -> &W {
        self.out.get_ref()
    }

    /// Final header and the sink back.
    pub fn finalize(mut self) -> io::Result<W> {
        self.checkpoint()?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Incremental A-law WAV writer (WAVE_FORMAT_ALAW = 6, 8-bit, with the `fact` chunk that
/// non-PCM formats require). hound cannot write this format tag, hence by hand.
pub struct AlawWavWriter<W: Write + Seek> {
    out: BufWriter<W>,
    channels: u16,
    data_bytes: u64,
    scratch: Vec<u8>,
}

/// Header layout: RIFF(12) + fmt (8+18) + fact (8+4) + data (8).
const ALAW_FACT_AT: u64 = 46;
const ALAW_DATA_SIZE_AT: u64 = 54;
const ALAW_HEADER_LEN: u64 = 58;

impl<W: Write + Seek> AlawWavWriter<W> {
    pub fn new(sink: W, channels: u16, sample_rate: u32) -> io::Result<Self> {
        if channels == 0 || sample_rate == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "A-law WAV needs at least one channel and a non-zero rate",
            ));
        }
        let mut out = BufWriter::with_capacity(32 * 1024, sink);
        out.seek(SeekFrom::Start(0))?;
        let mut fact = Vec::with_capacity(12);
        fact.extend_from_slice(b"fact");
        fact.extend_from_slice(&4u32.to_le_bytes());
        fact.extend_from_slice(&0u32.to_le_bytes());
        out.write_all(&riff_header(6, channels, sample_rate, 8, &fact))?;
        Ok(AlawWavWriter {
            out,
            channels,
            data_bytes: 0,
            scratch: Vec::new(),
        })
    }

    /// Appends interleaved samples (a multiple of the channel count).
    pub fn write_samples(&mut self, interleaved: &[i16]) -> io::Result<()> {
        if interleaved.len() % self.channels as usize != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sample count is not a multiple of the channel count",
            ));
        }
        if self.data_bytes + interleaved.len() as u64 > MAX_DATA {
            return Err(io::Error::other("A-law WAV would exceed 4 GiB"));
        }
        for part in interleaved.chunks(4096) {
            self.scratch.clear();
            g711::encode_alaw_into(part, &mut self.scratch);
            self.out.write_all(&self.scratch)?;
        }
        self.data_bytes += interleaved.len() as u64;
        Ok(())
    }

    pub fn finalize(mut self) -> io::Result<W> {
        self.out.flush()?;
        let frames = (self.data_bytes / self.channels as u64) as u32;
        let pad = self.data_bytes % 2; // RIFF chunks are word aligned
        let w = self.out.get_mut();
        if pad == 1 {
            w.seek(SeekFrom::Start(ALAW_HEADER_LEN + self.data_bytes))?;
            w.write_all(&[0])?;
        }
        patch_u32(w, 4, (ALAW_HEADER_LEN - 8 + self.data_bytes + pad) as u32)?;
        patch_u32(w, ALAW_FACT_AT, frames)?;
        patch_u32(w, ALAW_DATA_SIZE_AT, self.data_bytes as u32)?;
        w.seek(SeekFrom::End(0))?;
        w.flush()?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Writes a whole A-law WAV from interleaved 16-bit samples.
pub fn write_alaw_wav<W: Write + Seek>(
    sink: W,
    channels: u16,
    sample_rate: u32,
    interleaved: &[i16],
) -> io::Result<W> {
    let mut w = AlawWavWriter::new(sink, channels, sample_rate)?;
    w.write_samples(interleaved)?;
    w.finalize()
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub channels: u16,
    pub sample_rate: u32,
    pub block_align: u16,
    pub data_offset: u64,
    pub data_bytes: u64,
    pub frames: u64,
    /// Bytes of a torn final frame cut off the end.
    pub torn_bytes: u64,
    /// Whether the file was modified (false: it was already consistent).
    pub changed: bool,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Repairs a WAV whose writer died: sets the RIFF and data sizes from the file length and
/// truncates a torn final frame. A consistent file is left untouched. Refuses (Err,
/// file unchanged) anything that is not a RIFF/WAVE with `fmt ` and `data` chunks in its
/// first 4 KiB.
pub fn repair(path: &Path) -> io::Result<Repaired> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let file_len = f.metadata()?.len();
    let mut head = vec![0u8; file_len.min(4096) as usize];
    f.read_exact(&mut head)?;
    if head.len() < 12 || &head[..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(invalid("not a RIFF/WAVE file"));
    }
    let mut pos = 12usize;
    let mut fmt = None;
    let (data_offset, declared) = loop {
        if pos + 8 > head.len() {
            return Err(invalid("no data chunk in the first 4 KiB"));
        }
        let id = &head[pos..pos + 4];
        let size = le32(&head, pos + 4) as usize;
        if id == b"data" {
            break ((pos + 8) as u64, size as u64);
        }
        if id == b"fmt " {
            if size < 16 || pos + 8 + 16 > head.len() {
                return Err(invalid("short fmt chunk"));
            }
            let b = pos + 8;
            fmt = Some((le16(&head, b + 2), le32(&head, b + 4), le16(&head, b + 12)));
        }
        pos = pos
            .checked_add(8 + size + (size & 1))
            .ok_or_else(|| invalid("chunk size overflow"))?;
    };
    let (channels, sample_rate, block_align) = fmt.ok_or_else(|| invalid("no fmt chunk"))?;
    if channels == 0 || block_align == 0 {
        return Err(invalid("fmt chunk with zero channels or block size"));
    }
    let ba = block_align as u64;
    let available = file_len.saturating_sub(data_offset);

    // Consistent already? The RIFF size matches the file and the declared data fits (any
    // bytes after it are further chunks). A crashed writer's RIFF size is from its last
    // checkpoint, so it does not match the grown file.
    let riff_ok = le32(&head, 4) as u64 == file_len - 8;
    if riff_ok && declared <= available && declared % ba == 0 {
        return Ok(Repaired {
            channels,
            sample_rate,
            block_align,
            data_offset,
            data_bytes: declared,
            frames: declared / ba,
            torn_bytes: 0,
            changed: false,
        });
    }
    let data_bytes = (available.min(MAX_DATA) / ba) * ba;
    let torn_bytes = file_len - data_offset - data_bytes;
    if torn_bytes > 0 {
        f.set_len(data_offset + data_bytes)?;
    }
    patch_u32(&mut f, 4, (data_offset + data_bytes - 8) as u32)?;
    patch_u32(&mut f, data_offset - 4, data_bytes as u32)?;
    f.sync_all()?;
    Ok(Repaired {
        channels,
        sample_rate,
        block_align,
        data_offset,
        data_bytes,
        frames: data_bytes / ba,
        torn_bytes,
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn frames(n: usize) -> (Vec<i16>, Vec<i16>) {
        let l = (0..n).map(|i| i as i16).collect();
        let r = (0..n).map(|i| -(i as i16)).collect();
        (l, r)
    }

    #[test]
    fn stereo_writer_is_read_back_by_hound() {
        let (l, r) = frames(1000);
        let mut w = StereoWavWriter::new(Cursor::new(Vec::new())).unwrap();
        w.write_frames(&l[..300], &r[..300]).unwrap();
        w.checkpoint().unwrap();
        w.write_frames(&l[300..], &r[300..]).unwrap();
        assert!(w.write_frames(&l[..2], &r[..1]).is_err());
        assert_eq!(w.frames(), 1000);
        let bytes = w.finalize().unwrap().into_inner();
        assert_eq!(bytes.len(), 44 + 4000);
        let mut rd = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = rd.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        let s: Vec<i16> = rd.samples::<i16>().map(|x| x.unwrap()).collect();
        assert_eq!(s.len(), 2000);
        assert_eq!((s[2 * 7], s[2 * 7 + 1]), (7, -7));
    }

    #[test]
    fn checkpoint_makes_prefix_readable() {
        let (l, r) = frames(500);
        let mut w = StereoWavWriter::new(Cursor::new(Vec::new())).unwrap();
        w.write_frames(&l, &r).unwrap();
        w.checkpoint().unwrap();
        let snapshot = w.out.get_ref().get_ref().clone();
        let rd = hound::WavReader::new(Cursor::new(snapshot)).unwrap();
        assert_eq!(rd.duration(), 500);
    }

    #[test]
    fn repair_fixes_a_file_truncated_mid_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.wav");
        let (l, r) = frames(4000);
        let mut w = StereoWavWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        w.write_frames(&l[..1000], &r[..1000]).unwrap();
        w.checkpoint().unwrap();
        w.write_frames(&l[1000..], &r[1000..]).unwrap();
        // Simulate the crash: the BufWriter's data reaches the file, the header does not, and
        // the last write is torn mid-frame.
        w.out.flush().unwrap();
        drop(w);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(44 + 4000 * 4 - 3).unwrap();
        drop(f);
        assert_eq!(
            hound::WavReader::open(&path).unwrap().duration(),
            1000,
            "before repair only the checkpoint is visible"
        );
        let rep = repair(&path).unwrap();
        assert!(rep.changed);
        assert_eq!(rep.frames, 3999);
        assert_eq!(rep.torn_bytes, 1);
        let mut rd = hound::WavReader::open(&path).unwrap();
        assert_eq!(rd.duration(), 3999);
        let s: Vec<i16> = rd.samples::<i16>().map(|x| x.unwrap()).collect();
        assert_eq!((s[2 * 3998], s[2 * 3998 + 1]), (3998, -3998));
        // Idempotent.
        let again = repair(&path).unwrap();
        assert!(!again.changed);
        assert_eq!(again.frames, 3999);
    }

    #[test]
    fn repair_header_only_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.wav");
        let w = StereoWavWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        drop(w); // BufWriter drop flushes the header
        let rep = repair(&path).unwrap();
        assert_eq!(rep.frames, 0);
        assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 0);
        let bad = dir.path().join("bad.wav");
        for junk in [
            &b""[..],
            b"RIFF\0\0\0\0WAVE",
            b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\xff",
        ] {
            std::fs::write(&bad, junk).unwrap();
            assert!(repair(&bad).is_err());
            assert_eq!(
                std::fs::read(&bad).unwrap(),
                junk,
                "refused file left unchanged"
            );
        }
    }

    #[test]
    fn alaw_wav_header_and_content() {
        let samples: Vec<i16> = (0..801).map(|i| (i * 37 % 20000) as i16 - 10000).collect();
        let bytes = write_alaw_wav(Cursor::new(Vec::new()), 1, 8000, &samples)
            .unwrap()
            .into_inner();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(le32(&bytes, 4) as usize, bytes.len() - 8);
        assert_eq!(le16(&bytes, 20), 6, "WAVE_FORMAT_ALAW");
        assert_eq!(le16(&bytes, 34), 8, "8 bits");
        assert_eq!(&bytes[38..42], b"fact");
        assert_eq!(le32(&bytes, 46), 801);
        assert_eq!(&bytes[50..54], b"data");
        assert_eq!(le32(&bytes, 54), 801);
        assert_eq!(bytes.len(), 58 + 801 + 1);
        for (i, &s) in samples.iter().enumerate() {
            let d = g711::ALAW_DECODE[bytes[58 + i] as usize] as i32;
            assert!((d - s as i32).abs() <= (s as i32).abs() / 15 + 40);
        }
        assert!(AlawWavWriter::new(Cursor::new(Vec::new()), 0, 8000).is_err());
        let mut w = AlawWavWriter::new(Cursor::new(Vec::new()), 2, 8000).unwrap();
        assert!(w.write_samples(&[1, 2, 3]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn repair_never_panics_on_garbage(mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                          riff in any::<bool>()) {
            if riff && bytes.len() >= 12 {
                bytes[..4].copy_from_slice(b"RIFF");
                bytes[8..12].copy_from_slice(b"WAVE");
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.wav");
            std::fs::write(&path, &bytes).unwrap();
            match repair(&path) {
                Ok(r) => prop_assert_eq!(r.data_bytes % r.block_align as u64, 0),
                Err(_) => prop_assert_eq!(std::fs::read(&path).unwrap(), bytes),
            }
        }

        #[test]
        fn truncation_anywhere_is_repaired(n in 0usize..600, cut in 0usize..2500) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.wav");
            let (l, r) = frames(n);
            let mut w = StereoWavWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
            w.write_frames(&l, &r).unwrap();
            w.out.flush().unwrap();
            drop(w);
            let len = std::fs::metadata(&path).unwrap().len();
            let new_len = (44 + cut as u64).min(len);
            OpenOptions::new().write(true).open(&path).unwrap().set_len(new_len).unwrap();
            let rep = repair(&path).unwrap();
            prop_assert_eq!(rep.frames, (new_len - 44) / 4);
            prop_assert_eq!(hound::WavReader::open(&path).unwrap().duration() as u64, rep.frames);
        }
    }
}
