//! The `layerup` binary: wires the command line (`cli`) to the commands and their output
//! (`output`), on a runtime that a Ctrl-C or a SIGTERM ends cleanly; exits with the documented
//! code.

use std::process::ExitCode;

use layerup::cli::{self, Invocation, Job, Parsed};
use layerup::commands::{copy, deploy, inspect, push, watch};
use layerup::error::Error;
use layerup::output::{progress, Report};

/// The environment as layerup reads it: unset and empty are the same.
fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn main() -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invocation = match cli::parse(argv.clone(), &cwd, &env) {
        Ok(Parsed::Run(i)) => i,
        Ok(Parsed::Show(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return code(&e);
        }
    };
    let Invocation {
        verbose,
        quiet,
        json,
        job,
    } = *invocation;
    let out = Report::new(quiet, json);
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            out.error(&e);
            return code(&e);
        }
    };
    match &job {
        Job::Config(c, image) => {
            out.config(c, image.as_deref());
            return ExitCode::SUCCESS;
        }
        Job::Images(all) if all.iter().all(|(_, j)| matches!(j, Job::Config(..))) => {
            for (name, j) in all {
                if let Job::Config(c, image) = j {
                    out.named(name).config(c, image.as_deref());
                }
            }
            return ExitCode::SUCCESS;
        }
        Job::Completions(shell) => {
            cli::completions(*shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Job::Man => {
            return match cli::man(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                // `layerup man | head`: the reader had enough.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the man page: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    init_logging(verbose, quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    // A bar while blobs move, on a terminal, when nothing else writes there.
    let bar_wanted = !quiet && !json && verbose == 0 && job.moves_blobs();
    let watches: Vec<&watch::WatchPlan> = match &job {
        Job::Watch(w) => vec![w],
        Job::Images(all) => all
            .iter()
            .filter_map(|(_, j)| match j {
                Job::Watch(w) => Some(w),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let watching = !watches.is_empty();
    // A live-updating watch ends by bringing the templates up to what it synced.
    let graceful = watches.iter().any(|w| w.sync.is_some());
    // A watch of the whole project looks for its services again as it runs.
    let discover: Option<watch::Discover> = match &job {
        Job::Images(_) if watching => {
            let (argv, cwd) = (argv.clone(), cwd.clone());
            Some(Box::new(move || rediscover(&argv, &cwd)))
        }
        _ => None,
    };
    // On Ctrl-C or SIGTERM (Tilt, `timeout`, systemd), drop the command (which deletes its
    // temporary layer files) instead of dying with them on disk. Nothing half-written can be
    // left in a registry: the manifest goes last.
    // With --sync, the first one lets each watch patch its templates (a second ends at once).
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let result = runtime.block_on(async {
        let bar = progress::Bar::start(bar_wanted);
        let mut work = std::pin::pin!(run(job, out.clone(), discover, stopping));
        tokio::select! {
            r = &mut work => { drop(bar); return Some(r) },
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
    });
    let Some(result) = result else {
        // A layer may still be compressing on a blocking thread: do not wait for it.
        runtime.shutdown_background();
        if watching {
            // Ctrl-C is how watching ends.
            return ExitCode::SUCCESS;
        }
        eprintln!("error: interrupted");
        return ExitCode::from(130);
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Reported(code)) => ExitCode::from(code),
        Err(Failed::Error(e)) => {
            out.error(&e);
            code(&e)
        }
    }
}

/// How a command failed: with an error still to report, or already reported (the code to exit
/// with).
enum Failed {
    Error(Error),
    Reported(u8),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed::Error(e)
    }
}

/// The project's watched images, found again as the command line found them.
fn rediscover(
    argv: &[std::ffi::OsString],
    cwd: &std::path::Path,
) -> Result<Vec<(String, watch::WatchPlan)>, Error> {
    let Parsed::Run(inv) = cli::parse(argv.to_vec(), cwd, &env)? else {
        return Ok(Vec::new());
    };
    match inv.job? {
        Job::Images(all) => Ok(all
            .into_iter()
            .filter_map(|(n, j)| match j {
                Job::Watch(w) => Some((n, w)),
                _ => None,
            })
            .collect()),
        Job::Watch(w) => Ok(vec![(String::new(), w)]),
        _ => Ok(Vec::new()),
    }
}

/// Runs one command and reports what it tells and what it returns.
async fn run(
    job: Job,
    out: Report,
    discover: Option<watch::Discover>,
    stop: watch::Stop,
) -> Result<(), Failed> {
    match job {
        Job::Images(all) => run_images(all, out, discover, stop).await,
        Job::Push(plan) => {
            let started = std::time::Instant::now();
            let (pushed, deployed) = push::run_and_deploy(&plan, &|t| out.push_told(t)).await?;
            out.push_done(&pushed, deployed, started.elapsed())
                .map_err(Failed::Reported)
        }
        Job::Watch(plan) => Ok(watch::run(&plan, stop, move |t| out.watch_told(t)).await?),
        Job::Copy(plan) => {
            let copied = copy::run(&plan, |p| out.planned(p)).await?;
            out.copied(&copied);
            Ok(())
        }
        Job::Deploy(plan) => {
            let changes = deploy::deploy_image(&plan, &mut |e| out.event(&e, true)).await?;
            out.changes(&changes, plan.deploy.dry_run);
            Ok(())
        }
        Job::Rollback(plan) => {
            let changes = deploy::rollback(&plan, &mut |e| out.event(&e, true)).await?;
            out.changes(&changes, plan.deploy.dry_run);
            Ok(())
        }
        Job::Inspect(plan) => {
            out.inspected(&inspect::run(&plan).await?);
            Ok(())
        }
        Job::Config(..) | Job::Completions(_) | Job::Man => Ok(()),
    }
}

/// One command for several images: pushes and watches run together; the others one image
/// after another. Every image is reported under its name, and one failing does not stop the
/// others: the exit code is the first failure's.
async fn run_images(
    all: Vec<(String, Job)>,
    out: Report,
    discover: Option<watch::Discover>,
    stop: watch::Stop,
) -> Result<(), Failed> {
    let mut failed: Option<u8> = None;
    let mut fail = |code: u8| {
        failed.get_or_insert(code);
    };
    if all.iter().all(|(_, j)| matches!(j, Job::Push(_))) {
        let plans: Vec<(String, push::PushPlan)> = all
            .into_iter()
            .filter_map(|(n, j)| match j {
                Job::Push(p) => Some((n, p)),
                _ => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let told = |name: &str, t: layerup::commands::Told<'_>| out.named(name).push_told(t);
        let results = push::run_many(&plans, &told).await;
        for ((name, _), result) in plans.iter().zip(results) {
            let out = out.named(name);
            match result {
                Ok((pushed, deployed)) => {
                    if let Err(code) = out.push_done(&pushed, deployed, started.elapsed()) {
                        fail(code);
                    }
                }
                Err(e) => {
                    out.error(&e);
                    fail(e.code() as u8);
                }
            }
        }
        return failed.map_or(Ok(()), |c| Err(Failed::Reported(c)));
    }
    if all.iter().all(|(_, j)| matches!(j, Job::Watch(_))) {
        let plans: Vec<(String, watch::WatchPlan)> = all
            .into_iter()
            .filter_map(|(n, j)| match j {
                Job::Watch(w) => Some((n, w)),
                _ => None,
            })
            .collect();
        // On a terminal, one line per image, redrawn in place (not with -q, -v or --json).
        let mut out = out;
        let plain = out.quiet || out.json || tracing::enabled!(tracing::Level::INFO);
        out.board = progress::Board::start(!plain).map(std::sync::Arc::new);
        let report: watch::Report =
            std::sync::Arc::new(move |name: &str, t: layerup::commands::Told<'_>| {
                if name.is_empty() {
                    out.watch_told(t)
                } else {
                    out.named(name).watch_told(t)
                }
            });
        return Ok(watch::run_many(plans, discover, stop, report).await?);
    }
    for (name, j) in all {
        let out = out.named(&name);
        if let Err(Failed::Error(e)) = Box::pin(run(j, out.clone(), None, stop.clone())).await {
            out.error(&e);
            fail(e.code() as u8);
        }
    }
    failed.map_or(Ok(()), |c| Err(Failed::Reported(c)))
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

fn code(e: &Error) -> ExitCode {
    ExitCode::from(e.code() as u8)
}

/// Logs go to stderr; stdout carries only the result. `LAYERUP_LOG` (tracing filter syntax)
/// overrides -v.
fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        // kube-rs logs each failed request as an error; layerup words the failure itself, once.
        (false, 0) => "warn,kube_client=off",
        (false, 1) => "warn,layerup=info,kube_client=off",
        (false, 2) => "info,layerup=debug",
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
