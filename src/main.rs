//! The `layerup` binary: wires the command line (`cli`) to the commands (`commands`, one image
//! or a project's) and their output (`output`), on a runtime that a Ctrl-C or a SIGTERM ends
//! cleanly; maps the kind of failure to the documented exit code, once.

use std::process::ExitCode;

use layerup::cli::{self, Invocation, Job, Parsed};
use layerup::commands::{self, project, watch};
use layerup::error::{self, Error};
use layerup::output::{progress, Report, Style};

/// A command to run for an image (`""` for one image), or why that image has none.
type Named = (String, Result<commands::Job, Error>);

/// The environment as layerup reads it: unset and empty are the same.
fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn main() -> ExitCode {
    // A change journal's watcher, started by a push (`push --journal`).
    if let (Some(root), Some(dir)) = (
        std::env::var_os(layerup::commands::journal::ROOT_VAR),
        std::env::var_os(layerup::commands::journal::DIR_VAR),
    ) {
        let served = layerup::commands::journal::serve(root.as_ref(), dir.as_ref());
        return if served.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let invocation = match cli::parse(std::env::args_os().collect(), &cwd, env) {
        Ok(Parsed::Run(i)) => *i,
        Ok(Parsed::Show(text)) => {
            progress::out(text.trim_end_matches('\n'));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            progress::say(&format!("error: {e}"));
            return exit(Some(e.code()));
        }
    };
    let Invocation {
        verbose,
        quiet,
        json,
        job,
        discover,
    } = invocation;
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            Report::new(quiet, json).error(&e);
            return exit(Some(e.code()));
        }
    };
    let jobs = match shown(job, quiet, json) {
        Ok(code) => return code,
        Err(jobs) => jobs,
    };
    init_logging(verbose, quiet);
    let logging = tracing::enabled!(tracing::Level::INFO);
    let watches: Vec<&watch::WatchPlan> = jobs
        .iter()
        .filter_map(|(_, j)| j.as_ref().ok()?.watch())
        .collect();
    // A project's images are named; one image is not.
    let project = !jobs[0].0.is_empty();
    let watching = !watches.is_empty() || discover.is_some();
    // A live-updating watch ends by bringing the templates up to what it synced.
    let graceful = watches.iter().any(|w| w.sync.is_some());
    let moves = jobs
        .iter()
        .any(|(_, j)| j.as_ref().is_ok_and(commands::Job::moves_blobs));
    let style = Style::choose(quiet, json, logging, moves, project, watching);
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        progress::say("error: cannot start the runtime");
        return ExitCode::from(1);
    };
    let out = Report::styled(style);
    let work = |stop| drive(jobs, project, out.clone(), discover, style.bar, stop);
    match runtime.block_on(until_interrupted(work, graceful, &out)) {
        Some(failed) => exit(failed),
        // A layer may still be compressing on a blocking thread: do not wait for it.
        None => {
            runtime.shutdown_background();
            interrupted_exit(watching)
        }
    }
}

/// Ctrl-C is how watching ends; anything else it interrupts.
fn interrupted_exit(watching: bool) -> ExitCode {
    if watching {
        return ExitCode::SUCCESS;
    }
    progress::say("error: interrupted");
    ExitCode::from(130)
}

/// Shows what needs no runtime (`config`, `completions`, `man`) and says how that ended; else
/// the commands to run, each under its image's name (`""` for one image).
#[allow(clippy::result_large_err)]
fn shown(job: Job, quiet: bool, json: bool) -> Result<ExitCode, Vec<Named>> {
    let out = Report::new(quiet, json);
    match job {
        Job::Run(c) => Err(vec![(String::new(), Ok(*c))]),
        Job::Config(c, image) => {
            out.config(&c, image.as_deref());
            Ok(ExitCode::SUCCESS)
        }
        Job::Completions(shell) => {
            let mut script = Vec::new();
            cli::completions(shell, &mut script);
            progress::out(String::from_utf8_lossy(&script).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Job::Man(command, dir) => {
            let done = match dir {
                Some(dir) => cli::man_pages(&dir).map(|files| {
                    files
                        .iter()
                        .for_each(|f| progress::out(&f.display().to_string()))
                }),
                None => {
                    let mut page = Vec::new();
                    cli::man(command.as_deref(), &mut page)
                        .map(|()| progress::out(String::from_utf8_lossy(&page).trim_end()))
                }
            };
            Ok(match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    progress::say(&format!("error: cannot write the man page: {e}"));
                    ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                        2
                    } else {
                        1
                    })
                }
            })
        }
        Job::Images(all) => {
            let mut runs = Vec::new();
            for (name, j) in all {
                match j {
                    Ok(Job::Run(c)) => runs.push((name, Ok(*c))),
                    Ok(Job::Config(c, image)) => out.named(&name).config(&c, image.as_deref()),
                    Ok(_) => {}
                    Err(e) => runs.push((name, Err(e))),
                }
            }
            if runs.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            Err(runs)
        }
    }
}

/// Runs the commands and reports each outcome; the first failure's kind, if any.
async fn drive(
    jobs: Vec<Named>,
    project: bool,
    out: Report,
    discover: Option<watch::Discover>,
    bar: bool,
    stop: watch::Stop,
) -> Option<error::ExitCode> {
    let bar = progress::Bar::start(bar);
    let told = out.clone();
    let told: watch::Report = std::sync::Arc::new(move |name: &str, t| told.told(name, t));
    let outcomes = if project {
        project::run(jobs, told, discover, stop).await
    } else {
        let (name, job) = jobs.into_iter().next().expect("one job");
        let outcome = match job {
            Ok(job) => commands::run(job, told, stop).await,
            Err(e) => Err(e),
        };
        vec![(name, outcome)]
    };
    drop(bar);
    let mut failed = None;
    for (name, outcome) in outcomes {
        if let Some(kind) = out.done(&name, outcome) {
            failed.get_or_insert(kind);
        }
    }
    failed
}

/// Runs `work` until it ends (`Some`: with its failure, if any) or Ctrl-C or SIGTERM ends it
/// (`None`) — dropping it, which deletes its temporary layer files; nothing half-written can be
/// left in a registry, the manifest goes last. With `graceful` (`--sync`), the first signal
/// lets each watch patch its templates, and a second ends at once.
async fn until_interrupted<F>(
    work: impl FnOnce(watch::Stop) -> F,
    graceful: bool,
    out: &Report,
) -> Option<Option<error::ExitCode>>
where
    F: std::future::Future<Output = Option<error::ExitCode>>,
{
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut work = std::pin::pin!(work(stopping));
    tokio::select! {
        r = &mut work => return Some(r),
        _ = interrupted() => {}
    }
    if !graceful {
        return None;
    }
    out.stopping();
    let _ = stop.send(true);
    tokio::select! {
        r = &mut work => Some(r),
        _ = interrupted() => None,
    }
}

/// Ctrl-C, or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The documented exit code of a failure's kind; success without one.
fn exit(failed: Option<error::ExitCode>) -> ExitCode {
    failed.map_or(ExitCode::SUCCESS, |k| ExitCode::from(k as u8))
}

/// Logs go to stderr; stdout carries only the result. `LAYERUP_LOG` (tracing filter syntax)
/// overrides -v.
fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        // kube-rs logs each failed request as an error; layerup words the failure itself, once.
        (false, 0) => "warn,kube_client=off",
        (false, 1) => "warn,layerup=info,kube_client=off",
        // Each registry request, and layerup's own reasoning; not the libraries' chatter.
        (false, 2) => "warn,layerup=debug,kube_client=off",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAYERUP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
}
