//! Counters of a run's transfer — blob bytes sent, blobs planned and settled — bumped where the
//! bytes move and read by whatever shows progress (the library itself never draws anything).

use std::sync::atomic::{AtomicU64, Ordering};

static SENT: AtomicU64 = AtomicU64::new(0);
static BLOBS_DONE: AtomicU64 = AtomicU64::new(0);
static BLOBS_TOTAL: AtomicU64 = AtomicU64::new(0);

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
