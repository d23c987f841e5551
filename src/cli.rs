//! The command line: clap parses raw flags, then [`PushArgs::plan`] validates them into a
//! [`PushPlan`] before any file is read or any registry is contacted.

use std::path::PathBuf;
use std::time::Duration;

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cluster::workload::WorkloadRef;
use crate::cluster::Target;
use crate::config::Config;
use crate::copy::CopyPlan;
use crate::deploy::DeployPlan;
use crate::error::{Error, Result};
use crate::image::Tweaks;
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::Options;
use crate::stack::Squash;
use crate::PushPlan;

const EXAMPLES: &str = "\
Examples:
  layerup push ./src:/app --base registry.example.com/prod/app:1.0 \\
      --to dev-registry.example.com/dev/app:dev
  layerup push ./src --base oci:./prod-layout:1.0 --to oci:./dev-layout:dev
  layerup push ./build:/srv/www ./nginx.conf:/etc/nginx/conf.d/ \\
      --base prod/web:2 --to localhost:5000/web:dev --env MODE=dev

  layerup push ./src:/app --base prod/app:1.0 --to localhost:5000/app:dev --deploy

Exit codes: 0 ok, 1 internal, 2 usage, 3 source files, 4 registry or cluster unreachable,
5 authentication, 6 not found, 7 unusable image, 8 registry refused a write, 9 cluster
refused a change, 10 rollout failed or timed out, 130 interrupted.";

#[derive(Debug, Parser)]
#[command(name = "layerup", version, about = "Append a layer of your files to a production image and push only what is new — no Docker", after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More detail on stderr: -v per blob, -vv registry requests, -vvv HTTP internals.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print only the result (and errors).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print the result as one JSON object on stdout (docs/json.md); `watch` prints one per push.
    #[arg(long, global = true)]
    pub json: bool,
    /// Apply this `[profile.NAME]` of layerup.toml and layerup.local.toml.
    #[arg(long, global = true, env = "LAYERUP_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add SRC files as a new layer on top of --base and push the image to --to.
    #[command(after_help = EXAMPLES)]
    Push(PushArgs),
    /// Push as `push` does, then again on every change to the SRC files, until Ctrl-C.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(WatchArgs),
    /// Copy an image (or with --all a whole index) to another registry, repository or layout,
    /// digest for digest, moving only the blobs the destination lacks.
    #[command(after_help = COPY_EXAMPLES)]
    Copy(CopyArgs),
    /// Set a workload's container image to IMAGE (pinned by digest) and wait for the rollout.
    #[command(after_help = DEPLOY_EXAMPLES)]
    Deploy(DeployArgs),
    /// Put back the image a workload ran before layerup's last change to it.
    #[command(after_help = ROLLBACK_EXAMPLES)]
    Rollback(RollbackArgs),
    /// Print the settings layerup.toml and layerup.local.toml give (with --profile applied),
    /// and where each came from.
    Config,
    /// Show an image: its index, the platform's manifest, config and layers (no layer is
    /// downloaded).
    #[command(
        after_help = "Examples:\n  layerup inspect registry.example.com/prod/app:1.0\n  layerup inspect --json oci:./layout:dev"
    )]
    Inspect(InspectArgs),
    /// Print a shell completion script: `layerup completions bash > /etc/bash_completion.d/layerup`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `layerup man > /usr/local/share/man/man1/layerup.1`.
    Man,
}

/// `layerup inspect`, as typed.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A registry reference (tag or digest) or `oci:DIR[:TAG]`.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The platform to show from an index [default: linux/<this machine's arch>].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

impl InspectArgs {
    pub fn plan(&self) -> Result<(ImageRef, Platform, Options)> {
        let image = ImageRef::parse(&self.image, "IMAGE")?;
        let platform = platform_or_host(self.platform.as_deref())?;
        Ok((image, platform, self.transfer.options()?))
    }
}

const DEPLOY_EXAMPLES: &str = "\
Examples:
  layerup deploy localhost:5000/app@sha256:<digest> deployment/app
  layerup deploy localhost:5000/app:dev deployment/app -n team-a --context kind-dev
  layerup deploy localhost:5000/app:dev --cluster-registry registry.local:5000 --dry-run

A tag is resolved to its digest first: the workload always names the image by digest. Without
a workload, every deployment, statefulset and daemonset in the namespace running IMAGE's
repository gets it. Prints, per container set, `KIND/NAME CONTAINER IMAGE` on stdout.";

const ROLLBACK_EXAMPLES: &str = "\
Examples:
  layerup rollback deployment/app             # the image before layerup's last change
  layerup rollback deployment/app --original  # the image before layerup's first change

Only containers still running the image layerup set are rolled back.";

const COPY_EXAMPLES: &str = "\
Examples:
  layerup copy registry.example.com/prod/app:1.0 dev-registry.example.com/dev/app:1.0
  layerup copy --all prod/app:1.0 dev/app:1.0        # every platform of an index
  layerup copy prod/app@sha256:<digest> oci:./mirror:app

Prints DEST@sha256:<digest> on stdout, the same digest as the source's. Before moving anything
it says on stderr how many blobs and bytes will travel.";

const WATCH_EXAMPLES: &str = "\
Examples:
  layerup watch ./src:/app --base registry.example.com/prod/app:1.0 --to localhost:5000/app:dev

Each push prints the new reference on stdout and one status line on stderr; a failed push is
reported and watching goes on. Ctrl-C stops (exit 0).";

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub push: PushArgs,
    /// How long the files must stay still before a push starts (milliseconds): a burst of
    /// writes (a save, a `git checkout`) is one push.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub debounce: u64,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Files to add: a directory or file, and where it lands in the image (default: the image's
    /// working directory). A relative DEST is relative to the working directory. Repeatable; all
    /// mappings make one layer, later ones winning where they overlap.
    #[arg(value_name = "SRC[:DEST]")]
    pub mappings: Vec<String>,
    /// The production image to build on: only its manifest and config are read.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// Where the new image goes (a tag is written; `latest` if none is given). Tilt's
    /// EXPECTED_REF, when set, is the default.
    #[arg(long, value_name = "REF", env = "EXPECTED_REF")]
    pub to: Option<String>,
    /// Leave out paths matching this pattern (`.layerupignore` syntax, applied after that
    /// file's rules; repeatable).
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<String>,
    /// Also tag the image `layerup-<digest prefix>` and write that tagged reference to FILE (for
    /// Tilt's `outputs_image_ref_to`, which needs a tag).
    #[arg(long, value_name = "FILE")]
    pub ref_file: Option<PathBuf>,
    /// The platform to take from a multi-platform base [default: linux/<this machine's arch>].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Set an environment variable in the image (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Replace the entrypoint: a JSON array, or words split like a shell would. Drops the base's CMD
    /// unless --cmd is given too, as docker does.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Replace the command: a JSON array, or words split like a shell would.
    #[arg(long, value_name = "CMD")]
    pub cmd: Option<String>,
    /// Set the working directory (absolute); mappings without DEST land there.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Set a label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Set the user the container runs as.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Own the added files by this numeric uid (and gid; default the same) instead of 0:0.
    #[arg(long, value_name = "UID[:GID]")]
    pub chown: Option<String>,
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Push the full app layer (in parts), not a delta on the last push.
    #[arg(long)]
    pub full: bool,
    /// Deltas stacked at most before the next push is a full one.
    #[arg(long, default_value_t = Squash::default().max_deltas, value_name = "N")]
    pub max_deltas: usize,
    /// Push a full app layer instead once the deltas would weigh more than this share of it.
    #[arg(long, default_value = "50%", value_name = "PERCENT")]
    pub squash_at: String,
    /// Then set the image in the cluster: in this workload (deployment/NAME, statefulset/NAME,
    /// daemonset/NAME) or, bare, in every workload of the namespace running the base's or the
    /// destination's repository.
    #[arg(long, value_name = "KIND/NAME", num_args = 0..=1, default_missing_value = "")]
    pub deploy: Option<String>,
    /// The registry's name as the cluster reaches it, written into the workload in place of
    /// --to's (host[:port]: localhost:5000 on your machine, registry.local:5000 in the cluster).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub cluster_registry: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Which cluster, namespace, workload container, and how to wait; shared by `--deploy`,
/// `deploy` and `rollback`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The kubeconfig context [default: the current one].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace [default: the context's, else `default`].
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The container to set [default: the one running the image's repository].
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Allow changing this context although it does not look like a local development
    /// cluster (repeatable).
    #[arg(
        long = "allow-context",
        value_name = "NAME",
        env = "LAYERUP_ALLOW_CONTEXTS",
        value_delimiter = ','
    )]
    pub allow_context: Vec<String>,
    /// How long to wait for the rollout (like 90s, 2m).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
    /// Do not wait for the rollout.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the patch and where it would go; change nothing in the cluster.
    #[arg(long)]
    pub dry_run: bool,
}

impl ClusterArgs {
    fn plan(&self, workload: Option<&str>) -> Result<DeployPlan> {
        let workload = workload
            .map(|w| {
                WorkloadRef::parse(w).map_err(|e| Error::usage(format!("invalid workload: {e}")))
            })
            .transpose()?;
        let wait = parse_duration(&self.timeout).ok_or_else(|| {
            Error::usage(format!(
                "--timeout `{}` is not a duration (like 90s, 2m)",
                self.timeout
            ))
        })?;
        Ok(DeployPlan {
            workload,
            container: self.container.clone(),
            target: Target {
                context: self.context.clone(),
                namespace: self.namespace.clone(),
                allow: self.allow_context.clone(),
            },
            wait: (!self.no_wait).then_some(wait),
            dry_run: self.dry_run,
        })
    }

    /// Flags given that only mean something with --deploy.
    fn given(&self) -> Option<&'static str> {
        [
            (self.context.is_some(), "--context"),
            (self.namespace.is_some(), "--namespace"),
            (self.container.is_some(), "--container"),
            (self.no_wait, "--no-wait"),
            (self.dry_run, "--dry-run"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
    }
}

/// `layerup deploy`, as typed.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The image: pinned by digest, or a tag to resolve to one.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The workload [default: every one in the namespace running IMAGE's repository].
    #[arg(value_name = "KIND/NAME")]
    pub workload: Option<String>,
    /// The registry's name as the cluster reaches it, written in place of IMAGE's.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub cluster_registry: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

impl DeployArgs {
    pub fn plan(&self) -> Result<(ImageRef, Option<String>, DeployPlan)> {
        let image = ImageRef::parse(&self.image, "IMAGE")?;
        if matches!(image, ImageRef::Layout(_)) {
            return Err(Error::usage(format!(
                "IMAGE `{}` is a layout on disk; a cluster pulls from a registry",
                self.image
            )));
        }
        let registry = cluster_registry(self.cluster_registry.as_deref())?;
        Ok((
            image,
            registry,
            self.cluster.plan(self.workload.as_deref())?,
        ))
    }
}

/// `layerup rollback`, as typed.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The workload (deployment/NAME, statefulset/NAME, daemonset/NAME).
    #[arg(value_name = "KIND/NAME")]
    pub workload: String,
    /// Go back to the image before layerup's first change in a row, not its last.
    #[arg(long)]
    pub original: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl RollbackArgs {
    pub fn plan(&self) -> Result<DeployPlan> {
        self.cluster.plan(Some(&self.workload))
    }
}

fn cluster_registry(text: Option<&str>) -> Result<Option<String>> {
    match text {
        Some(h) if !crate::reference::is_registry_host(h) => Err(Error::usage(format!(
            "--cluster-registry `{h}` is not a registry host (host[:port], like registry.local:5000)"
        ))),
        h => Ok(h.map(str::to_string)),
    }
}

/// How blobs travel; shared by `push`, `watch` and `copy`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Speak plain HTTP to registries that are not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Blob transfers in flight at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Tries per request, and per blob, before giving up (1: no retry). Connection failures,
    /// timeouts, 5xx and 429 are retried with exponential backoff and jitter.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub tries: u32,
    /// A request that moves no byte for this long has failed and is retried (like 30s, 2m).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub stall_timeout: String,
    /// Blobs larger than this are uploaded in chunks of this size; a broken link then costs at
    /// most one chunk where the registry can resume (like 4M, 512K).
    #[arg(long, default_value = "4M", value_name = "SIZE")]
    pub chunk_size: String,
}

impl TransferArgs {
    pub fn options(&self) -> Result<Options> {
        if self.tries == 0 {
            return Err(Error::usage("--tries must be at least 1"));
        }
        let stall = parse_duration(&self.stall_timeout).ok_or_else(|| {
            Error::usage(format!(
                "--stall-timeout `{}` is not a duration (like 30s, 2m, 500ms)",
                self.stall_timeout
            ))
        })?;
        let chunk = parse_size(&self.chunk_size)
            .filter(|c| *c >= 1024)
            .ok_or_else(|| {
                Error::usage(format!(
                    "--chunk-size `{}` is not a size of at least 1K (like 4M, 512K)",
                    self.chunk_size
                ))
            })?;
        Ok(Options {
            insecure: self.insecure,
            attempts: self.tries,
            stall,
            chunk,
        })
    }
}

/// `--platform`, else this machine's: `linux/<arch>`.
fn platform_or_host(text: Option<&str>) -> Result<Platform> {
    text.map_or_else(|| Ok(Platform::host()), str::parse)
}

/// A duration as a user would type it back: `90s`, `2m`, `500ms`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `90s`, `2m`, `500ms`, `1h`, or bare seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// `4M`, `512K`, `1G` (binary multiples; `MiB` and `KiB` spelled out also work), or bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// `layerup copy`, as typed.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The image to copy: a registry reference (tag or digest) or `oci:DIR[:TAG]`.
    #[arg(value_name = "SOURCE")]
    pub from: String,
    /// Where it goes; the manifest keeps its digest, so only the tag is chosen here.
    #[arg(value_name = "DEST")]
    pub to: String,
    /// Copy a whole multi-platform index (every platform, attestations included), not only the
    /// --platform image.
    #[arg(long)]
    pub all: bool,
    /// The platform to take from an index without --all [default: linux/<this machine's arch>].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", conflicts_with = "all")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

impl CopyArgs {
    pub fn plan(&self) -> Result<CopyPlan> {
        let from = ImageRef::parse(&self.from, "SOURCE")?;
        let to = ImageRef::parse(&self.to, "DEST")?;
        if let ImageRef::Registry(r) = &to {
            if r.digest().is_some() {
                return Err(Error::usage(format!(
                    "DEST `{}` names a digest; give a tag (the copy keeps the source's digest)",
                    self.to
                )));
            }
        }
        let platform = platform_or_host(self.platform.as_deref())?;
        Ok(CopyPlan {
            from,
            to,
            all: self.all,
            platform,
            net: self.transfer.options()?,
            jobs: self.transfer.jobs,
        })
    }
}

/// Parses the command line with layerup.toml's settings (and the environment's: Tilt's
/// `EXPECTED_REF`, Skaffold's variables) filling in what the command line leaves out, then
/// expands registry aliases. clap's own errors (and `--help`) exit here, as `Cli::parse` would.
pub fn parse(
    argv: Vec<OsString>,
    cwd: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Cli, Config)> {
    let cmd = Cli::command();
    let matches = cmd
        .clone()
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| e.exit());
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
    let mut cli = if extra.is_empty() && sources.is_empty() {
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    } else {
        // Flags as `--name=value`; SRCs after `--`, so that a bare `--deploy` the user typed
        // last does not take the first SRC as its value.
        let mut all = argv;
        all.extend(extra);
        if !sources.is_empty() {
            all.push("--".into());
            all.extend(sources);
        }
        Cli::try_parse_from(all).unwrap_or_else(|e| e.exit())
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
    Ok((cli, config))
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
            "Skaffold asked for an image in the local docker daemon (PUSH_IMAGE=false), and              layerup has no daemon to load it into: it pushes to a registry. Set `build.local.push: true`              in skaffold.yaml (or run `skaffold dev --default-repo <registry>`)",
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
                "Skaffold asked for {} platforms ({p}); layerup adds a layer to one platform's                  image per run: build for one (--platform in skaffold.yaml's custom build)",
                all.len()
            )));
        }
        put("platform", all[0].to_string());
    }
    Ok((flags, set))
}

/// One `SRC[:DEST]` as typed, before the base's working directory is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMapping {
    pub src: PathBuf,
    pub dest: Option<String>,
}

impl PushArgs {
    /// Validates everything that can be checked without I/O beyond a `stat` of each source.
    /// `source_date_epoch` is the `SOURCE_DATE_EPOCH` environment variable.
    pub fn plan(&self, source_date_epoch: Option<&str>) -> Result<PushPlan> {
        let base = self.base.as_deref().ok_or_else(|| {
            Error::usage("no base image: give --base REF (or `base` in layerup.toml)")
        })?;
        let to_text = self.to.as_deref().ok_or_else(|| {
            Error::usage("no destination: give --to REF (or `to` in layerup.toml)")
        })?;
        if self.mappings.is_empty() {
            return Err(Error::usage(
                "no files to add: give SRC[:DEST] (or `mappings` in layerup.toml)",
            ));
        }
        let base = ImageRef::parse(base, "--base")?;
        let to = ImageRef::parse(to_text, "--to")?;
        if let ImageRef::Registry(r) = &to {
            if r.digest().is_some() {
                return Err(Error::usage(format!(
                    "--to `{}` names a digest; give a tag (the digest is computed and printed)",
                    to_text
                )));
            }
        }
        let mappings = self
            .mappings
            .iter()
            .map(|m| parse_mapping(m))
            .collect::<Result<Vec<_>>>()?;
        for m in &mappings {
            if std::fs::symlink_metadata(&m.src).is_err() {
                return Err(Error::input(format!(
                    "source `{}` does not exist",
                    m.src.display()
                )));
            }
        }
        let platform = platform_or_host(self.platform.as_deref())?;
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(Error::usage(format!(
                    "--workdir `{w}` must be an absolute path"
                )));
            }
        }
        let tweaks = Tweaks {
            env: self
                .env
                .iter()
                .map(|e| key_value(e, "--env"))
                .collect::<Result<_>>()?,
            entrypoint: self
                .entrypoint
                .as_deref()
                .map(|c| command(c, "--entrypoint"))
                .transpose()?,
            cmd: self
                .cmd
                .as_deref()
                .map(|c| command(c, "--cmd"))
                .transpose()?,
            workdir: self.workdir.clone(),
            labels: self
                .labels
                .iter()
                .map(|l| key_value(l, "--label"))
                .collect::<Result<_>>()?,
            user: self.user.clone(),
        };
        let owner = self.chown.as_deref().map(parse_owner).transpose()?;
        let mtime = match source_date_epoch.filter(|s| !s.is_empty()) {
            Some(s) => s.trim().parse::<u64>().map_err(|_| {
                Error::usage(format!(
                    "SOURCE_DATE_EPOCH `{s}` is not a whole number of seconds"
                ))
            })?,
            None => crate::layer::DEFAULT_MTIME,
        };
        let share = self
            .squash_at
            .trim_end_matches('%')
            .parse::<u64>()
            .map_err(|_| {
                Error::usage(format!(
                    "--squash-at `{}` must be a whole percentage, like 50%",
                    self.squash_at
                ))
            })?;
        let deploy = match self.deploy.as_deref() {
            None => {
                if let Some(flag) = self.cluster.given().or(self
                    .cluster_registry
                    .as_ref()
                    .map(|_| "--cluster-registry"))
                {
                    return Err(Error::usage(format!("{flag} is for the cluster: add --deploy")));
                }
                None
            }
            Some(_) if matches!(to, ImageRef::Layout(_)) => {
                return Err(Error::usage(format!(
                    "--deploy needs --to in a registry (`{}` is a layout on disk; a cluster pulls from a registry)",
                    to_text
                )))
            }
            Some(w) => Some(crate::deploy::Deploy {
                plan: self.cluster.plan(Some(w).filter(|w| !w.is_empty()))?,
                cluster_registry: cluster_registry(self.cluster_registry.as_deref())?,
            }),
        };
        if self.ref_file.is_some() && matches!(to, ImageRef::Layout(_)) {
            return Err(Error::usage(
                "--ref-file names a registry image: --to is a layout on disk",
            ));
        }
        Ok(PushPlan {
            deploy,
            ignore: self.ignore.clone(),
            ref_file: self.ref_file.clone(),
            base,
            to,
            mappings,
            platform,
            tweaks,
            owner,
            mtime,
            net: self.transfer.options()?,
            jobs: self.transfer.jobs,
            full: self.full,
            squash: Squash {
                max_deltas: self.max_deltas,
                share,
            },
        })
    }
}

/// `SRC[:DEST]`: the last `:` separates them, so a source whose name holds `:` needs a DEST.
pub(crate) fn parse_mapping(text: &str) -> Result<RawMapping> {
    let (src, dest) = match text.rsplit_once(':') {
        Some((src, dest)) => (src, Some(dest)),
        None => (text, None),
    };
    if src.is_empty() {
        return Err(Error::usage(format!(
            "mapping `{text}` has no source (write SRC[:DEST])"
        )));
    }
    if dest == Some("") {
        return Err(Error::usage(format!(
            "mapping `{text}` has an empty DEST (write SRC or SRC:DEST)"
        )));
    }
    Ok(RawMapping {
        src: src.into(),
        dest: dest.map(str::to_string),
    })
}

fn key_value(text: &str, flag: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.chars().any(char::is_whitespace) => {
            Ok((k.into(), v.into()))
        }
        _ => Err(Error::usage(format!("{flag} `{text}` must be KEY=VALUE"))),
    }
}

/// A JSON array (`["python","-m","app"]`) or a shell-like string (`python -m app`).
fn command(text: &str, flag: &str) -> Result<Vec<String>> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text)
            .map_err(|_| Error::usage(format!("{flag} `{text}` is not a JSON array of strings")));
    }
    shlex::split(text).ok_or_else(|| Error::usage(format!("{flag} `{text}` has unbalanced quotes")))
}

fn parse_owner(text: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::usage(format!(
            "--chown `{text}` must be a numeric UID[:GID] (names cannot be resolved: layerup never reads the base's /etc/passwd)"
        ))
    };
    let (u, g) = text.split_once(':').unwrap_or((text, text));
    Ok((u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("./src:/app", "./src", Some("/app"))]
    #[case("./src", "./src", None)]
    #[case("a:b:/app", "a:b", Some("/app"))]
    #[case("conf.yaml:etc/", "conf.yaml", Some("etc/"))]
    fn mappings_split_at_the_last_colon(
        #[case] text: &str,
        #[case] src: &str,
        #[case] dest: Option<&str>,
    ) {
        assert_eq!(
            parse_mapping(text).unwrap(),
            RawMapping {
                src: src.into(),
                dest: dest.map(Into::into)
            }
        );
    }

    #[rstest]
    #[case(":/app", "has no source")]
    #[case("./src:", "has an empty DEST")]
    fn broken_mappings_are_usage_errors(#[case] text: &str, #[case] why: &str) {
        assert!(parse_mapping(text).unwrap_err().to_string().contains(why));
    }

    #[rstest]
    #[case(r#"["python", "-m", "app"]"#, &["python", "-m", "app"])]
    #[case("python -m 'my app'", &["python", "-m", "my app"])]
    #[case("[]", &[])]
    fn commands_are_json_or_shell_words(#[case] text: &str, #[case] want: &[&str]) {
        assert_eq!(command(text, "--cmd").unwrap(), want);
    }

    #[rstest]
    #[case("1000", (1000, 1000))]
    #[case("1000:50", (1000, 50))]
    fn owners_are_numeric(#[case] text: &str, #[case] want: (u32, u32)) {
        assert_eq!(parse_owner(text).unwrap(), want);
    }

    #[test]
    fn named_owners_explain_why_not() {
        assert!(parse_owner("app:app")
            .unwrap_err()
            .to_string()
            .contains("never reads the base's /etc/passwd"));
    }

    #[rstest]
    #[case("=x")]
    #[case("novalue")]
    #[case("A B=1")]
    fn env_needs_key_and_value(#[case] text: &str) {
        assert_eq!(
            key_value(text, "--env").unwrap_err().to_string(),
            format!("--env `{text}` must be KEY=VALUE")
        );
    }
}
