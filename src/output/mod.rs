//! What the user reads: each result and event printed once, in one place — text lines on
//! stderr and the result on stdout, or one `--json` object per result — and the progress bar.

pub mod json;
pub mod progress;
pub mod text;

use std::time::Duration;

use crate::cli::config::Config;
use crate::commands::copy::{Copied, Planned};
use crate::commands::deploy::{Change, Event};
use crate::commands::inspect::Inspected;
use crate::commands::push::Pushed;
use crate::commands::Told;
use crate::error::{Error, Result};

/// How results are reported: `-q` (only results and errors), `--json` (documents on stdout).
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub quiet: bool,
    pub json: bool,
}

impl Report {
    /// A line on stderr, unless quiet; above the progress bar when one is drawn.
    fn note(&self, line: &str) {
        if !self.quiet {
            progress::say(&crate::error::escape(line));
        }
    }

    /// The push's summary on stderr, the reference on stdout: said as soon as the image exists.
    /// Under `--json` the one document comes at the end ([`Report::push_done`]).
    fn pushed(&self, p: &Pushed) {
        if let Some(why) = text::full_reason(p) {
            self.note(&why);
        }
        if !self.json {
            self.note(&text::summary(p));
            println!("{}", p.reference);
        }
    }

    /// What a one-shot push (and its deploy step) tells as it goes.
    pub fn push_told(&self, t: Told) {
        match t {
            Told::Pushed(p, _) => self.pushed(p),
            Told::Deploy(e) => self.event(&e, false),
            Told::PushFailed(e) | Told::DeployFailed(e) => self.error(e),
        }
    }

    /// A push, with `--deploy` its outcome, is done: the `--json` document, and the exit code.
    pub fn push_done(
        &self,
        p: &Pushed,
        deployed: Option<Result<Vec<Change>>>,
        total: Duration,
    ) -> Result<(), u8> {
        let failed = match &deployed {
            Some(Err(e)) => Some(e.code() as u8),
            _ => None,
        };
        if let Some(Err(e)) = &deployed {
            eprintln!("error: {e}");
        }
        if self.json {
            let mut doc = json::pushed(p, total);
            match deployed {
                Some(Ok(changes)) => doc["deployed"] = json::changes(&changes),
                Some(Err(e)) => doc["deploy_error"] = json::error(&e)["error"].clone(),
                None => {}
            }
            println!("{doc}");
        }
        failed.map_or(Ok(()), Err)
    }

    /// What a watch tells: one status line and the reference per push, or one document.
    pub fn watch_told(&self, t: Told) {
        match t {
            Told::Pushed(p, took) => {
                if let Some(why) = text::full_reason(p) {
                    self.note(&why);
                }
                if self.json {
                    println!("{}", json::pushed(p, took));
                } else {
                    self.note(&text::cycle(p, took));
                    println!("{}", p.reference);
                }
            }
            Told::PushFailed(e) => {
                eprintln!("error: {e} (still watching)");
                if self.json {
                    println!("{}", json::error(e));
                }
            }
            Told::DeployFailed(e) => eprintln!("error: {e} (still watching)"),
            Told::Deploy(e) => self.event(&e, false),
        }
    }

    /// A deploy step's event on stderr; a dry run's patch on stdout where it is the command's
    /// result (`deploy`, `rollback`), on stderr after a push (whose stdout is the reference).
    pub fn event(&self, e: &Event, result_on_stdout: bool) {
        let line = text::event(e);
        match e {
            Event::WouldPatch { .. } if result_on_stdout && !self.json => println!("{line}"),
            Event::WouldPatch { .. } => eprintln!("{line}"),
            _ => self.note(&line),
        }
    }

    /// `deploy` and `rollback`: one line per container set, or the document. A dry run's
    /// result is the patch it printed.
    pub fn changes(&self, changes: &[Change], dry_run: bool) {
        if self.json {
            println!("{}", serde_json::json!({"changes": json::changes(changes)}));
        } else if !dry_run {
            for c in changes {
                println!("{}", text::change(c));
            }
        }
    }

    pub fn planned(&self, p: &Planned) {
        self.note(&text::planned(p));
    }

    pub fn copied(&self, c: &Copied) {
        self.note(&text::copied(c));
        if self.json {
            println!("{}", json::copied(c));
        } else {
            println!("{}", c.reference);
        }
    }

    pub fn inspected(&self, i: &Inspected) {
        if self.json {
            println!("{}", json::inspected(i));
        } else {
            println!("{}", text::inspected(i));
        }
    }

    pub fn config(&self, c: &Config) {
        if self.json {
            println!("{}", c.to_json());
        } else {
            // Names in the files (registry aliases) are the files' text: escaped like any other.
            for line in c.show().lines() {
                println!("{}", crate::error::escape(line));
            }
        }
    }

    /// The error, once: one line on stderr, and the document on stdout with `--json`.
    pub fn error(&self, e: &Error) {
        eprintln!("error: {e}");
        if self.json {
            println!("{}", json::error(e));
        }
    }
}
