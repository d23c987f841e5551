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

/// How results are reported: `-q` (only results and errors), `--json` (documents on stdout);
/// for one image of several, under its name.
#[derive(Clone)]
pub struct Report {
    pub quiet: bool,
    pub json: bool,
    /// The image's name, when a command works on several.
    pub image: Option<std::sync::Arc<str>>,
    /// A watch of several images on a terminal: one line per image, updated in place.
    pub board: Option<std::sync::Arc<progress::Board>>,
}

impl Report {
    pub fn new(quiet: bool, json: bool) -> Self {
        Report {
            quiet,
            json,
            image: None,
            board: None,
        }
    }

    /// The same, for the image `name` of several.
    pub fn named(&self, name: &str) -> Report {
        Report {
            image: Some(name.into()),
            ..self.clone()
        }
    }

    /// `line`, under the image's name when there is one.
    fn tagged(&self, line: &str) -> String {
        match &self.image {
            Some(name) => format!("{name}: {line}"),
            None => line.to_string(),
        }
    }

    /// A result on stdout: `NAME RESULT` for one image of several.
    fn result(&self, line: &str) {
        match &self.image {
            Some(name) => println!("{name} {line}"),
            None => println!("{line}"),
        }
    }

    /// A `--json` document on stdout, with the image's name in it.
    fn document(&self, mut doc: serde_json::Value) {
        if let (Some(name), Some(obj)) = (&self.image, doc.as_object_mut()) {
            obj.insert("image".into(), serde_json::json!(name.as_ref()));
        }
        println!("{doc}");
    }

    /// A line on stderr, unless quiet; above the progress bar when one is drawn.
    fn note(&self, line: &str) {
        if !self.quiet {
            progress::say(&crate::error::escape(&self.tagged(line)));
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
            self.result(&p.reference);
        }
    }

    /// What a one-shot push (and its deploy step) tells as it goes.
    pub fn push_told(&self, t: Told) {
        match t {
            Told::Pushed(p, _) => self.pushed(p),
            Told::Deploy(e) => self.event(&e, false),
            Told::PushFailed(e) | Told::DeployFailed(e) => self.error(e),
            Told::Stopped | Told::Synced(..) | Told::SyncFallback(_) | Told::Settling(_) => {}
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
            eprintln!("error: {}", self.tagged(&e.to_string()));
        }
        if self.json {
            let mut doc = json::pushed(p, total);
            match deployed {
                Some(Ok(changes)) => doc["deployed"] = json::changes(&changes),
                Some(Err(e)) => doc["deploy_error"] = json::error(&e)["error"].clone(),
                None => {}
            }
            self.document(doc);
        }
        failed.map_or(Ok(()), Err)
    }

    /// What a watch tells: one status line and the reference per push, or one document; on a
    /// board, the image's line.
    pub fn watch_told(&self, t: Told) {
        if let (Some(board), Some(name)) = (&self.board, &self.image) {
            if let Some(line) = text::board_line(&t) {
                board.set(name, &crate::error::escape(&format!("{name:<24} {line}")));
            }
            // The references still reach a program reading stdout; a person has the board.
            if let Told::Pushed(p, _) = &t {
                if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    self.result(&p.reference);
                }
            }
            return;
        }
        match t {
            Told::Pushed(p, took) => {
                if let Some(why) = text::full_reason(p) {
                    self.note(&why);
                }
                if self.json {
                    self.document(json::pushed(p, took));
                } else {
                    self.note(&text::cycle(p, took));
                    self.result(&p.reference);
                }
            }
            Told::PushFailed(e) => {
                eprintln!("error: {} (still watching)", self.tagged(&e.to_string()));
                if self.json {
                    self.document(json::error(e));
                }
            }
            Told::DeployFailed(e) => {
                eprintln!("error: {} (still watching)", self.tagged(&e.to_string()));
                if self.json {
                    self.document(json::deploy_error(e));
                }
            }
            Told::Deploy(e) => self.event(&e, false),
            Told::Stopped => self.note("its layerup.toml is gone: no longer watched"),
            Told::Synced(s, reference) => {
                self.note(&text::synced(s));
                if self.json {
                    self.document(json::synced(s, reference));
                }
            }
            Told::SyncFallback(why) => {
                self.note(&format!("not synced: {why}; rolling out"));
                if self.json {
                    self.document(json::sync_fallback(why));
                }
            }
            Told::Settling(why) => {
                self.note(&format!("updating the workloads' template: {why}"));
                if self.json {
                    self.document(json::settling(why));
                }
            }
        }
    }

    /// The first Ctrl-C of a `--sync` watch.
    pub fn stopping(&self) {
        self.note(
            "stopping: the workloads take the newest image synced (Ctrl-C again to leave them as they are)",
        );
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
            self.document(serde_json::json!({"changes": json::changes(changes)}));
        } else if !dry_run {
            for c in changes {
                self.result(&text::change(c));
            }
        }
    }

    pub fn planned(&self, p: &Planned) {
        self.note(&text::planned(p));
    }

    pub fn copied(&self, c: &Copied) {
        self.note(&text::copied(c));
        if self.json {
            self.document(json::copied(c));
        } else {
            self.result(&c.reference);
        }
    }

    pub fn inspected(&self, i: &Inspected) {
        if self.json {
            self.document(json::inspected(i));
        } else {
            if let Some(name) = &self.image {
                println!("# {name}");
            }
            println!("{}", text::inspected(i));
        }
    }

    /// `layerup config`: the settings of `image`, or of the top level.
    pub fn config(&self, c: &Config, image: Option<&str>) {
        if self.json {
            self.document(c.to_json(image));
        } else {
            if let Some(name) = &self.image {
                println!("# image: {name}");
            }
            // Names in the files (registry aliases) are the files' text: escaped like any other.
            for line in c.show(image).lines() {
                println!("{}", crate::error::escape(line));
            }
        }
    }

    /// The error, once: one line on stderr, and the document on stdout with `--json`.
    pub fn error(&self, e: &Error) {
        eprintln!("error: {}", self.tagged(&e.to_string()));
        if self.json {
            self.document(json::error(e));
        }
    }
}
