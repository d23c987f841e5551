//! Counters of a run — its phase, the entries and bytes of the layers built, blob bytes sent,
//! blobs planned and settled — bumped where the work happens and read by whatever shows progress
//! (the library itself never draws anything).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

static PHASE: AtomicU8 = AtomicU8::new(0);
static BUILT_ENTRIES: AtomicU64 = AtomicU64::new(0);
static BUILT_BYTES: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
static BLOBS_DONE: AtomicU64 = AtomicU64::new(0);
static BLOBS_TOTAL: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// What a run is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing yet (logging in, reading the command line's files).
    Starting,
    /// Reading the base: its manifests, its config, once its layers' headers.
    Base,
    /// Walking the files and writing the layers.
    Building,
    /// Moving blobs and writing manifests.
    Sending,
    /// Running the image's build command.
    Compiling,
}

pub fn phase(p: Phase) {
    PHASE.store(p as u8, Ordering::Relaxed);
}

pub fn current() -> Phase {
    match PHASE.load(Ordering::Relaxed) {
        1 => Phase::Base,
        2 => Phase::Building,
        3 => Phase::Sending,
        4 => Phase::Compiling,
        _ => Phase::Starting,
    }
}

/// One more entry written into a layer, with `bytes` of file data.
pub fn built(bytes: u64) {
    BUILT_ENTRIES.fetch_add(1, Ordering::Relaxed);
    BUILT_BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// (entries, bytes) written into layers so far.
pub fn read_built() -> (u64, u64) {
    (
        BUILT_ENTRIES.load(Ordering::Relaxed),
        BUILT_BYTES.load(Ordering::Relaxed),
    )
}

/// One more HTTP request sent to a registry (a retry too: it crossed the wire).
pub fn request() {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// HTTP requests sent to registries by this process so far.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// Bytes of blob data sent in a request body (a resent piece counts again: it crossed the wire).
pub fn sent(bytes: usize) {
    SENT.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// This many more blobs are part of the run.
pub fn planned(blobs: usize) {
    BLOBS_TOTAL.fetch_add(blobs as u64, Ordering::Relaxed);
}

/// One blob is settled: present, mounted, copied or uploaded.
pub fn blob_done() {
    BLOBS_DONE.fetch_add(1, Ordering::Relaxed);
}

/// (bytes sent, blobs settled, blobs planned) so far.
pub fn read() -> (u64, u64, u64) {
    (
        SENT.load(Ordering::Relaxed),
        BLOBS_DONE.load(Ordering::Relaxed),
        BLOBS_TOTAL.load(Ordering::Relaxed),
    )
}
