//! Opus through libopus loaded at run time (`dlopen("libopus.so.0")`).
//!
//! There is deliberately no build-time libopus: the daemon must build and run where it is
//! missing, and then Opus is simply not offered ([`available`] is false). The decoder is
//! created at 8000 Hz so libopus itself band-limits and resamples to the recording timeline.
//! The encoder exists for tests and load generators.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

type DecoderCreate = unsafe extern "C" fn(i32, c_int, *mut c_int) -> *mut c_void;
type Decode = unsafe extern "C" fn(*mut c_void, *const u8, i32, *mut i16, c_int, c_int) -> c_int;
type Destroy = unsafe extern "C" fn(*mut c_void);
type EncoderCreate = unsafe extern "C" fn(i32, c_int, c_int, *mut c_int) -> *mut c_void;
type Encode = unsafe extern "C" fn(*mut c_void, *const i16, c_int, *mut u8, i32) -> i32;

struct Lib {
    decoder_create: DecoderCreate,
    decode: Decode,
    decoder_destroy: Destroy,
    encoder_create: EncoderCreate,
    encode: Encode,
    encoder_destroy: Destroy,
}

static LIB: OnceLock<Option<Lib>> = OnceLock::new();

fn lib() -> Option<&'static Lib> {
    LIB.get_or_init(load).as_ref()
}

unsafe fn sym(handle: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: handle is a live dlopen handle; name is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

fn load() -> Option<Lib> {
    let name: &CStr = c"libopus.so.0";
    // SAFETY: dlopen with a valid C string; the handle is never closed, so the function
    // pointers stay valid for the life of the process.
    let handle = unsafe { libc::dlopen(name.as_ptr() as *const c_char, libc::RTLD_NOW) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: each symbol is transmuted to the signature documented in opus.h (libopus 1.x,
    // stable ABI since 1.0).
    unsafe {
        Some(Lib {
            decoder_create: std::mem::transmute::<*mut c_void, DecoderCreate>(sym(
                handle,
                c"opus_decoder_create",
            )?),
            decode: std::mem::transmute::<*mut c_void, Decode>(sym(handle, c"opus_decode")?),
            decoder_destroy: std::mem::transmute::<*mut c_void, Destroy>(sym(
                handle,
                c"opus_decoder_destroy",
            )?),
            encoder_create: std::mem::transmute::<*mut c_void, EncoderCreate>(sym(
                handle,
                c"opus_encoder_create",
            )?),
            encode: std::mem::transmute::<*mut c_void, Encode>(sym(handle, c"opus_encode")?),
            encoder_destroy: std::mem::transmute::<*mut c_void, Destroy>(sym(
                handle,
                c"opus_encoder_destroy",
            )?),
        })
    }
}

/// Whether libopus could be loaded.
pub fn available() -> bool {
    lib().is_some()
}

/// Output rate of the decoder: the recording timeline.
pub const DECODE_RATE: i32 = 8000;
/// Longest Opus packet: 120 ms, i.e. 960 samples at 8 kHz.
pub const MAX_FRAME_SAMPLES: usize = 960;

/// A mono Opus decoder producing 8 kHz samples.
pub struct OpusDecoder {
    lib: &'static Lib,
    state: *mut c_void,
}

// SAFETY: the libopus decoder state is plain memory owned by this value and only touched
// through &mut self.
unsafe impl Send for OpusDecoder {}

impl OpusDecoder {
    /// None when libopus is unavailable or refused to create a decoder.
    pub fn new() -> Option<OpusDecoder> {
        let lib = lib()?;
        let mut err: c_int = 0;
        // SAFETY: valid rate/channels; err is a valid out pointer.
        let state = unsafe { (lib.decoder_create)(DECODE_RATE, 1, &mut err) };
        if state.is_null() || err != 0 {
            return None;
        }
        Some(OpusDecoder { lib, state })
    }

    /// Decodes one packet, appending up to 120 ms of 8 kHz samples to `out`. Returns the
    /// number appended or libopus's (negative) error code.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, i32> {
        if payload.is_empty() {
            // Empty means "lost" to libopus (PLC); the jitter buffer fills gaps itself.
            return Ok(0);
        }
        let start = out.len();
        out.resize(start + MAX_FRAME_SAMPLES, 0);
        let len = i32::try_from(payload.len()).map_err(|_| -1)?;
        // SAFETY: state is live; the output has MAX_FRAME_SAMPLES writable samples, which is
        // what frame_size tells libopus; input pointer/len describe `payload`.
        let n = unsafe {
            (self.lib.decode)(
                self.state,
                payload.as_ptr(),
                len,
                out.as_mut_ptr().add(start),
                MAX_FRAME_SAMPLES as c_int,
                0,
            )
        };
        if n < 0 {
            out.truncate(start);
            return Err(n);
        }
        out.truncate(start + n as usize);
        Ok(n as usize)
    }
}

impl Drop for OpusDecoder {
    fn drop(&mut self) {
        // SAFETY: state came from opus_decoder_create and is destroyed once.
        unsafe { (self.lib.decoder_destroy)(self.state) }
    }
}

/// A mono VoIP Opus encoder (tests, load generators).
pub struct OpusEncoder {
    lib: &'static Lib,
    state: *mut c_void,
    rate: i32,
}

// SAFETY: as for the decoder.
unsafe impl Send for OpusEncoder {}

const OPUS_APPLICATION_VOIP: c_int = 2048;

impl OpusEncoder {
    /// `rate` is one of 8000, 12000, 16000, 24000, 48000.
    pub fn new(rate: i32) -> Option<OpusEncoder> {
        let lib = lib()?;
        let mut err: c_int = 0;
        // SAFETY: as for the decoder.
        let state = unsafe { (lib.encoder_create)(rate, 1, OPUS_APPLICATION_VOIP, &mut err) };
        if state.is_null() || err != 0 {
            return None;
        }
        Some(OpusEncoder { lib, state, rate })
    }

    /// Encodes one frame (2.5–60 ms at the encoder rate) into a new packet.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, i32> {
        let frame = c_int::try_from(pcm.len()).map_err(|_| -1)?;
        if pcm.len() > (self.rate as usize) * 60 / 1000 {
            return Err(-1);
        }
        let mut out = vec![0u8; 1500];
        // SAFETY: pcm holds `frame` samples; out has 1500 writable bytes.
        let n =
            unsafe { (self.lib.encode)(self.state, pcm.as_ptr(), frame, out.as_mut_ptr(), 1500) };
        if n < 0 {
            return Err(n);
        }
        out.truncate(n as usize);
        Ok(out)
    }
}

impl Drop for OpusEncoder {
    fn drop(&mut self) {
        // SAFETY: state came from opus_encoder_create and is destroyed once.
        unsafe { (self.lib.encoder_destroy)(self.state) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_decode_frame_sizes() {
        if !available() {
            eprintln!("libopus.so.0 not loadable; Opus tests skipped");
            return;
        }
        let mut enc = OpusEncoder::new(48000).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let pcm: Vec<i16> = (0..960)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let pkt = enc.encode(&pcm).unwrap();
        let mut out = Vec::new();
        assert_eq!(dec.decode(&pkt, &mut out), Ok(160));
        assert_eq!(out.len(), 160);
        assert!(enc.encode(&[0; 7]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Some(mut dec) = OpusDecoder::new() {
                let mut out = vec![1, 2, 3];
                match dec.decode(&payload, &mut out) {
                    Ok(n) => prop_assert_eq!(out.len(), 3 + n),
                    Err(_) => prop_assert_eq!(&out, &vec![1, 2, 3]),
                }
                prop_assert!(out.len() <= 3 + MAX_FRAME_SAMPLES);
            }
        }
    }
}
