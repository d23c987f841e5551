//! Reproducible parallel gzip: the input is cut into fixed 1 MiB chunks, each deflated on its own
//! core (primed with the 32 KiB before it, as pigz does) and joined with sync flushes into one
//! standard gzip member. The bytes depend only on the input and the level — never on the number
//! of threads or their timing — which parallel gzip libraries such as gzp do not promise.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input bytes per chunk. Part of the output format: changing it changes every digest.
const CHUNK: usize = 1 << 20;
/// Deflate's window: each chunk may refer back this far, into the chunk before it.
const WINDOW: usize = 32 << 10;
/// gzip header: deflate, no flags, mtime 0, no extra flags, OS unknown (RFC 1952).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    dictionary: Vec<u8>,
    data: Vec<u8>,
    /// A recycled buffer for the output.
    out: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

/// A compressed chunk, and the input buffer handed back for reuse.
struct Done {
    data: Vec<u8>,
    out: Vec<u8>,
}

pub struct ParallelGzip<W: Write> {
    inner: Option<W>,
    chunk: Vec<u8>,
    /// The last WINDOW bytes of the previous chunk.
    previous_tail: Vec<u8>,
    crc: Crc,
    jobs: Option<SyncSender<Job>>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    max_pending: usize,
    /// Buffers back from finished chunks. Reusing them keeps memory flat: fresh 1 MiB buffers
    /// freed on other threads pile up in glibc's per-thread arenas.
    spare: Vec<Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParallelGzip<W> {
    /// `threads` workers (at least one); output is identical for any number.
    pub fn new(mut inner: W, level: u32, threads: usize) -> io::Result<Self> {
        inner.write_all(&HEADER)?;
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || loop {
                    let job = match rx.lock().expect("job queue").recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    let Job {
                        dictionary,
                        data,
                        out,
                        last,
                        reply,
                    } = job;
                    // A fresh deflate state for every chunk. Never reuse one with `reset()`:
                    // with zlib-rs 0.6 a reset state compressed 3 of 244 chunks of a real tar
                    // differently from a fresh one, and reusing states in another order gave
                    // other bytes — digests would depend on thread scheduling.
                    let mut state = Compress::new(Compression::new(level), false);
                    let result = deflate(&mut state, &dictionary, &data, last, out)
                        .map(|out| Done { data, out });
                    let _ = reply.send(result);
                })
            })
            .collect();
        Ok(ParallelGzip {
            inner: Some(inner),
            chunk: Vec::with_capacity(CHUNK),
            previous_tail: Vec::new(),
            crc: Crc::new(),
            jobs: Some(tx),
            pending: VecDeque::new(),
            // Every worker busy, one chunk queued, one being written: memory stays near
            // (threads + 2) x (1 MiB in + its output), whatever the input size.
            max_pending: threads + 2,
            spare: Vec::new(),
            workers,
        })
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let next = if last { Vec::new() } else { self.buffer() };
        let data = std::mem::replace(&mut self.chunk, next);
        let dictionary = std::mem::take(&mut self.previous_tail);
        self.previous_tail
            .extend_from_slice(&data[data.len().saturating_sub(WINDOW)..]);
        let out = self.buffer();
        let (reply, result) = sync_channel(1);
        let job = Job {
            dictionary,
            data,
            out,
            last,
            reply,
        };
        self.jobs
            .as_ref()
            .expect("not finished")
            .send(job)
            .map_err(|_| io::Error::other("a compression worker stopped"))?;
        self.pending.push_back(result);
        while self.pending.len() > self.max_pending || (last && !self.pending.is_empty()) {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let result = self.pending.pop_front().expect("a pending chunk");
        let done = result
            .recv()
            .map_err(|_| io::Error::other("a compression worker stopped"))??;
        self.inner
            .as_mut()
            .expect("not finished")
            .write_all(&done.out)?;
        for mut b in [done.data, done.out] {
            b.clear();
            self.spare.push(b);
        }
        Ok(())
    }

    /// Compresses what is left, writes the gzip trailer, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        let mut inner = self.inner.take().expect("finish once");
        inner.write_all(&self.crc.sum().to_le_bytes())?;
        inner.write_all(&self.crc.amount().to_le_bytes())?;
        Ok(inner)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        self.pending.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// One chunk as raw deflate: ended by a sync flush (byte-aligned, stream open) or, for the last
/// chunk, by the final block.
fn deflate(
    c: &mut Compress,
    dictionary: &[u8],
    data: &[u8],
    last: bool,
    mut out: Vec<u8>,
) -> io::Result<Vec<u8>> {
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.clear();
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        // zlib: a flush is complete when it returns with output space to spare.
        let done = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Text with the irregular repetition of real files (words from a small vocabulary in a
    /// pseudo-random order), so that match finding takes many different paths.
    fn sample(len: usize) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "import", "def ", "return", "self.", "value", "(x)", " = ", "\n    ", "layer",
            "digest", "for i in", "range", ": ", "None", "#", "0x1f",
        ];
        let mut v = Vec::with_capacity(len);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        while v.len() < len {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.extend_from_slice(WORDS[(seed >> 60) as usize].as_bytes());
            if seed >> 58 & 3 == 0 {
                v.extend_from_slice(format!("{}", seed >> 40).as_bytes());
            }
        }
        v.truncate(len);
        v
    }

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 5, threads).unwrap();
        // Odd write sizes, as tar writes.
        for piece in data.chunks(7919) {
            g.write_all(piece).unwrap();
        }
        g.finish().unwrap()
    }

    #[test]
    fn output_is_the_same_for_any_thread_count() {
        let data = sample(5 * CHUNK + 12345);
        let one = gzip(&data, 1);
        assert_eq!(one, gzip(&data, 2));
        assert_eq!(one, gzip(&data, 7));
    }

    #[test]
    fn output_is_one_standard_gzip_member() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let data = sample(len);
            let gz = gzip(&data, 3);
            let mut back = Vec::new();
            // GzDecoder reads a single member only: all the data must be in the first one.
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "length {len}");
        }
    }

    #[test]
    fn chunks_primed_with_a_window_compress_as_well_as_one_stream() {
        let data = sample(4 * CHUNK);
        let mut one = flate2::write::GzEncoder::new(Vec::new(), Compression::new(5));
        one.write_all(&data).unwrap();
        let one = one.finish().unwrap().len() as f64;
        let parallel = gzip(&data, 2).len() as f64;
        assert!(parallel < one * 1.01, "parallel {parallel} vs single {one}");
    }
}
