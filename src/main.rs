//! The `layerup` binary: parse, set up logging, run, print the result or the error once, and exit
//! with the documented code.

use std::process::ExitCode;

use layerup::cli::Command;
use layerup::copy::{Copied, Moves};
use layerup::deploy::{Change, Event};
use layerup::push::Outcome;
use layerup::stack::Mode;
use layerup::watch::{Cycle, Told};
use layerup::Pushed;

fn main() -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (cli, config) = match layerup::cli::parse(std::env::args_os().collect(), &cwd, &env) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.code() as u8);
        }
    };
    if let Command::Config = cli.command {
        if cli.json {
            println!("{}", config.to_json());
        } else {
            println!("{}", config.show());
        }
        return ExitCode::SUCCESS;
    }
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <layerup::cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "layerup", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            let cmd = <layerup::cli::Cli as clap::CommandFactory>::command();
            return match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
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
    init_logging(cli.verbose, cli.quiet);
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
    let sde = std::env::var("SOURCE_DATE_EPOCH").ok();
    let quiet = cli.quiet;
    let json = cli.json;
    let started = std::time::Instant::now();
    // A bar while blobs move: push and copy, on a terminal, when nothing else writes there.
    let bar_wanted = !quiet
        && !json
        && cli.verbose == 0
        && matches!(cli.command, Command::Push(_) | Command::Copy(_));
    let work = async {
        let bar = layerup::progress::Bar::start(bar_wanted);
        match &cli.command {
            Command::Push(args) => {
                let plan = args.plan(sde.as_deref())?;
                let pushed = layerup::push(&plan).await?;
                drop(bar);
                let Some(deploy) = &plan.deploy else {
                    return Ok(Some(Done::Pushed(pushed, None)));
                };
                // The image exists once pushed: say so before the rollout is awaited (with
                // --json, the one object comes at the end, the deploy's outcome in it).
                if !json {
                    if !quiet {
                        report_push(&pushed);
                    }
                    println!("{}", pushed.reference);
                }
                let deployed = deploy
                    .run(&pushed.reference, &plan.base, &mut |e| {
                        tell(e, quiet, false)
                    })
                    .await;
                if json {
                    return Ok(Some(Done::Pushed(pushed, Some(deployed))));
                }
                deployed.map(|_| None)
            }
            Command::Deploy(args) => {
                let (image, registry, plan) = args.plan()?;
                let net = args.transfer.options()?;
                let mut told = |e: Event| tell(e, quiet, !json);
                let changes = layerup::deploy::deploy_image(
                    &image,
                    net,
                    registry.as_deref(),
                    &plan,
                    &mut told,
                )
                .await?;
                // A dry run's result is the patch it printed.
                Ok((!plan.dry_run || json).then_some(Done::Changed(changes)))
            }
            Command::Config | Command::Completions { .. } | Command::Man => Ok(None),
            Command::Inspect(args) => {
                let (image, platform, net) = args.plan()?;
                let found = layerup::inspect::inspect(&image, &platform, net).await?;
                if json {
                    println!("{}", layerup::inspect::to_json(&found));
                } else {
                    println!("{}", layerup::inspect::to_text(&found, human));
                }
                Ok(None)
            }
            Command::Rollback(args) => {
                let plan = args.plan()?;
                let mut told = |e: Event| tell(e, quiet, !json);
                let changes = layerup::deploy::rollback(&plan, args.original, &mut told).await?;
                Ok((!plan.dry_run || json).then_some(Done::Changed(changes)))
            }
            Command::Copy(args) => {
                let plan = args.plan()?;
                let told = |m: &Moves| {
                    if !quiet {
                        layerup::progress::say(&moves_line(m));
                    }
                };
                let copied = layerup::copy::copy(&plan, told).await;
                drop(bar);
                copied.map(|c| Some(Done::Copied(c)))
            }
            Command::Watch(args) => {
                let plan = args.push.plan(sde.as_deref())?;
                let debounce = std::time::Duration::from_millis(args.debounce);
                layerup::watch::watch(&plan, debounce, |told| match told {
                    Told::Pushed(cycle) => report_cycle(*cycle, quiet, json),
                    Told::Deploy(e) => tell(e, quiet, false),
                    Told::DeployFailed(e) => eprintln!("error: {e} (still watching)"),
                })
                .await
                .map(|()| None)
            }
        }
    };
    // On Ctrl-C, drop the push (which deletes its temporary layer files) instead of dying with
    // them on disk. Nothing half-written can be left in a registry: the manifest goes last.
    let result = runtime.block_on(async {
        tokio::select! {
            r = work => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let Some(result) = result else {
        // A layer may still be compressing on a blocking thread: do not wait for it.
        runtime.shutdown_background();
        if matches!(cli.command, Command::Watch(_)) {
            // Ctrl-C is how watching ends.
            return ExitCode::SUCCESS;
        }
        eprintln!("error: interrupted");
        return ExitCode::from(130);
    };
    match result {
        Ok(Some(Done::Pushed(pushed, deployed))) => {
            if !quiet {
                report_push(&pushed);
            }
            if !json {
                println!("{}", pushed.reference);
                return ExitCode::SUCCESS;
            }
            let mut doc = layerup::json::pushed(&pushed, started.elapsed());
            let code = match deployed {
                None => ExitCode::SUCCESS,
                Some(Ok(changes)) => {
                    doc["deployed"] = layerup::json::changes(&changes);
                    ExitCode::SUCCESS
                }
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    doc["deploy_error"] = layerup::json::error(&e)["error"].clone();
                    ExitCode::from(e.code() as u8)
                }
            };
            println!("{doc}");
            code
        }
        Ok(Some(Done::Copied(copied))) => {
            if !quiet {
                eprintln!("{}", copied_line(&copied));
            }
            if json {
                println!("{}", layerup::json::copied(&copied));
            } else {
                println!("{}", copied.reference);
            }
            ExitCode::SUCCESS
        }
        Ok(Some(Done::Changed(changes))) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"changes": layerup::json::changes(&changes)})
                );
            } else {
                for c in changes {
                    println!("{} {} {}", c.workload, c.container, c.to);
                }
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if json {
                println!("{}", layerup::json::error(&e));
            }
            ExitCode::from(e.code() as u8)
        }
    }
}

/// What a command produced, for `main` to print.
enum Done {
    /// With `--json --deploy`, the deploy's outcome too.
    Pushed(Pushed, Option<layerup::error::Result<Vec<Change>>>),
    Copied(Copied),
    /// Deployed or rolled back: the containers set.
    Changed(Vec<Change>),
}

/// The deploy step's lines: progress on stderr; a dry run's patch on stdout where it is the
/// command's result (`deploy`, `rollback`), on stderr after a push (whose stdout is the reference).
fn tell(event: Event, quiet: bool, result_on_stdout: bool) {
    match event {
        Event::WouldPatch {
            changes,
            place,
            patch,
        } => {
            let mut text = format!("would patch {place}:");
            for c in changes {
                text += &format!("\n  container {}: {} -> {}", c.container, c.from, c.to);
            }
            let body = serde_json::to_string_pretty(patch).unwrap_or_default();
            text += &format!("\nwith this strategic-merge patch:\n{body}");
            if result_on_stdout {
                println!("{text}");
            } else {
                eprintln!("{text}");
            }
        }
        _ if quiet => {}
        Event::Patched(c) => eprintln!(
            "{}: container {} set to {} (was {})",
            c.workload, c.container, c.to, c.from
        ),
        Event::Unchanged(c) => eprintln!(
            "{}: container {} already runs {}",
            c.workload, c.container, c.to
        ),
        Event::Waiting(id, what) => eprintln!("{id}: waiting: {what}"),
        Event::Ready(id, took) => eprintln!("{id}: rolled out in {:.1}s", took.as_secs_f64()),
        Event::NotWaited(id, why) => eprintln!("{id}: not waiting for the rollout: {why}"),
    }
}

/// What a copy is about to move, before it moves it.
fn moves_line(m: &Moves) -> String {
    if m.copy + m.mount == 0 && m.manifests == 0 {
        return format!(
            "nothing to copy: the destination holds all {} blobs",
            m.present
        );
    }
    format!(
        "to copy: {} blob{} ({}), {} to mount, {} already there, then {} manifest{}",
        m.copy,
        if m.copy == 1 { "" } else { "s" },
        human(m.bytes),
        m.mount,
        m.present,
        m.manifests,
        if m.manifests == 1 { "" } else { "s" },
    )
}

/// What a copy did, in one line.
fn copied_line(c: &Copied) -> String {
    let count = |o: Outcome| c.blobs.iter().filter(|b| b.outcome == o).count();
    let bytes = c.bytes_sent();
    format!(
        "copied {} blobs ({}), mounted {}, {} present; {} manifests written in {:.2}s",
        count(Outcome::Copied),
        human(bytes),
        count(Outcome::Mounted),
        count(Outcome::Present),
        c.moves.manifests,
        c.took.as_secs_f64()
    )
}

fn report_push(pushed: &Pushed) {
    report_reason(pushed);
    eprintln!("{}", summary(pushed));
}

/// Why a push was full when a delta was expected, in one line.
fn report_reason(pushed: &Pushed) {
    if let Mode::Full {
        reason: Some(why), ..
    } = &pushed.mode
    {
        eprintln!("full push: {why}");
    }
}

/// One watch cycle: the status line on stderr, the new reference on stdout.
fn report_cycle(cycle: Cycle, quiet: bool, json: bool) {
    match cycle.result {
        Ok(pushed) if json => {
            if !quiet {
                report_reason(&pushed);
            }
            println!("{}", layerup::json::pushed(&pushed, cycle.took));
        }
        Err(e) if json => {
            eprintln!("error: {e} (still watching)");
            println!("{}", layerup::json::error(&e));
        }
        Ok(pushed) => {
            if !quiet {
                report_reason(&pushed);
                let files = match &pushed.mode {
                    Mode::Full { .. } => format!("{} entries", pushed.entries),
                    Mode::Delta {
                        changed, deleted, ..
                    } => format!("{changed} changed, {deleted} deleted"),
                    Mode::Unchanged => "no changes".to_string(),
                };
                eprintln!(
                    "{}: {files}, {} sent in {:.2}s → {}",
                    match pushed.mode {
                        Mode::Full { .. } => "full",
                        Mode::Delta { .. } => "delta",
                        Mode::Unchanged => "same",
                    },
                    human(pushed.report.bytes_moved()),
                    cycle.took.as_secs_f64(),
                    pushed.reference
                );
            }
            println!("{}", pushed.reference);
        }
        Err(e) => eprintln!("error: {e} (still watching)"),
    }
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

/// One line on what the push did: its kind, what moved, and where the time went.
fn summary(p: &Pushed) -> String {
    let r = &p.report;
    let t = &p.timings;
    let new: Vec<_> = p.new_layers.iter().map(|l| &l.digest).collect();
    let base: Vec<_> = r
        .layers
        .iter()
        .filter(|b| !new.contains(&&b.digest))
        .collect();
    let count = |o: Outcome| base.iter().filter(|b| b.outcome == o).count();
    let built: u64 = p.new_layers.iter().map(|l| l.size).sum();
    let what = match &p.mode {
        Mode::Full { parts, .. } => {
            let uploaded = r
                .layers
                .iter()
                .filter(|b| new.contains(&&b.digest) && b.outcome == Outcome::Uploaded)
                .count();
            format!(
                "full: {} entries in {parts} layer{} ({}), {uploaded} uploaded, {} already there",
                p.entries,
                if *parts == 1 { "" } else { "s" },
                human(built),
                parts - uploaded
            )
        }
        Mode::Delta {
            changed,
            deleted,
            depth,
        } => format!(
            "delta {depth}: {changed} changed, {deleted} deleted ({} layer)",
            human(built)
        ),
        Mode::Unchanged => "no changes".to_string(),
    };
    format!(
        "{what}; other layers: {} present, {} mounted, {} copied; {} sent; \
         base {:.2}s, layer {:.2}s, push {:.2}s",
        count(Outcome::Present) + count(Outcome::Referenced),
        count(Outcome::Mounted),
        count(Outcome::Copied),
        human(r.bytes_moved()),
        t.base.as_secs_f64(),
        t.layer.as_secs_f64(),
        t.push.as_secs_f64(),
    )
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}
