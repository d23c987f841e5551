//! What the user reads: each result and event printed once, in one place — text lines on
//! stderr and the result on stdout, or one `--json` object per result — and the progress bar.

pub mod json;
pub mod progress;
pub mod text;

use std::time::Duration;

use crate::cli::config::Config;
use crate::commands::build_step;
use crate::commands::copy::{Copied, Planned};
use crate::commands::deploy::{Change, Event};
use crate::commands::inspect::Inspected;
use crate::commands::push::Pushed;
use crate::commands::{Done, Outcome, Told};
use crate::error::{escape, Error, ExitCode, Result};

/// How a run is shown, decided once from the flags and what the command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// `-q`: only results and errors.
    pub quiet: bool,
    /// `--json`: documents on stdout.
    pub json: bool,
    /// A progress bar while blobs move (on a terminal, when nothing else writes there).
    pub bar: bool,
    /// A watch of several images: one line per image, redrawn in place (on a terminal).
    pub board: bool,
    /// A watch: each push is one cycle of many.
    pub watching: bool,
}

impl Style {
    /// `logging`: per-event log lines are on (`-v`, `LAYERUP_LOG`); they and a bar or a board
    /// would tear each other. `project`: the images are a project's, each named.
    pub fn choose(
        quiet: bool,
        json: bool,
        logging: bool,
        moves_blobs: bool,
        project: bool,
        watching: bool,
    ) -> Style {
        let plain = quiet || json || logging;
        Style {
            quiet,
            json,
            bar: !plain && moves_blobs,
            board: !plain && project && watching,
            watching,
        }
    }
}

/// How results are reported: `-q` (only results and errors), `--json` (documents on stdout);
/// for one image of several, under its name.
#[derive(Clone)]
pub struct Report {
    pub quiet: bool,
    pub json: bool,
    /// Pushes are a watch's cycles.
    pub watching: bool,
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
            watching: false,
            image: None,
            board: None,
        }
    }

    /// Reports as `style` says (a watch's board is started here).
    pub fn styled(style: Style) -> Self {
        Report {
            watching: style.watching,
            board: progress::Board::start(style.board).map(std::sync::Arc::new),
            ..Report::new(style.quiet, style.json)
        }
    }

    /// What a command tells as it goes, for the image `name` (`""`: the one image).
    pub fn told(&self, name: &str, t: Told) {
        let out = match name {
            "" => self.clone(),
            name => self.named(name),
        };
        match t {
            Told::Planned(p) => out.planned(p),
            Told::Deploying(e) => out.event(&e, true),
            t if self.watching => out.watch_told(t),
            t => out.push_told(t),
        }
    }

    /// A command's outcome for the image `name`: its result, or its error, printed once; the
    /// kind of failure, if it failed (a push whose deploy step failed did).
    pub fn done(&self, name: &str, outcome: Outcome) -> Option<ExitCode> {
        let out = match name {
            "" => self.clone(),
            name => self.named(name),
        };
        match outcome {
            Ok(Done::Pushed {
                pushed,
                deployed,
                took,
            }) => return out.push_done(&pushed, deployed, took).err(),
            Ok(Done::Watched) => {}
            Ok(Done::Copied(c)) => out.copied(&c),
            Ok(Done::Changes { changes, dry_run }) => out.changes(&changes, dry_run),
            Ok(Done::Inspected(i)) => out.inspected(&i),
            Ok(Done::LoggedIn(l)) => out.logged_in(&l),
            Ok(Done::LoggedOut(places)) => out.logged_out(&places),
            Err(e) => {
                out.error(&e);
                return Some(e.code());
            }
        }
        None
    }

    /// The same, for the image `name` of several.
    pub fn named(&self, name: &str) -> Report {
        Report {
            image: Some(name.into()),
            ..self.clone()
        }
    }

    /// `line`, under the image's name when there is one. The name is a directory's: escaped,
    /// as every text from outside is.
    fn tagged(&self, line: &str) -> String {
        match &self.image {
            Some(name) => format!("{}: {line}", escape(name)),
            None => line.to_string(),
        }
    }

    /// A result on stdout: `NAME RESULT` for one image of several.
    /// Names and references are escaped (`\n`, `\u{1b}`): a directory named with a newline or
    /// an escape sequence cannot split a result line or drive the terminal.
    fn result(&self, line: &str) {
        match &self.image {
            Some(name) => progress::out(&format!("{} {}", escape(name), escape(line))),
            None => progress::out(&escape(line)),
        }
    }

    /// A `--json` document on stdout, with the image's name in it.
    fn document(&self, mut doc: serde_json::Value) {
        if let (Some(name), Some(obj)) = (&self.image, doc.as_object_mut()) {
            obj.insert("image".into(), serde_json::json!(escape(name)));
        }
        progress::out(&doc.to_string());
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
        if let Some(line) = text::tags_deleted(p) {
            self.note(&line);
        }
        if !self.json {
            self.note(&text::summary(p));
            self.result(&p.reference);
        }
    }

    /// What a one-shot push (and its deploy step) tells as it goes.
    fn push_told(&self, t: Told) {
        match t {
            Told::Pushed(p, _) => self.pushed(p),
            Told::Building(e) => self.building(&e),
            Told::Deploy(e) | Told::Deploying(e) => self.event(&e, false),
            Told::PushFailed(e) | Told::DeployFailed(e) => self.error(e),
            Told::Planned(p) => self.planned(p),
            Told::Stopped | Told::Synced(..) | Told::SyncFallback(_) | Told::Settling(_) => {}
        }
    }

    /// A push, with `--deploy` its outcome, is done: the `--json` document, and the kind of
    /// failure when the deploy step failed.
    fn push_done(
        &self,
        p: &Pushed,
        deployed: Option<Result<Vec<Change>>>,
        total: Duration,
    ) -> Result<(), ExitCode> {
        let failed = match &deployed {
            Some(Err(e)) => Some(e.code()),
            _ => None,
        };
        if let Some(Err(e)) = &deployed {
            progress::say(&format!("error: {}", self.tagged(&e.to_string())));
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
    fn watch_told(&self, t: Told) {
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
                progress::say(&format!(
                    "error: {} (still watching)",
                    self.tagged(&e.to_string())
                ));
                if self.json {
                    self.document(json::error(e));
                }
            }
            Told::DeployFailed(e) => {
                progress::say(&format!(
                    "error: {} (still watching)",
                    self.tagged(&e.to_string())
                ));
                if self.json {
                    self.document(json::deploy_error(e));
                }
            }
            Told::Building(e) => self.building(&e),
            Told::Deploy(e) | Told::Deploying(e) => self.event(&e, false),
            Told::Planned(p) => self.planned(p),
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

    /// The build's progress and output on stderr; under `-q` only a failure's last lines.
    fn building(&self, e: &build_step::Event) {
        match e {
            build_step::Event::Started(command, platform) => {
                let command = build_step::short(command);
                match platform {
                    Some(p) => self.note(&format!("building for {p}: {command}")),
                    None => self.note(&format!("building: {command}")),
                }
            }
            build_step::Event::Line(line) => self.note(line),
            build_step::Event::Failed(tail) if self.quiet => {
                for line in *tail {
                    progress::say(&escape(&self.tagged(line)));
                }
            }
            build_step::Event::Failed(_) => {}
            build_step::Event::Done(took) => {
                self.note(&format!("built in {:.2}s", took.as_secs_f64()))
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
            Event::WouldPatch { .. } if result_on_stdout && !self.json => progress::out(&line),
            Event::WouldPatch { .. } => progress::say(&line),
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

    /// What a copy will do; with `--json`, the document says it all (as for a push).
    pub fn planned(&self, p: &Planned) {
        if !self.json {
            self.note(&text::planned(p));
        }
    }

    pub fn copied(&self, c: &Copied) {
        if !self.json {
            self.note(&text::copied(c));
        }
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
                progress::out(&format!("# {}", escape(name)));
            }
            progress::out(&text::inspected(i));
        }
    }

    /// `login`: where the credentials are kept (no secret, ever).
    pub fn logged_in(&self, l: &crate::commands::login::LoggedIn) {
        if self.json {
            self.document(serde_json::json!({
                "registry": l.registry,
                "username": l.username,
                "stored_in": l.place.to_string(),
                "checked": l.checked,
            }));
        } else {
            self.note(&format!(
                "logged in to {} as {}; kept in {}",
                l.registry, l.username, l.place
            ));
        }
    }

    /// `logout`: where the credentials were forgotten.
    pub fn logged_out(&self, places: &[String]) {
        if self.json {
            self.document(serde_json::json!({ "removed_from": places }));
        } else {
            self.note(&format!("forgotten in {}", places.join(", ")));
        }
    }

    /// `layerup config`: the settings of `image`, or of the top level.
    pub fn config(&self, c: &Config, image: Option<&str>) {
        if self.json {
            self.document(c.to_json(image));
        } else {
            if let Some(name) = &self.image {
                progress::out(&format!("# image: {}", escape(name)));
            }
            // Names in the files (registry aliases) are the files' text: escaped like any other.
            for line in c.show(image).lines() {
                progress::out(&crate::error::escape(line));
            }
        }
    }

    /// The error, once: one line on stderr, and the document on stdout with `--json`.
    pub fn error(&self, e: &Error) {
        progress::say(&format!("error: {}", self.tagged(&e.to_string())));
        if self.json {
            self.document(json::error(e));
        }
    }
}
