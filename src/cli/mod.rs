//! The command line: clap's arguments, layerup.toml and the environment merged into them, then
//! validated into a plan for one command. Nothing here prints or exits: `main` does.

pub mod args;
pub mod config;
pub mod parse;
pub mod plan;

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::commands::copy::CopyPlan;
use crate::commands::deploy::{DeployImagePlan, RollbackPlan};
use crate::commands::inspect::InspectPlan;
use crate::commands::push::PushPlan;
use crate::commands::watch::WatchPlan;
use crate::error::{Error, Result};
use args::{Cli, Command};
use config::Config;

/// What the command line asks for.
pub enum Parsed {
    Run(Box<Invocation>),
    /// `--help` or `--version`: this text on stdout, and nothing else.
    Show(String),
}

/// One command to run, and how to report it.
pub struct Invocation {
    pub verbose: u8,
    pub quiet: bool,
    pub json: bool,
    /// The validated plan, or why the arguments do not make one (reported as `--json` says).
    pub job: Result<Job>,
}

/// A command with its plan.
pub enum Job {
    Push(PushPlan),
    Watch(WatchPlan),
    Copy(CopyPlan),
    Deploy(DeployImagePlan),
    Rollback(RollbackPlan),
    Inspect(InspectPlan),
    Config(Config),
    Completions(clap_complete::Shell),
    Man,
}

impl Job {
    /// Whether blobs move, so a progress bar means something.
    pub fn moves_blobs(&self) -> bool {
        matches!(self, Job::Push(_) | Job::Copy(_))
    }
}

/// Parses the command line with layerup.toml's settings (and the environment's: Tilt's
/// `EXPECTED_REF`, Skaffold's variables, `SOURCE_DATE_EPOCH`) filling in what the command line
/// leaves out, expands registry aliases, and validates the result into a plan.
pub fn parse(
    argv: Vec<OsString>,
    cwd: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed> {
    let cmd = Cli::command();
    let matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => return clap_failure(e),
    };
    let mut config = Config::load(
        cwd,
        matches.get_one::<String>("profile").map(String::as_str),
    )?;
    if matches.value_source("profile") == Some(ValueSource::EnvVariable) {
        config.profile_from = "LAYERUP_PROFILE";
    }
    let mut extra: Vec<OsString> = Vec::new();
    let mut sources: Vec<OsString> = Vec::new();
    if let Some((name, sub)) = matches.subcommand() {
        let sub_cmd = cmd
            .find_subcommand(name)
            .expect("a parsed subcommand exists");
        let typed = |a: &clap::Arg| {
            matches!(
                sub.value_source(a.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let (from_env, set) = if name == "push" {
            skaffold(env, sub_cmd, &typed)?
        } else {
            (Vec::new(), Vec::new())
        };
        let given = |a: &clap::Arg| typed(a) || set.iter().any(|id| a.get_id() == id);
        extra.extend(from_env);
        let (flags, srcs) = config.args_for(sub_cmd, &given);
        extra.extend(flags);
        sources = srcs;
    }
    let parsed = if extra.is_empty() && sources.is_empty() {
        Cli::from_arg_matches(&matches)
    } else {
        // Flags as `--name=value`; SRCs after `--`, so that a bare `--deploy` the user typed
        // last does not take the first SRC as its value.
        let mut all = argv;
        all.extend(extra);
        if !sources.is_empty() {
            all.push("--".into());
            all.extend(sources);
        }
        Cli::try_parse_from(all)
    };
    let mut cli = match parsed {
        Ok(c) => c,
        Err(e) => return clap_failure(e),
    };
    let expand = |r: &mut String| *r = config.expand(r);
    match &mut cli.command {
        Command::Push(a) => a.base.iter_mut().chain(a.to.iter_mut()).for_each(expand),
        Command::Watch(a) => a
            .push
            .base
            .iter_mut()
            .chain(a.push.to.iter_mut())
            .for_each(expand),
        Command::Copy(a) => [&mut a.from, &mut a.to].into_iter().for_each(expand),
        Command::Deploy(a) => expand(&mut a.image),
        Command::Inspect(a) => expand(&mut a.image),
        Command::Rollback(_) | Command::Config | Command::Completions { .. } | Command::Man => {}
    }
    let job = match cli.command {
        Command::Push(a) => a.plan(env).map(Job::Push),
        Command::Watch(a) => a.plan(env).map(Job::Watch),
        Command::Copy(a) => a.plan().map(Job::Copy),
        Command::Deploy(a) => a.plan().map(Job::Deploy),
        Command::Rollback(a) => a.plan().map(Job::Rollback),
        Command::Inspect(a) => a.plan().map(Job::Inspect),
        Command::Config => Ok(Job::Config(config)),
        Command::Completions { shell } => Ok(Job::Completions(shell)),
        Command::Man => Ok(Job::Man),
    };
    Ok(Parsed::Run(Box::new(Invocation {
        verbose: cli.verbose,
        quiet: cli.quiet,
        json: cli.json,
        job,
    })))
}

/// `--help` and `--version` are shown; any other clap error is a usage error on one line, as
/// every other error is: the problem, clap's tips, and where to read more.
fn clap_failure(e: clap::Error) -> Result<Parsed> {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return Ok(Parsed::Show(text));
    }
    Err(Error::usage(clap_line(&text)))
}

/// clap's error text in one line: `unexpected argument '--fo' found (tip: …); usage: …`.
fn clap_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let first = lines
        .iter()
        .find(|l| !l.is_empty())
        .map_or("", |l| l.trim_start_matches("error: "));
    let tips: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("tip: "))
        .collect();
    let mut out = first.to_string();
    if !tips.is_empty() {
        out += &format!(" ({})", tips.join("; "));
    }
    if let Some(usage) = lines.iter().find_map(|l| l.strip_prefix("Usage: ")) {
        out += &format!("; usage: {usage}");
    }
    out
}

/// A shell completion script.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "layerup", out);
}

/// The man page (roff).
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Skaffold's custom-builder contract: `IMAGE` (with `BUILD_CONTEXT`, which only Skaffold sets
/// beside it) is where to push, `PLATFORMS` which platform, `PUSH_IMAGE=false` asks for an
/// image loaded into a local docker daemon, which layerup has not got. Returns the flags it
/// stands for and the ids of the arguments they set.
fn skaffold(
    env: &dyn Fn(&str) -> Option<String>,
    cmd: &clap::Command,
    typed: &dyn Fn(&clap::Arg) -> bool,
) -> Result<(Vec<OsString>, Vec<String>)> {
    let (Some(image), Some(_)) = (env("IMAGE"), env("BUILD_CONTEXT")) else {
        return Ok((Vec::new(), Vec::new()));
    };
    if env("PUSH_IMAGE").is_some_and(|p| p.eq_ignore_ascii_case("false")) {
        return Err(Error::usage(
            "Skaffold asked for an image in the local docker daemon (PUSH_IMAGE=false), and \
             layerup has no daemon to load it into: it pushes to a registry. Set \
             `build.local.push: true` in skaffold.yaml (or run `skaffold dev --default-repo \
             <registry>`)",
        ));
    }
    let mut flags = Vec::new();
    let mut set = Vec::new();
    let mut put = |long: &str, value: String| {
        if let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long)) {
            if !typed(arg) {
                flags.push(OsString::from(format!("--{long}={value}")));
                set.push(arg.get_id().to_string());
            }
        }
    };
    put("to", image);
    if let Some(p) = env("PLATFORMS").filter(|p| !p.trim().is_empty()) {
        let all: Vec<&str> = p.split(',').map(str::trim).collect();
        if all.len() > 1 {
            return Err(Error::usage(format!(
                "Skaffold asked for {} platforms ({p}); layerup adds a layer to one platform's \
                 image per run: build for one (--platform in skaffold.yaml's custom build)",
                all.len()
            )));
        }
        put("platform", all[0].to_string());
    }
    Ok((flags, set))
}
