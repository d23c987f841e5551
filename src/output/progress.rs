//! Progress while blobs move: a bar on stderr drawn from the transfer's counters (`meter`) —
//! only on a terminal, never with -q, -v or --json, so CI logs and machine output stay clean.

use std::io::IsTerminal;
use std::time::Duration;
/// The bar being drawn, for lines printed meanwhile ([`say`], [`out`]).
static ACTIVE: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// A line on stderr that does not tear the bar: printed above it when one is drawn. A stderr
/// that cannot be written (a closed pipe) loses the line, nothing more.
pub fn say(line: &str) {
    match ACTIVE.lock().ok().and_then(|a| a.clone()) {
        Some(bar) => bar.println(line),
        None => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

/// A line on stdout (a result), with the bar taken down while it is written so that the two
/// never tear each other on one terminal. When stdout is closed (`| head -c 1`), the reader has
/// had enough: layerup ends quietly, as other command-line tools do, instead of panicking.
pub fn out(line: &str) {
    use std::io::Write;
    let write = || {
        let mut o = std::io::stdout().lock();
        writeln!(o, "{line}").and_then(|()| o.flush())
    };
    let written = match ACTIVE.lock().ok().and_then(|a| a.clone()) {
        Some(bar) => bar.suspend(write),
        None => write(),
    };
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// A bar drawn from the counters until dropped — the phase, then what it has done: reading the
/// base, the entries and bytes built, the blobs and bytes sent — and cleared when it ends;
/// nothing unless stderr is a terminal.
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
            indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
        );
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(bar.clone());
        }
        let shown = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut sending_since: Option<(std::time::Instant, u64)> = None;
            loop {
                shown.set_message(line(&mut sending_since));
                shown.tick();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Bar {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }
}

/// The bar's words for where the run stands now.
fn line(sending_since: &mut Option<(std::time::Instant, u64)>) -> String {
    use crate::meter::Phase;
    use crate::units::human;
    match crate::meter::current() {
        Phase::Starting => "starting".into(),
        Phase::Base => "reading the base".into(),
        Phase::Compiling => "running the build".into(),
        Phase::Building => {
            let (entries, bytes) = crate::meter::read_built();
            format!(
                "building the layer: {entries} entr{}, {}",
                if entries == 1 { "y" } else { "ies" },
                human(bytes)
            )
        }
        Phase::Sending => {
            let (sent, done, total) = crate::meter::read();
            let (since, from) = *sending_since.get_or_insert((std::time::Instant::now(), sent));
            let secs = since.elapsed().as_secs_f64();
            let rate = if secs > 0.2 {
                format!(" ({}/s)", human(((sent - from) as f64 / secs) as u64))
            } else {
                String::new()
            };
            format!(
                "sending: {done} of {total} blob{}, {} sent{rate}",
                if total == 1 { "" } else { "s" },
                human(sent)
            )
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
            // A last tick of the ticker, still running elsewhere, cannot draw it again.
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
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
