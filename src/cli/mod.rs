//! The command line: clap's arguments, layerup.toml and the environment merged into them, then
//! validated into a plan — for one image, or for several images of a project by name. Nothing
//! here prints or exits: `main` does.

pub mod args;
pub mod config;
pub mod parse;
pub mod plan;
pub mod project;

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

use crate::build::entry::placeholder_in;
use crate::commands;
use crate::commands::watch::{Discover, WatchPlan};
use crate::error::{Error, Result};
use args::{Cli, Command};
use config::Config;
use project::Project;

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
    /// A watch of the whole project: finds its images again, as this command line found them
    /// (services added while it runs start, removed ones stop).
    pub discover: Option<Discover>,
}

/// What the command line asks for.
pub enum Job {
    /// A command of `commands`, with its plan.
    Run(Box<commands::Job>),
    /// The settings of the project's top level, or of one image.
    Config(Arc<Config>, Option<String>),
    Completions(clap_complete::Shell),
    /// A man page (a command's, or layerup's), or every page into a directory.
    Man(Option<String>, Option<std::path::PathBuf>),
    /// The same command for several images of the project, each with its name: its job, or
    /// why it has none (its file or its settings are bad; the others go on).
    Images(Vec<(String, Result<Job>)>),
}

impl Job {
    fn run(c: commands::Job) -> Job {
        Job::Run(Box::new(c))
    }

    /// Whether blobs move, so a progress bar means something.
    pub fn moves_blobs(&self) -> bool {
        match self {
            Job::Run(c) => c.moves_blobs(),
            Job::Images(all) => all
                .iter()
                .any(|(_, j)| j.as_ref().is_ok_and(Job::moves_blobs)),
            _ => false,
        }
    }

    /// The watches it runs.
    pub fn watches(&self) -> Vec<&WatchPlan> {
        match self {
            Job::Run(c) => c.watch().into_iter().collect(),
            Job::Images(all) => all
                .iter()
                .filter_map(|(_, j)| j.as_ref().ok())
                .flat_map(Job::watches)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Parses the command line with layerup.toml's settings (and the environment's: Tilt's
/// `EXPECTED_REF`, Skaffold's variables, `SOURCE_DATE_EPOCH`) filling in what the command line
/// leaves out, expands registry aliases, and validates the result into a plan.
///
/// Image names select images of the project (`layerup push api web`); a bare `push` or `watch`
/// takes every image when the project has several (`[images.NAME]` tables, or layerup.toml
/// files below the current directory). Otherwise, one image as the files and flags say.
pub fn parse(argv: Vec<OsString>, cwd: &Path, env: fn(&str) -> Option<String>) -> Result<Parsed> {
    let parsed = parse_with(argv.clone(), cwd, &env)?;
    let Parsed::Run(mut inv) = parsed else {
        return Ok(parsed);
    };
    let watch = Cli::command()
        .try_get_matches_from(&argv)
        .is_ok_and(|m| m.subcommand_name() == Some("watch"));
    if watch && matches!(&inv.job, Ok(Job::Images(_))) {
        let cwd = cwd.to_path_buf();
        inv.discover = Some(Box::new(move || rediscover(&argv, &cwd, env)));
    }
    Ok(Parsed::Run(inv))
}

/// The project's watched images, found again as the command line found them: each one's plan,
/// or why its file or settings give none.
fn rediscover(
    argv: &[OsString],
    cwd: &Path,
    env: fn(&str) -> Option<String>,
) -> Result<Vec<(String, Result<WatchPlan>)>> {
    let Parsed::Run(inv) = parse_with(argv.to_vec(), cwd, &env)? else {
        return Ok(Vec::new());
    };
    let watch = |j: Job| match j {
        Job::Run(c) => match *c {
            commands::Job::Watch(w) => Some(w),
            _ => None,
        },
        _ => None,
    };
    Ok(match inv.job? {
        Job::Images(all) => all
            .into_iter()
            .filter_map(|(n, j)| match j {
                Ok(j) => watch(j).map(|w| (n, Ok(w))),
                Err(e) => Some((n, Err(e))),
            })
            .collect(),
        j => watch(j)
            .map(|w| (String::new(), Ok(w)))
            .into_iter()
            .collect(),
    })
}

fn parse_with(
    argv: Vec<OsString>,
    cwd: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed> {
    let cmd = Cli::command();
    let matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => return clap_failure(e),
    };
    let profile = matches.get_one::<String>("profile").map(String::as_str);
    let (name, sub) = matches.subcommand().expect("clap requires a subcommand");
    let words = words(name, sub);
    let typed = |id: &str| {
        sub.try_get_raw(id).ok().flatten().is_some()
            && matches!(sub.value_source(id), Some(ValueSource::CommandLine))
    };
    let whole =
        matches!(name, "push" | "watch") && words.is_empty() && !typed("base") && !typed("to");
    let profile_from = if matches.value_source("profile") == Some(ValueSource::EnvVariable) {
        "LAYERUP_PROFILE"
    } else {
        "--profile"
    };
    // The layerup.toml files below are looked for (a walk of the current directory's tree,
    // every run) only when a word may name one of their images.
    let names_asked = words.iter().any(|w| !never_a_name(w));
    let project = Project::load(cwd, profile, profile_from, whole || names_asked)?;
    let selected = match project.select(&words) {
        Some(images) if !words.is_empty() => Some(images),
        _ if whole && project.many => Some(project.all()),
        _ => None,
    };
    let Some(images) = selected else {
        // A mistyped image name would otherwise be read as a source that does not exist.
        // (`/src`, `./src`, `src:/app`, `out/{arch}/app` are written as paths, whatever exists;
        // `svc/zz` is a name when images are named `svc/…`, or nothing named `svc` exists.)
        let unknown = words.iter().find(|w| {
            let first = w.split('/').next().unwrap_or(w);
            let like_a_name = project.names().any(|n| n.starts_with(&format!("{first}/")))
                || std::fs::symlink_metadata(cwd.join(first)).is_err();
            matches!(name, "push" | "watch")
                && !w.contains(':')
                && !w.starts_with(['/', '.', '~'])
                && placeholder_in(w).is_none()
                && std::fs::symlink_metadata(cwd.join(w)).is_err()
                && like_a_name
        });
        if let (true, Some(w)) = (project.many, unknown) {
            let names: Vec<&str> = project.names().collect();
            return Err(Error::usage(format!(
                "no image named `{w}`, nor a source of that name: the project's images are {}",
                names.join(", ")
            )));
        }
        return one(argv, &cmd, &project.root, None, env);
    };
    if images.is_empty() {
        return Err(Error::usage("the project has no images to work on"));
    }
    let rest: Vec<OsString> = without(&argv, &words);
    let mut jobs = images_jobs(&images, &rest, name, &cmd, env);
    same_destinations(&mut jobs, &images);
    Ok(Parsed::Run(Box::new(Invocation {
        verbose: matches.get_count("verbose"),
        quiet: matches.get_flag("quiet"),
        json: matches.get_flag("json"),
        job: Ok(Job::Images(jobs)),
        discover: None,
    })))
}

/// Each image's job: the command line without the image names, and the image's own settings.
/// One image's bad file or bad setting is its own error: the others' jobs stand.
fn images_jobs(
    images: &[project::Found],
    rest: &[OsString],
    command: &str,
    cmd: &clap::Command,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, Result<Job>)> {
    let mut jobs = Vec::new();
    for found in images {
        let image = match found {
            project::Found::Image(i) => i,
            project::Found::Broken { name, error } => {
                jobs.push((name.clone(), Err(error.clone())));
                continue;
            }
        };
        let argv = with_image_words(rest, command, image);
        let job = match one(argv, cmd, &image.config, image.table.as_deref(), env) {
            Ok(Parsed::Run(inv)) => inv.job,
            // `--help` and `--version` end at the first parse of the whole command line.
            Ok(Parsed::Show(_)) => Err(Error::internal("help shown for one image")),
            Err(e) => Err(e),
        };
        let job = match (job, command) {
            (Ok(Job::Config(c, _)), "config") => Ok(Job::Config(c, image.table.clone())),
            (job, _) => job.map_err(|e| e.context(format!("image {}", image.name))),
        };
        jobs.push((image.name.clone(), job));
    }
    jobs
}

/// The positional words that may be image names: SRCs of push and watch, IMAGE and WORKLOAD of
/// deploy, WORKLOAD of rollback, IMAGE of inspect, NAMES of config.
fn words(command: &str, sub: &ArgMatches) -> Vec<String> {
    let ids: &[&str] = match command {
        "push" | "watch" => &["mappings"],
        "deploy" => &["image", "workload"],
        "rollback" => &["workload"],
        "inspect" => &["image"],
        "config" => &["names"],
        _ => &[],
    };
    ids.iter()
        .filter_map(|id| sub.try_get_many::<String>(id).ok().flatten())
        .flatten()
        .cloned()
        .collect()
}

/// A word no image of a project can be named: a mapping or reference (`src:/app`,
/// `host:5000/dev/app:1`), a path written as one (`/src`, `./src`, `~/src`), a per-platform
/// source (`out/{arch}/app`). Images are named by their directory below, or their table.
fn never_a_name(w: &str) -> bool {
    w.contains(':') || w.starts_with(['/', '.', '~']) || placeholder_in(w).is_some()
}

/// `argv` with the first occurrence of each of `words` taken out.
fn without(argv: &[OsString], words: &[String]) -> Vec<OsString> {
    let mut out = argv.to_vec();
    for w in words {
        if let Some(i) = out.iter().skip(1).position(|a| a == w.as_str()) {
            out.remove(i + 1);
        }
    }
    out
}

/// For commands that name an image by reference or a workload (deploy, rollback, inspect), the
/// image's own: its `to`, and its `deploy` workload.
fn with_image_words(argv: &[OsString], command: &str, image: &project::Image) -> Vec<OsString> {
    let values = image.config.values_for(image.table.as_deref());
    let text = |k: &str| match values.get(k).map(|s| &s.value) {
        Some(config::Value::Str(s)) => Some(image.config.expand(s)),
        _ => None,
    };
    let words: Vec<String> = match command {
        "deploy" => text("to").into_iter().chain(text("deploy")).collect(),
        "rollback" => text("deploy").into_iter().collect(),
        "inspect" => text("to").into_iter().collect(),
        _ => return argv.to_vec(),
    };
    let mut out = argv.to_vec();
    let at = out
        .iter()
        .position(|a| a == command)
        .map_or(out.len(), |i| i + 1);
    for (n, w) in words.into_iter().enumerate() {
        out.insert(at + n, w.into());
    }
    out
}

/// Two images pushed to one destination would overwrite each other's tag and state: both are
/// an error naming both files; the others go on.
fn same_destinations(jobs: &mut [(String, Result<Job>)], images: &[project::Found]) {
    let to = |j: &Result<Job>| match j {
        Ok(Job::Run(c)) => match c.as_ref() {
            commands::Job::Push(p) => Some(p.to.to_string()),
            commands::Job::Watch(w) => Some(w.push.to.to_string()),
            _ => None,
        },
        _ => None,
    };
    let file = |n: &str| {
        images
            .iter()
            .find(|i| i.name() == n)
            .map_or_else(String::new, project::Found::file)
    };
    let mut clash: Vec<(usize, Error)> = Vec::new();
    for i in 0..jobs.len() {
        for k in i + 1..jobs.len() {
            let (a, b) = (&jobs[i].0, &jobs[k].0);
            if let (Some(x), Some(y)) = (to(&jobs[i].1), to(&jobs[k].1)) {
                if x == y {
                    let e = Error::usage(format!(
                        "images `{a}` ({}) and `{b}` ({}) both push to `{x}`: give each its own `to`",
                        file(a),
                        file(b)
                    ));
                    clash.push((i, e.clone()));
                    clash.push((k, e));
                }
            }
        }
    }
    for (i, e) in clash {
        if jobs[i].1.is_ok() {
            jobs[i].1 = Err(e);
        }
    }
}

/// The registry aliases of `config` expanded in the references a command names.
fn expand_aliases(command: &mut Command, config: &Config) {
    let expand = |r: &mut String| *r = config.expand(r);
    match command {
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
        Command::Login(a) => a.registry.iter_mut().for_each(expand),
        Command::Logout { registry } => registry.iter_mut().for_each(expand),
        Command::Rollback(_)
        | Command::Config { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => {}
    }
}

/// Where `login` and `logout` go without a REGISTRY: the project's destination's registry.
fn project_registry(config: &Config, image: Option<&str>) -> Option<String> {
    let values = config.values_for(image);
    match values.get("to").map(|s| &s.value) {
        Some(config::Value::Str(to)) => {
            crate::oci::reference::ImageRef::parse(&config.expand(to), "to")
                .ok()
                .and_then(|r| r.registry().map(str::to_string))
        }
        _ => None,
    }
}

/// One image's command: `config`'s settings (those of `image`, or the top level) fill in what
/// `argv` leaves out, then it is validated into a plan.
fn one(
    argv: Vec<OsString>,
    cmd: &clap::Command,
    config: &Arc<Config>,
    image: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed> {
    let matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => return clap_failure(e),
    };
    let mut extra: Vec<OsString> = Vec::new();
    let mut sources: Vec<OsString> = Vec::new();
    let mut build_typed = false;
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
        build_typed = sub_cmd
            .get_arguments()
            .any(|a| a.get_long() == Some("build") && given(a));
        extra.extend(from_env);
        let (flags, srcs) = config.args_for(image, sub_cmd, &given);
        extra.extend(flags);
        sources = srcs;
    }
    let from_file = !sources.is_empty();
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
    expand_aliases(&mut cli.command, config);
    let project_registry = || project_registry(config, image);
    // A committed file's sources stay inside its tree (checked at every push: a symlink may
    // move); the command line's and the user's own files' may be anywhere.
    let confined = config.confined_mappings(image).filter(|_| from_file);
    // A file's build runs in its directory.
    let build_dir = config.build_dir(image).filter(|_| !build_typed);
    let confine = |mut p: crate::commands::push::PushPlan| {
        p.confined = confined.clone();
        if let (Some(b), Some(dir)) = (p.build.as_mut(), &build_dir) {
            b.dir = dir.clone();
        }
        p
    };
    let job = match cli.command {
        Command::Push(a) => a
            .plan(env)
            .map(confine)
            .map(commands::Job::Push)
            .map(Job::run),
        Command::Watch(a) => a
            .plan(env)
            .map(|mut w| {
                w.push = confine(w.push);
                w
            })
            .map(commands::Job::Watch)
            .map(Job::run),
        Command::Copy(a) => a.plan().map(commands::Job::Copy).map(Job::run),
        Command::Deploy(a) => a.plan().map(commands::Job::Deploy).map(Job::run),
        Command::Rollback(a) => a.plan().map(commands::Job::Rollback).map(Job::run),
        Command::Inspect(a) => a.plan().map(commands::Job::Inspect).map(Job::run),
        Command::Config { .. } => Ok(Job::Config(Arc::clone(config), image.map(str::to_string))),
        Command::Completions { shell } => Ok(Job::Completions(shell)),
        Command::Man { command, dir } => Ok(Job::Man(command, dir)),
        Command::Login(a) => a
            .plan(project_registry())
            .map(commands::Job::Login)
            .map(Job::run),
        Command::Logout { registry } => plan::registry_named(registry, project_registry())
            .map(commands::Job::Logout)
            .map(Job::run),
    };
    Ok(Parsed::Run(Box::new(Invocation {
        verbose: cli.verbose,
        quiet: cli.quiet,
        json: cli.json,
        job,
        discover: None,
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
    let start = lines.iter().position(|l| !l.is_empty()).unwrap_or(0);
    let mut first = lines
        .get(start)
        .map_or("", |l| l.trim_start_matches("error: "))
        .to_string();
    // `…were not provided:` is followed by what was not, one per line.
    if first.ends_with(':') {
        let list: Vec<&str> = lines[start + 1..]
            .iter()
            .take_while(|l| !l.is_empty())
            .copied()
            .collect();
        first = format!("{first} {}", list.join(", "));
    }
    let tips: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("tip: "))
        .collect();
    let mut out = first;
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

/// The man page (roff) of `command` (a subcommand's, `layerup-push(1)`; else layerup(1)).
pub fn man(command: Option<&str>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    let Some(name) = command else {
        return clap_mangen::Man::new(cmd).render(out);
    };
    let sub = cmd
        .get_subcommands()
        .find(|s| s.get_name() == name)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no command `{name}`: the commands are {}", names.join(", ")),
            )
        })?;
    let page = format!("layerup-{name}");
    let sub = sub.name(page.clone()).bin_name(format!("layerup {name}"));
    clap_mangen::Man::new(sub).title(page).render(out)
}

/// Writes layerup.1 and layerup-COMMAND.1 for every command into `dir`; their paths.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut names = vec![None];
    names.extend(
        Cli::command()
            .get_subcommands()
            .map(|s| Some(s.get_name().to_string())),
    );
    let mut written = Vec::new();
    for n in names {
        let file = dir.join(match &n {
            Some(n) => format!("layerup-{n}.1"),
            None => "layerup.1".to_string(),
        });
        let mut page = Vec::new();
        man(n.as_deref(), &mut page)?;
        std::fs::write(&file, page)?;
        written.push(file);
    }
    Ok(written)
}

/// Skaffold's custom-builder contract: `IMAGE` (with `BUILD_CONTEXT`, which only Skaffold sets
/// beside it) is where to push, `PLATFORMS` which platforms (several: an index of them), `PUSH_IMAGE=false` asks for an
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
        // Several platforms make an index of them (`--platform a,b`).
        let all: Vec<&str> = p
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        put("platform", all.join(","));
    }
    Ok((flags, set))
}

#[cfg(test)]
mod tests {
    use super::never_a_name;

    /// Only a word that may name an image below costs the walk that finds them.
    #[test]
    fn mappings_paths_and_references_are_never_names() {
        for w in [
            "src:/app",
            "./src",
            "/abs/src",
            "~/src",
            "out/{arch}/app",
            "localhost:5000/dev/app:1",
        ] {
            assert!(never_a_name(w), "{w}");
        }
        for w in ["api", "services/web", "src", "deployment/api"] {
            assert!(!never_a_name(w), "{w}");
        }
    }
}
