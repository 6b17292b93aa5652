//! The grid's recording download (录音下载): finds a recording in the index and streams its
//! first configured format, decrypted on the fly, whole or a byte range.
//!
//! Memory per download is bounded: a producer thread decrypts one chunk at a time into a
//! channel of capacity 1, so it runs at most about two chunks ahead of the socket; only the
//! chunks a range touches are decrypted.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::crypto::{self, DecryptReader, Keyring};
use super::store::{RecordingStore, StoredFile};
use super::transcode::Format;
use crate::api::grid::{ByteRange, Ranged, RecordingIndex, RecordingSource};
use crate::store::StoreError;

/// Bytes per message from the producer thread.
const PIECE: usize = 64 * 1024;

/// The recording index behind the grid route.
pub struct StoredRecordings {
    recordings_dir: PathBuf,
    keyring: Arc<Keyring>,
    /// Preference order: the first configured format a recording has is served.
    formats: Vec<Format>,
    store: Mutex<RecordingStore>,
}

impl StoredRecordings {
    /// Opens its own connection to the daemon's database.
    pub fn open(
        db_path: &Path,
        recordings_dir: PathBuf,
        keyring: Arc<Keyring>,
        formats: Vec<Format>,
    ) -> Result<StoredRecordings, StoreError> {
        Ok(StoredRecordings {
            recordings_dir,
            keyring,
            formats,
            store: Mutex::new(RecordingStore::open(db_path)?),
        })
    }

    /// The stored file to serve and its decrypting reader (checked: key, header, final chunk,
    /// and the length against the index).
    pub fn reader(&self, record_id: &str) -> io::Result<Option<(StoredFile, DecryptReader<File>)>> {
        let rec = {
            let store = self
                .store
                .lock()
                .map_err(|_| io::Error::other("recording index lock poisoned"))?;
            store.get(record_id).map_err(io::Error::other)?
        };
        let Some(rec) = rec else { return Ok(None) };
        let file = self
            .formats
            .iter()
            .chain(Format::ALL.iter())
            .find_map(|f| rec.file(*f))
            .cloned();
        let Some(file) = file else { return Ok(None) };
        let r = crypto::open_file(&self.recordings_dir.join(&file.path), &self.keyring)?;
        if r.len() != file.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: index says {} bytes, file holds {}",
                    file.path,
                    file.size,
                    r.len()
                ),
            ));
        }
        Ok(Some((file, r)))
    }
}

fn file_name(id: &str, f: Format) -> String {
    match f {
        Format::Wav => format!("{id}.wav"),
        Format::Alaw => format!("{id}.alaw.wav"),
        Format::Wav16k => format!("{id}.16k.wav"),
    }
}

impl RecordingIndex for StoredRecordings {
    fn open(
        &self,
        record_id: &str,
        _start_time: Option<&str>,
        range: Option<ByteRange>,
    ) -> io::Result<Option<RecordingSource>> {
        let Some((file, reader)) = self.reader(record_id)? else {
            return Ok(None);
        };
        let total = reader.len();
        let ranged = range.map_or(Ranged::Whole, |r| r.resolve(total));
        let (first, len) = match ranged {
            Ranged::Part { first, last, .. } => (first, last - first + 1),
            Ranged::Unsatisfiable { .. } => (0, 0),
            Ranged::Whole | Ranged::Unsupported => (0, total),
        };
        Ok(Some(RecordingSource {
            reader: Box::pin(stream(reader, first, len)?),
            content_type: file.format.content_type().into(),
            len: Some(len),
            file_name: file_name(record_id, file.format),
            ranged,
        }))
    }
}

/// Decrypts `len` bytes from `first` on a thread of its own, handing them over one piece at
/// a time.
fn stream<R: Read + Seek + Send + 'static>(
    mut reader: R,
    first: u64,
    len: u64,
) -> io::Result<ChannelReader> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(1);
    if len > 0 {
        std::thread::Builder::new()
            .name("rec-download".into())
            .spawn(move || {
                if let Err(e) = reader.seek(SeekFrom::Start(first)) {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
                let mut left = len;
                while left > 0 {
                    let mut buf = vec![0u8; (left as usize).min(PIECE)];
                    let msg = match reader.read(&mut buf) {
                        Ok(0) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "recording ended early",
                        )),
                        Ok(n) => {
                            buf.truncate(n);
                            left -= n as u64;
                            Ok(Bytes::from(buf))
                        }
                        Err(e) => Err(e),
                    };
                    let stop = msg.is_err();
                    // A send error means the client went away: stop decrypting.
                    if tx.blocking_send(msg).is_err() || stop {
                        return;
                    }
                }
            })?;
    }
    Ok(ChannelReader {
        rx,
        cur: Bytes::new(),
    })
}

/// `AsyncRead` over the producer's pieces; an error piece becomes a read error (the
/// response is cut short rather than completed with wrong bytes).
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.cur.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => self.cur = b,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = buf.remaining().min(self.cur.len());
        let piece = self.cur.split_to(n);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::crypto::Key;
    use crate::recording::transcode::tests::{config, spool};
    use tokio::io::AsyncReadExt;

    async fn body(src: RecordingSource) -> io::Result<Vec<u8>> {
        let mut r = src.reader;
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_the_first_configured_format_whole_and_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), vec![Format::Alaw, Format::Wav]);
        let mut store = RecordingStore::open(&cfg.db_path).unwrap();
        let job = spool(dir.path(), "rec-1", 40_000);
        let wav_plain = std::fs::read(&job.spool_wav).unwrap();
        cfg.run(&mut store, &job, 1).unwrap();
        let idx = StoredRecordings::open(
            &cfg.db_path,
            cfg.recordings_dir.clone(),
            Arc::clone(&cfg.keyring),
            vec![Format::Alaw, Format::Wav],
        )
        .unwrap();
        let whole = idx.open("rec-1", None, None).unwrap().unwrap();
        assert_eq!(whole.ranged, Ranged::Whole);
        assert_eq!(whole.file_name, "rec-1.alaw.wav");
        let total = whole.len.unwrap();
        assert_eq!(total, Format::Alaw.output_len(40_000));
        let alaw = body(whole).await.unwrap();
        assert_eq!(alaw.len() as u64, total);
        assert_eq!(&alaw[..4], b"RIFF");
        // Ranges across chunk boundaries (4 KiB chunks in the test config).
        for (r, a, b) in [
            (ByteRange::FromTo(0, 0), 0, 0),
            (ByteRange::FromTo(4090, 8200), 4090, 8200),
            (ByteRange::From(total - 3), total - 3, total - 1),
            (ByteRange::Suffix(5000), total - 5000, total - 1),
        ] {
            let src = idx.open("rec-1", None, Some(r)).unwrap().unwrap();
            assert_eq!(
                src.ranged,
                Ranged::Part {
                    first: a,
                    last: b,
                    total
                }
            );
            assert_eq!(src.len, Some(b - a + 1));
            assert_eq!(body(src).await.unwrap(), &alaw[a as usize..=b as usize]);
        }
        let src = idx
            .open("rec-1", None, Some(ByteRange::From(total)))
            .unwrap()
            .unwrap();
        assert_eq!(src.ranged, Ranged::Unsatisfiable { total });
        assert!(body(src).await.unwrap().is_empty());
        assert!(idx.open("nope", None, None).unwrap().is_none());
        // Preference falls back to what is stored.
        let idx16 = StoredRecordings::open(
            &cfg.db_path,
            cfg.recordings_dir.clone(),
            Arc::clone(&cfg.keyring),
            vec![Format::Wav16k, Format::Wav],
        )
        .unwrap();
        let src = idx16.open("rec-1", None, None).unwrap().unwrap();
        assert_eq!(src.file_name, "rec-1.wav");
        assert_eq!(body(src).await.unwrap(), wav_plain);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_key_tampering_and_truncation_never_yield_wrong_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), vec![Format::Wav]);
        let mut store = RecordingStore::open(&cfg.db_path).unwrap();
        let stored = cfg
            .run(&mut store, &spool(dir.path(), "rec-1", 20_000), 1)
            .unwrap();
        let path = cfg.recordings_dir.join(&stored.files[0].path);
        let original = std::fs::read(&path).unwrap();
        let open_with = |ring: Keyring| {
            StoredRecordings::open(
                &cfg.db_path,
                cfg.recordings_dir.clone(),
                Arc::new(ring),
                vec![Format::Wav],
            )
            .unwrap()
        };
        // Wrong key: refused at open (the route answers 500 "could not be read").
        let other = open_with(Keyring::new(Key::from_bytes(&[1; 32]), vec![]));
        let e = other.open("rec-1", None, None).err().unwrap();
        assert!(e.to_string().contains("not in the keyring"), "{e}");
        let idx = open_with((*cfg.keyring).clone());
        // A flipped byte in a middle chunk: open succeeds (only the last chunk is checked
        // up front), the stream fails at that chunk rather than deliver altered audio.
        let mut t = original.clone();
        t[40 + 5 * (4096 + 16) + 100] ^= 0x40;
        std::fs::write(&path, &t).unwrap();
        let src = idx.open("rec-1", None, None).unwrap().unwrap();
        let e = body(src).await.unwrap_err();
        assert!(
            e.to_string().contains("chunk 5 failed authentication"),
            "{e}"
        );
        // A range before the damaged chunk is still served intact.
        let src = idx
            .open("rec-1", None, Some(ByteRange::FromTo(0, 999)))
            .unwrap()
            .unwrap();
        assert_eq!(body(src).await.unwrap().len(), 1000);
        // Truncated: refused at open.
        std::fs::write(&path, &original[..original.len() - 10]).unwrap();
        let e = idx.open("rec-1", None, None).err().unwrap();
        assert!(e.to_string().contains("truncated"), "{e}");
        // Missing file.
        std::fs::remove_file(&path).unwrap();
        assert!(idx.open("rec-1", None, None).is_err());
    }
}
