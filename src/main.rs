//! The `layerup` binary: parse, set up logging, run, print the result or the error once, and exit
//! with the documented code.

use std::process::ExitCode;

use clap::Parser;
use layerup::cli::{Cli, Command};
use layerup::push::Outcome;
use layerup::Pushed;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let work = async {
        match &cli.command {
            Command::Push(args) => {
                let plan = args.plan(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())?;
                layerup::push(&plan).await
            }
        }
    };
    // On Ctrl-C, drop the push (which deletes its temporary layer file) instead of dying with
    // it on disk. Nothing half-written can be left in a registry: the manifest goes last.
    let result = runtime.block_on(async {
        tokio::select! {
            r = work => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let Some(result) = result else {
        // The layer may still be compressing on a blocking thread: do not wait for it.
        runtime.shutdown_background();
        eprintln!("error: interrupted");
        return ExitCode::from(130);
    };
    match result {
        Ok(pushed) => {
            if !cli.quiet {
                eprintln!("{}", summary(&pushed));
            }
            println!("{}", pushed.reference);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}

/// Logs go to stderr; stdout carries only the result. `LAYERUP_LOG` (tracing filter syntax)
/// overrides -v.
fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,layerup=info",
        (false, 2) => "info,layerup=debug,oci_client=debug",
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

fn summary(p: &Pushed) -> String {
    let r = &p.report;
    let t = &p.timings;
    let (new, base): (Vec<_>, Vec<_>) = r.layers.iter().partition(|b| b.digest == p.layer_digest);
    let count = |o: Outcome| base.iter().filter(|b| b.outcome == o).count();
    format!(
        "new layer: {} entries, {} ({}); base layers: {} present, {} mounted, {} copied; \
         {} sent; base {:.2}s, layer {:.2}s, push {:.2}s",
        p.layer_entries,
        human(p.layer_size),
        if new.iter().all(|b| b.outcome == Outcome::Present) {
            "already there"
        } else {
            "uploaded"
        },
        count(Outcome::Present),
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
