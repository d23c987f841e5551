//! Progress while blobs move: counters the transfer engine bumps (bytes on the wire, blobs
//! settled), and a bar on stderr that shows them — only on a terminal, never with -q, -v or
//! --json, so CI logs and machine output stay clean.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static SENT: AtomicU64 = AtomicU64::new(0);
static BLOBS_DONE: AtomicU64 = AtomicU64::new(0);
static BLOBS_TOTAL: AtomicU64 = AtomicU64::new(0);
/// The bar being drawn, for lines printed meanwhile ([`say`]).
static ACTIVE: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// A line on stderr that does not tear the bar: printed above it when one is drawn.
pub fn say(line: &str) {
    match ACTIVE.lock().ok().and_then(|a| a.clone()) {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

/// Bytes of blob data sent in a request body (a resent chunk counts again: it crossed the wire).
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

/// A bar drawn from the counters until dropped; nothing unless stderr is a terminal.
pub struct Bar {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Bar {
    pub fn start(wanted: bool) -> Bar {
        if !wanted || !std::io::stderr().is_terminal() {
            return Bar {
                bar: None,
                ticker: None,
            };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} blobs {msg}, {binary_bytes} sent ({binary_bytes_per_sec})",
            )
            .expect("a valid template"),
        );
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(bar.clone());
        }
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                let (done, total) = (
                    BLOBS_DONE.load(Ordering::Relaxed),
                    BLOBS_TOTAL.load(Ordering::Relaxed),
                );
                shown.set_message(format!("{done}/{total}"));
                shown.set_position(SENT.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Bar {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            if let Ok(mut a) = ACTIVE.lock() {
                *a = None;
            }
            b.finish_and_clear();
        }
    }
}
