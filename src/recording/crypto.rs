//! Encryption at rest for stored recordings: AES-256-GCM in a chunked, STREAM-like file format
//! so a download can decrypt only the chunks a byte range touches.
//!
//! File layout (all integers big-endian):
//!
//! ```text
//! header (40 bytes)
//!   magic        4  "GRE1"
//!   version      1  1
//!   reserved     3  0
//!   key id       8  first 8 bytes of SHA-256(key) (= the 16-hex key id)
//!   nonce prefix 7  random per file
//!   reserved     1  0
//!   chunk size   4  plaintext bytes per chunk (1..=1 MiB)
//!   plain len    8  total plaintext bytes
//!   reserved     4  0
//! chunks: ceil(len / chunk size) of them (one, empty, for an empty file), each the chunk's
//!   ciphertext followed by its 16-byte tag; only the last may be short.
//! ```
//!
//! Chunk `i` is sealed with nonce = prefix ‖ i (u32) ‖ last-flag (1 for the final chunk, else 0)
//! and the header's first 28 bytes (everything but the length) as associated data. So a chunk
//! moved to another position fails (counter), a file cut at a chunk boundary fails (its new
//! last chunk was not sealed as last), a header pointed at another key or chunk size fails,
//! and a forged length is caught at open by checking it against the file size and decrypting
//! the final chunk. Wrong key, tampering and truncation are errors, never wrong bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 4] = b"GRE1";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: u64 = 40;
/// Bytes of header covered by every chunk's tag (all but the length and the trailing pad).
const AAD_LEN: usize = 28;
pub const TAG_LEN: u64 = 16;
/// Default plaintext per chunk: a download decrypts at most this much beyond what it sends
/// at each end of a range.
pub const DEFAULT_CHUNK: u32 = 64 * 1024;
/// Refused above this, so a forged header cannot make a reader allocate much.
pub const MAX_CHUNK: u32 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("not an encrypted recording (bad magic)")]
    NotEncrypted,
    #[error("unsupported encrypted recording version {0}")]
    Version(u8),
    #[error("recording is encrypted with key {0}, which is not in the keyring")]
    UnknownKey(String),
    #[error("encrypted recording is corrupt: {0}")]
    Corrupt(String),
    #[error("encrypted recording is truncated or extended: {0}")]
    Length(String),
    #[error("chunk {0} failed authentication (wrong key, tampering or reordering)")]
    Auth(u64),
}

impl From<CryptoError> for io::Error {
    fn from(e: CryptoError) -> io::Error {
        match e {
            CryptoError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// One AES-256 key and its id.
#[derive(Clone)]
pub struct Key {
    cipher: Aes256Gcm,
    id: [u8; 8],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

impl Key {
    pub fn from_bytes(bytes: &[u8; 32]) -> Key {
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Key {
            cipher: Aes256Gcm::new(bytes.into()),
            id,
        }
    }

    /// First 16 hex digits of SHA-256(key): stored next to each file, safe to log.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// Parses a key file's content: 32 raw bytes, or 64 hex digits (surrounding whitespace
    /// allowed).
    pub fn parse(content: &[u8]) -> Result<Key, String> {
        if content.len() == 32 {
            let mut b = [0u8; 32];
            b.copy_from_slice(content);
            return Ok(Key::from_bytes(&b));
        }
        let text = std::str::from_utf8(content)
            .map_err(|_| "must hold 32 raw bytes or 64 hex digits".to_string())?
            .trim();
        if text.len() != 64 {
            return Err(format!(
                "must hold 32 raw bytes or 64 hex digits, found {} bytes",
                content.len()
            ));
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(text, &mut b)
            .map_err(|_| "must hold 32 raw bytes or 64 hex digits (bad hex)".to_string())?;
        Ok(Key::from_bytes(&b))
    }

    /// Reads a key file, refusing one that group or others may read or write.
    pub fn load(path: &Path) -> Result<Key, CryptoError> {
        let err = |reason: String| CryptoError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let f = File::open(path).map_err(|e| err(e.to_string()))?;
        let meta = f.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:04o} lets group or others access the key; chmod 600 it"
            )));
        }
        let mut content = Vec::with_capacity(80);
        // A key file is tiny: read at most a little more than the hex form to refuse junk.
        f.take(200)
            .read_to_end(&mut content)
            .map_err(|e| err(e.to_string()))?;
        Key::parse(&content).map_err(err)
    }
}

/// The current key (for new files) and older keys (to read files written before a rotation).
#[derive(Debug, Clone)]
pub struct Keyring {
    current: Key,
    older: Vec<Key>,
}

impl Keyring {
    pub fn new(current: Key, older: Vec<Key>) -> Keyring {
        Keyring { current, older }
    }

    /// Loads `path` (creating a random key with mode 0600 when it does not exist) and every
    /// file in the sibling `keys/` directory as an older key. To rotate: move the key file
    /// into `keys/`, then write (or let the daemon create) a new one.
    pub fn load_or_create(path: &Path) -> Result<Keyring, CryptoError> {
        if !path.exists() {
            create_key_file(path)?;
        }
        let current = Key::load(path)?;
        let mut older = Vec::new();
        let dir = path.parent().unwrap_or_else(|| Path::new(".")).join("keys");
        if dir.is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            paths.sort();
            for p in paths {
                older.push(Key::load(&p)?);
            }
        }
        Ok(Keyring { current, older })
    }

    pub fn current(&self) -> &Key {
        &self.current
    }

    fn find(&self, id: &[u8; 8]) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(self.older.iter())
            .find(|k| &k.id == id)
    }
}

fn create_key_file(path: &Path) -> Result<(), CryptoError> {
    let err = |e: io::Error| CryptoError::KeyFile {
        path: path.display().to_string(),
        reason: format!("cannot create: {e}"),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // create_new: never overwrite a key another process just wrote.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    writeln!(f, "{}", hex::encode(bytes)).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(())
}

fn nonce(prefix: &[u8; 7], index: u64, last: bool) -> Result<[u8; 12], CryptoError> {
    let counter =
        u32::try_from(index).map_err(|_| CryptoError::Corrupt("more than 2^32 chunks".into()))?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Ok(n)
}

fn header_bytes(key_id: &[u8; 8], prefix: &[u8; 7], chunk: u32, len: u64) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[8..16].copy_from_slice(key_id);
    h[16..23].copy_from_slice(prefix);
    h[24..28].copy_from_slice(&chunk.to_be_bytes());
    h[28..36].copy_from_slice(&len.to_be_bytes());
    h
}

/// What [`EncryptWriter::finish`] reports.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub plaintext_len: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    pub key_id: String,
}

/// Encrypts a stream into the chunked format. Memory: one chunk. The header's length is
/// patched in by `finish` (hence `Seek`).
pub struct EncryptWriter<W: Write + Seek> {
    inner: W,
    key: Key,
    prefix: [u8; 7],
    chunk: usize,
    buf: Vec<u8>,
    index: u64,
    len: u64,
    hash: Sha256,
}

impl<W: Write + Seek> EncryptWriter<W> {
    pub fn new(mut inner: W, key: &Key, chunk: u32) -> Result<Self, CryptoError> {
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(CryptoError::Corrupt(format!(
                "chunk size {chunk} out of range"
            )));
        }
        let mut prefix = [0u8; 7];
        rand::rngs::OsRng.fill_bytes(&mut prefix);
        inner.write_all(&header_bytes(&key.id, &prefix, chunk, 0))?;
        Ok(EncryptWriter {
            inner,
            key: key.clone(),
            prefix,
            chunk: chunk as usize,
            buf: Vec::with_capacity(chunk as usize + TAG_LEN as usize),
            index: 0,
            len: 0,
            hash: Sha256::new(),
        })
    }

    fn seal(&mut self, last: bool) -> Result<(), CryptoError> {
        let n = nonce(&self.prefix, self.index, last)?;
        let aad = header_bytes(&self.key.id, &self.prefix, self.chunk as u32, 0);
        let tag = self
            .key
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&n), &aad[..AAD_LEN], &mut self.buf)
            .map_err(|_| CryptoError::Corrupt("encryption failed".into()))?;
        self.inner.write_all(&self.buf)?;
        self.inner.write_all(&tag)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the final chunk, patches the length into the header and returns the inner
    /// writer (not synced: the caller fsyncs before renaming into place).
    pub fn finish(mut self) -> Result<(W, Sealed), CryptoError> {
        self.seal(true)?;
        self.inner.seek(SeekFrom::Start(28))?;
        self.inner.write_all(&self.len.to_be_bytes())?;
        self.inner.seek(SeekFrom::End(0))?;
        self.inner.flush()?;
        let sealed = Sealed {
            plaintext_len: self.len,
            sha256: self.hash.finalize().into(),
            key_id: self.key.id(),
        };
        Ok((self.inner, sealed))
    }
}

impl<W: Write + Seek> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full buffer is sealed only once more data arrives: until then it may be the last.
        if self.buf.len() == self.chunk {
            self.seal(false)?;
        }
        let n = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hash.update(&data[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Random-access plaintext view of an encrypted file: `Read + Seek`, decrypting one chunk at
/// a time (memory: one chunk).
pub struct DecryptReader<R: Read + Seek> {
    inner: R,
    key: Key,
    aad: [u8; AAD_LEN],
    prefix: [u8; 7],
    chunk: u64,
    len: u64,
    chunks: u64,
    key_id: String,
    /// Index of the chunk held in `buf` (u64::MAX = none).
    cached: u64,
    buf: Vec<u8>,
    pos: u64,
}

impl<R: Read + Seek> DecryptReader<R> {
    /// Reads and checks the header, finds the key, checks the file size against the stated
    /// length and authenticates the final chunk (so a forged length is refused here).
    pub fn open(mut inner: R, keys: &Keyring) -> Result<Self, CryptoError> {
        let file_len = inner.seek(SeekFrom::End(0))?;
        if file_len < HEADER_LEN {
            if file_len >= 4 {
                let mut m = [0u8; 4];
                inner.seek(SeekFrom::Start(0))?;
                inner.read_exact(&mut m)?;
                if &m != MAGIC {
                    return Err(CryptoError::NotEncrypted);
                }
            }
            return Err(CryptoError::Length(format!(
                "{file_len} bytes is shorter than the header"
            )));
        }
        let mut h = [0u8; HEADER_LEN as usize];
        inner.seek(SeekFrom::Start(0))?;
        inner.read_exact(&mut h)?;
        if &h[..4] != MAGIC {
            return Err(CryptoError::NotEncrypted);
        }
        if h[4] != VERSION {
            return Err(CryptoError::Version(h[4]));
        }
        // The trailing pad is not under the tag: it must be zero so no header bit is free.
        if h[36..40] != [0; 4] {
            return Err(CryptoError::Corrupt(
                "reserved header bytes are not zero".into(),
            ));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&h[8..16]);
        let key = keys
            .find(&key_id)
            .ok_or_else(|| CryptoError::UnknownKey(hex::encode(key_id)))?
            .clone();
        let mut prefix = [0u8; 7];
        prefix.copy_from_slice(&h[16..23]);
        let chunk = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(CryptoError::Corrupt(format!(
                "chunk size {chunk} out of range"
            )));
        }
        let chunk = u64::from(chunk);
        let len = u64::from_be_bytes([h[28], h[29], h[30], h[31], h[32], h[33], h[34], h[35]]);
        let chunks = len.div_ceil(chunk).max(1);
        let expected = chunks
            .checked_mul(TAG_LEN)
            .and_then(|t| t.checked_add(len))
            .and_then(|t| t.checked_add(HEADER_LEN))
            .ok_or_else(|| CryptoError::Corrupt(format!("stated length {len} overflows")))?;
        if expected != file_len {
            return Err(CryptoError::Length(format!(
                "header states {len} plaintext bytes ({expected} file bytes), file has {file_len}"
            )));
        }
        let mut aad = [0u8; AAD_LEN];
        aad.copy_from_slice(&h[..AAD_LEN]);
        let mut r = DecryptReader {
            inner,
            key_id: key.id(),
            key,
            aad,
            prefix,
            chunk,
            len,
            chunks,
            cached: u64::MAX,
            buf: Vec::new(),
            pos: 0,
        };
        r.load(chunks - 1)?;
        Ok(r)
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn load(&mut self, i: u64) -> Result<(), CryptoError> {
        if self.cached == i {
            return Ok(());
        }
        let last = i + 1 == self.chunks;
        let plain = if last {
            self.len - i * self.chunk
        } else {
            self.chunk
        };
        let at = HEADER_LEN + i * (self.chunk + TAG_LEN);
        self.inner.seek(SeekFrom::Start(at))?;
        self.cached = u64::MAX;
        self.buf.resize(plain as usize, 0);
        let mut tag = [0u8; TAG_LEN as usize];
        let read = self
            .inner
            .read_exact(&mut self.buf)
            .and_then(|()| self.inner.read_exact(&mut tag));
        if let Err(e) = read {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                CryptoError::Length(format!("chunk {i} is cut short"))
            } else {
                e.into()
            });
        }
        let n = nonce(&self.prefix, i, last)?;
        self.key
            .cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&n),
                &self.aad,
                &mut self.buf,
                Tag::from_slice(&tag),
            )
            .map_err(|_| CryptoError::Auth(i))?;
        self.cached = i;
        Ok(())
    }
}

impl<R: Read + Seek> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        let i = self.pos / self.chunk;
        self.load(i)?;
        let off = (self.pos - i * self.chunk) as usize;
        let n = out.len().min(self.buf.len() - off);
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for DecryptReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) => {
                self.pos = t;
                Ok(t)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            )),
        }
    }
}

/// Opens an encrypted file for reading.
pub fn open_file(path: &Path, keys: &Keyring) -> Result<DecryptReader<File>, CryptoError> {
    DecryptReader::open(File::open(path)?, keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn key(b: u8) -> Key {
        Key::from_bytes(&[b; 32])
    }

    fn seal(data: &[u8], k: &Key, chunk: u32) -> Vec<u8> {
        let mut w = EncryptWriter::new(Cursor::new(Vec::new()), k, chunk).unwrap();
        // Odd write sizes cross chunk boundaries.
        for part in data.chunks(7) {
            w.write_all(part).unwrap();
        }
        let (c, s) = w.finish().unwrap();
        assert_eq!(s.plaintext_len, data.len() as u64);
        assert_eq!(s.sha256.to_vec(), Sha256::digest(data).to_vec());
        c.into_inner()
    }

    fn ring(k: &Key) -> Keyring {
        Keyring::new(k.clone(), vec![])
    }

    fn open(file: &[u8], keys: &Keyring) -> Result<DecryptReader<Cursor<Vec<u8>>>, CryptoError> {
        DecryptReader::open(Cursor::new(file.to_vec()), keys)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn round_trips_every_size_around_chunk_boundaries() {
        let k = key(1);
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 100] {
            let d = data(n);
            let f = seal(&d, &k, 16);
            let chunks = n.div_ceil(16).max(1);
            assert_eq!(f.len(), 40 + n + 16 * chunks, "size {n}");
            let mut r = open(&f, &ring(&k)).unwrap();
            assert_eq!(r.len(), n as u64);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, d, "size {n}");
        }
    }

    #[test]
    fn random_access_reads_any_range() {
        let k = key(2);
        let d = data(1000);
        let f = seal(&d, &k, 64);
        let mut r = open(&f, &ring(&k)).unwrap();
        for (a, b) in [
            (0, 1),
            (63, 65),
            (64, 128),
            (500, 1000),
            (999, 1000),
            (0, 1000),
        ] {
            r.seek(SeekFrom::Start(a)).unwrap();
            let mut out = vec![0u8; (b - a) as usize];
            r.read_exact(&mut out).unwrap();
            assert_eq!(out, &d[a as usize..b as usize]);
        }
        r.seek(SeekFrom::Start(5000)).unwrap();
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn wrong_key_is_refused_and_older_keys_still_read() {
        let (old, new) = (key(3), key(4));
        let f = seal(b"hello recording", &old, 64);
        let e = open(&f, &ring(&new)).err().unwrap();
        assert!(
            matches!(e, CryptoError::UnknownKey(ref id) if *id == old.id()),
            "{e}"
        );
        let rotated = Keyring::new(new.clone(), vec![old.clone()]);
        let mut out = String::new();
        open(&f, &rotated)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello recording");
        // Same id, different key bytes (forged id): authentication fails.
        let mut forged = f.clone();
        forged[8..16].copy_from_slice(&new.id);
        assert!(matches!(
            open(&forged, &ring(&new)).err().unwrap(),
            CryptoError::Auth(0)
        ));
    }

    #[test]
    fn tampering_truncation_and_reordering_are_errors_never_bytes() {
        let k = key(5);
        let d = data(200);
        let f = seal(&d, &k, 64); // 4 chunks: 64,64,64,8
        let read_all = |f: &[u8]| -> Result<Vec<u8>, String> {
            let mut r = open(f, &ring(&k)).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            r.read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        };
        assert_eq!(read_all(&f).unwrap(), d);
        // A flipped ciphertext bit in every position of chunk 1.
        for i in [40 + 80, 40 + 80 + 79] {
            let mut t = f.clone();
            t[i] ^= 1;
            let e = read_all(&t).unwrap_err();
            assert!(e.contains("chunk 1 failed authentication"), "{e}");
        }
        // Truncated anywhere.
        for cut in [0, 3, 39, 40, 100, f.len() - 1] {
            assert!(read_all(&f[..cut]).is_err(), "cut at {cut}");
        }
        // Cut at a chunk boundary with the length forged to match: the new last chunk was
        // not sealed as last.
        let mut t = f[..40 + 3 * 80].to_vec();
        t[28..36].copy_from_slice(&192u64.to_be_bytes());
        let e = read_all(&t).unwrap_err();
        assert!(e.contains("chunk 2 failed"), "{e}");
        // Chunks 0 and 1 swapped.
        let mut t = f.clone();
        t[40..120].copy_from_slice(&f[120..200]);
        t[120..200].copy_from_slice(&f[40..120]);
        assert!(read_all(&t).unwrap_err().contains("chunk 0 failed"));
        // Header fields under the tag: chunk size, prefix.
        let mut t = f.clone();
        t[20] ^= 1;
        assert!(read_all(&t).is_err());
        let mut t = f.clone();
        t[24..28].copy_from_slice(&0u32.to_be_bytes());
        assert!(read_all(&t).unwrap_err().contains("chunk size 0"));
        let mut t = f.clone();
        t[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_all(&t).unwrap_err().contains("out of range"));
        let mut t = f.clone();
        t[28..36].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(read_all(&t).is_err());
        // Not ours at all.
        assert!(matches!(
            open(b"RIFF....WAVEfmt junk junk junk junk junk junk", &ring(&k))
                .err()
                .unwrap(),
            CryptoError::NotEncrypted
        ));
        let mut t = f.clone();
        t[4] = 9;
        assert!(matches!(
            open(&t, &ring(&k)).err().unwrap(),
            CryptoError::Version(9)
        ));
    }

    proptest::proptest! {
        /// Any data, chunk size and range reads back exactly.
        #[test]
        fn any_range_of_any_file_reads_back(
            len in 0usize..3000,
            chunk in 1u32..700,
            a in 0u64..3100,
            n in 0usize..3100,
        ) {
            let k = key(11);
            let d = data(len);
            let f = seal(&d, &k, chunk);
            let mut r = open(&f, &ring(&k)).unwrap();
            r.seek(SeekFrom::Start(a)).unwrap();
            let mut out = Vec::new();
            (&mut r).take(n as u64).read_to_end(&mut out).unwrap();
            let start = (a as usize).min(len);
            let end = (start + n).min(len);
            proptest::prop_assert_eq!(&out[..], &d[start..end]);
        }

        /// Any single flipped bit or cut is refused, at open or at the chunk that holds it.
        #[test]
        fn any_damage_is_detected(bit in 0usize..(8 * (40 + 300 + 5 * 16)), cut in 0usize..460) {
            let k = key(12);
            let d = data(300);
            let f = seal(&d, &k, 64);
            let read_all = |f: &[u8]| -> Result<Vec<u8>, String> {
                let mut r = open(f, &ring(&k)).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                r.read_to_end(&mut out).map_err(|e| e.to_string())?;
                Ok(out)
            };
            let mut t = f.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert!(read_all(&t).is_err());
            if cut < f.len() {
                proptest::prop_assert!(read_all(&f[..cut]).is_err());
            }
        }
    }

    #[test]
    fn key_files_parse_and_insecure_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/recording.key");
        let ring1 = Keyring::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ring2 = Keyring::load_or_create(&p).unwrap();
        assert_eq!(ring1.current().id(), ring2.current().id());
        assert_eq!(ring1.current().id().len(), 16);
        // The id is the first 16 hex digits of SHA-256(key).
        let hex_key = std::fs::read_to_string(&p).unwrap();
        let raw = hex::decode(hex_key.trim()).unwrap();
        assert_eq!(
            ring1.current().id(),
            hex::encode(Sha256::digest(&raw))[..16]
        );
        // Raw 32-byte form.
        let rawp = dir.path().join("raw.key");
        std::fs::write(&rawp, &raw).unwrap();
        std::fs::set_permissions(&rawp, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Key::load(&rawp).unwrap().id(), ring1.current().id());
        // Group-readable: refused with a clear message.
        std::fs::set_permissions(&rawp, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Key::load(&rawp).unwrap_err().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&rawp, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(Key::load(&rawp).is_err());
        // Junk.
        for junk in [&b"short"[..], &[b'z'; 64][..], &[0u8; 33][..]] {
            assert!(Key::parse(junk).is_err());
        }
        // Rotation: the old key moves to keys/, a new one is created; both read.
        let f = seal(b"before rotation", ring1.current(), 64);
        std::fs::create_dir(dir.path().join("sub/keys")).unwrap();
        std::fs::rename(&p, dir.path().join("sub/keys/old.key")).unwrap();
        let ring3 = Keyring::load_or_create(&p).unwrap();
        assert_ne!(ring3.current().id(), ring1.current().id());
        let mut out = String::new();
        open(&f, &ring3).unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out, "before rotation");
        // An insecure older key is refused too.
        std::fs::set_permissions(
            dir.path().join("sub/keys/old.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(Keyring::load_or_create(&p).is_err());
    }
}
