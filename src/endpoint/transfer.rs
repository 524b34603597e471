//! What the stores share: their errors, what a store holds under a key,
//! the bounds of a ranged read, reused part buffers, and hashing beside a
//! copy. A child of `endpoint`
//! so that `dir`, `s3` and the `Endpoint` that dispatches to them depend on
//! it and not on each other.

use super::meta::{MetaError, ObjectMeta};
use super::throttle::Throttle;
use bytes::Bytes;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A failed request to a store.
#[derive(Debug, thiserror::Error)]
#[error("endpoint `{endpoint}`: {message}")]
pub struct EndpointError {
    /// The endpoint's name.
    pub endpoint: String,
    /// What the store said.
    pub message: String,
}

impl EndpointError {
    /// An error of endpoint `endpoint`.
    pub fn new(endpoint: &str, message: String) -> EndpointError {
        EndpointError {
            endpoint: endpoint.to_string(),
            message,
        }
    }
}

/// Why moving data to or from a store failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading or writing the local file failed.
    #[error("local I/O: {0}")]
    Local(#[from] io::Error),
    /// The store failed.
    #[error("{0}")]
    Remote(#[from] EndpointError),
    /// The data did not match what was expected (size or hash).
    #[error("{0}")]
    Mismatch(String),
}

/// What a store holds under one key.
#[derive(Debug)]
pub struct RemoteObject {
    /// Content length.
    pub size: u64,
    /// ferry's metadata; `None` for an object ferry did not write (or, in a
    /// store written by ferry up to 53a13dd, one whose upload was cut off
    /// before its metadata was recorded).
    pub meta: Option<Result<ObjectMeta, MetaError>>,
    /// When the store last wrote it (the time an object ferry did not write
    /// is imported with).
    pub modified: std::time::SystemTime,
}

/// Part buffers of one streamed upload, reused once a part is written, so
/// a large file costs a few buffers instead of fresh pages for every part.
/// Every part read through it is paid for first when it has a
/// [`Throttle`] (the agent's `bandwidth`).
#[derive(Clone, Default)]
pub struct PartPool {
    bufs: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    throttle: Option<Arc<Throttle>>,
}

/// A part buffer that goes back to its pool when the store drops it.
struct PooledPart {
    buf: Vec<u8>,
    pool: PartPool,
}

impl AsRef<[u8]> for PooledPart {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledPart {
    fn drop(&mut self) {
        // Kept at its length: the next read of the same size overwrites it
        // without zero-filling it first.
        let buf = std::mem::take(&mut self.buf);
        self.pool.bufs.lock().expect("part pool").push(buf);
    }
}

impl PartPool {
    /// A pool whose reads are paid for from `throttle`, if any.
    pub fn throttled(throttle: Option<Arc<Throttle>>) -> PartPool {
        PartPool {
            throttle,
            ..PartPool::default()
        }
    }

    /// `n` bytes of `file` at `offset` in a pooled buffer; a file that ends
    /// early has shrunk while being read.
    pub fn read_at(&self, file: &File, offset: u64, n: u64) -> io::Result<Bytes> {
        if let Some(t) = &self.throttle {
            t.pay(n);
        }
        let mut buf = self.bufs.lock().expect("part pool").pop().unwrap_or_default();
        let n = usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // Zero-fills only what a reused buffer has to grow by.
        buf.resize(n, 0);
        let mut done = 0;
        while done < n {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being read",
                    ));
                }
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Bytes::from_owner(PooledPart {
            buf,
            pool: self.clone(),
        }))
    }
}

/// Runs `produce` beside a thread that hashes, in order, every chunk
/// `produce` sends it, and returns what `produce` returned with the hash.
/// The copy paths use it so hashing adds little to a copy's wall time; at
/// most `in_flight` chunks wait for the hasher.
pub(super) fn hash_beside<T>(
    in_flight: usize,
    produce: impl FnOnce(&crossbeam_channel::Sender<Bytes>) -> T,
) -> (T, blake3::Hash) {
    let (to_hasher, chunks) = crossbeam_channel::bounded::<Bytes>(in_flight);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut h = blake3::Hasher::new();
            for chunk in chunks {
                h.update(&chunk);
            }
            h.finalize()
        });
        let out = produce(&to_hasher);
        drop(to_hasher);
        (out, hasher.join().expect("hasher thread"))
    })
}

/// The BLAKE3 hash of the first `n` bytes of `file` (read from the start;
/// the file's position is left after them).
pub fn hash_file(file: &File, n: u64) -> io::Result<blake3::Hash> {
    (&*file).rewind()?;
    let mut hasher = blake3::Hasher::new();
    let copied = io::copy(&mut file.take(n), &mut hasher)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while being read",
        ));
    }
    Ok(hasher.finalize())
}

/// Whether `start..end` lies within an object of `size` bytes; the reason
/// when it does not.
pub(super) fn check_range(start: u64, end: u64, size: u64) -> Result<(), String> {
    if start > end {
        Err(format!("range {start}..{end} ends before it starts"))
    } else if end > size {
        Err(format!(
            "range {start}..{end} goes past the object's end ({size} bytes)"
        ))
    } else {
        Ok(())
    }
}

/// The buffer a download of an object of `size` bytes reads into: a read of
/// at most 1 MiB, but never larger than the object (and its end of file).
/// A buffer is zeroed when it is made, and a fixed 1 MiB one cost every
/// 1 KiB file a 1 MiB `memset`: 1.7 % of a site-sync round's CPU on both
/// cores, 2,000 files rewritten (`perf`; docs/benchmarks.md, "Site sync").
pub(super) fn read_buffer(size: u64) -> Vec<u8> {
    vec![0u8; size.saturating_add(1).clamp(4096, 1 << 20) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_bounded_by_the_object() {
        assert_eq!(check_range(0, 10, 10), Ok(()));
        assert_eq!(check_range(10, 10, 10), Ok(()));
        assert_eq!(check_range(0, 0, 0), Ok(()));
        assert_eq!(
            check_range(0, 11, 10),
            Err("range 0..11 goes past the object's end (10 bytes)".into())
        );
        assert_eq!(
            check_range(11, 11, 10).unwrap_err(),
            "range 11..11 goes past the object's end (10 bytes)"
        );
        assert_eq!(check_range(5, 4, 10).unwrap_err(), "range 5..4 ends before it starts");
    }
}
