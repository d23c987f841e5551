//! Progress while blobs move: a bar on stderr drawn from the transfer's counters (`meter`) —
//! only on a terminal, never with -q, -v or --json, so CI logs and machine output stay clean.

use std::io::IsTerminal;
use std::time::Duration;
/// The bar being drawn, for lines printed meanwhile ([`say`]).
static ACTIVE: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// A line on stderr that does not tear the bar: printed above it when one is drawn.
pub fn say(line: &str) {
    match ACTIVE.lock().ok().and_then(|a| a.clone()) {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
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
                let (sent, done, total) = crate::meter::read();
                shown.set_message(format!("{done}/{total}"));
                shown.set_position(sent);
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

/// One line per image, updated in place: a watch of several images on a terminal. Lines go in
/// the order images first report.
pub struct Board {
    multi: indicatif::MultiProgress,
    lines: std::sync::Mutex<std::collections::BTreeMap<String, indicatif::ProgressBar>>,
}

impl Board {
    /// A board on stderr, when it is a terminal and `wanted`.
    pub fn start(wanted: bool) -> Option<Board> {
        if !wanted || !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Board {
            multi: indicatif::MultiProgress::new(),
            lines: Default::default(),
        })
    }

    /// Sets the line of `image`.
    pub fn set(&self, image: &str, line: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let bar = lines.entry(image.to_string()).or_insert_with(|| {
            let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg}").expect("a valid template"),
            );
            bar
        });
        bar.set_message(line.to_string());
    }
}
