//! The command line as typed: clap's arguments for every command, before any validation
//! (`plan.rs` turns them into the commands' plans).

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::build::stack::Squash;

const EXAMPLES: &str = "\
Examples:
  layerup push ./examples/hello:/app \\
      --base localhost:5000/prod/demo:1.0 --to localhost:5000/dev/demo:dev
  layerup push ./examples/hello:/app \\
      --base localhost:5000/prod/demo:1.0 --to oci:./dev-layout:dev
  layerup push ./examples/hello:/srv/www ./examples/hello/hello.sh:/etc/hello/ \\
      --base localhost:5000/prod/demo:1.0 --to localhost:5000/dev/demo:dev --env MODE=dev
  layerup push ./examples/hello:/app --deploy \\
      --base localhost:5000/prod/demo:1.0 --to localhost:5000/dev/demo:dev
  layerup push ./out/stamp:/app/BUILT --build 'mkdir -p out && date -u > out/stamp' \\
      --base localhost:5000/prod/demo:1.0 --to localhost:5000/dev/demo:dev

(localhost:5000 is the registry ./scripts/demo starts; yours are any host[:port]. A short
name, like prod/app:1.0, is Docker Hub's unless layerup.toml makes `prod` an alias.)

Exit codes: 0 ok, 1 internal, 2 usage, 3 source files, 4 registry or cluster unreachable,
5 authentication, 6 not found, 7 unusable image, 8 registry refused a write, 9 cluster
refused a change, 10 rollout failed or timed out, 11 build command failed, 130 interrupted.";

#[derive(Debug, Parser)]
#[command(name = "layerup", version, about = "Append a layer of your files to a production image and push only what is new — no Docker", after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More detail on stderr: -v per blob, -vv registry requests, -vvv HTTP internals.
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = "Global options")]
    pub verbose: u8,
    /// Print only the result (and errors).
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Global options"
    )]
    pub quiet: bool,
    /// Print the result as one JSON object on stdout (docs/json.md); `watch` prints one per push.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    /// Apply this `[profile.NAME]` of layerup.toml and layerup.local.toml.
    #[arg(
        long,
        global = true,
        env = "LAYERUP_PROFILE",
        value_name = "NAME",
        help_heading = "Global options"
    )]
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
    /// and where each came from; with image names, those of each image.
    Config {
        /// Images of the project (`[images.NAME]`, or a directory below with its layerup.toml).
        #[arg(value_name = "IMAGE")]
        names: Vec<String>,
    },
    /// Show an image: its index, the platform's manifest, config and layers (no layer is
    /// downloaded).
    #[command(
        after_help = "Examples:\n  layerup inspect registry.example.com/prod/app:1.0\n  layerup inspect --json oci:./layout:dev"
    )]
    Inspect(InspectArgs),
    /// Log in to a registry: the credentials are checked against it, then kept where docker,
    /// podman, skopeo and crane read them (the credential helper your docker config names,
    /// else `auths` in your docker config or containers auth.json).
    #[command(after_help = LOGIN_EXAMPLES)]
    Login(LoginArgs),
    /// Forget a registry's credentials, wherever layerup reads them.
    Logout {
        /// The registry (`host[:port]`) [default: the project's `to` registry, else docker.io].
        #[arg(value_name = "REGISTRY")]
        registry: Option<String>,
    },
    /// Print a shell completion script: `layerup completions bash > /etc/bash_completion.d/layerup`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): `layerup man > layerup.1`, `layerup man push > layerup-push.1`;
    /// with --dir, write them all there.
    Man {
        /// The command whose page to print [default: layerup(1)].
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
        /// Write every page (layerup.1, layerup-push.1, …) into this directory instead.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<std::path::PathBuf>,
    },
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
    pub net: NetArgs,
}

const DEPLOY_EXAMPLES: &str = "\
Examples:
  layerup deploy localhost:5000/dev/demo:dev deployment/app
  layerup deploy localhost:5000/dev/demo:dev deployment/app -n team-a --context kind-dev
  layerup deploy localhost:5000/dev/demo:dev --cluster-registry registry.local:5000 --dry-run

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
  layerup copy localhost:5000/prod/demo:1.0 localhost:5000/mirror/demo:1.0
  layerup copy --all localhost:5000/prod/demo-multi:1.0 \\
      localhost:5000/mirror/demo-multi:1.0
  layerup copy localhost:5000/prod/demo:1.0 oci:./mirror:demo

Prints DEST@sha256:<digest> on stdout, the same digest as the source's. Before moving anything
it says on stderr how many blobs and bytes will travel.";

const WATCH_EXAMPLES: &str = "\
Examples:
  layerup watch ./examples/hello:/app \\
      --base localhost:5000/prod/demo:1.0 --to localhost:5000/dev/demo:dev

Each push prints the new reference on stdout and one status line on stderr; a failed push is
reported and watching goes on. Ctrl-C stops (exit 0).";

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub push: PushArgs,
    /// How long the files must stay still before a push starts (milliseconds): a burst of
    /// writes (a save, a `git checkout`) is one push.
    #[arg(long, default_value_t = 30, value_name = "MS")]
    pub debounce: u64,
    /// How often the whole tree is walked to catch a change whose file event was lost (the
    /// pushes themselves read only the paths events name).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub verify_every: String,
    /// Live update: after the first push and rollout, apply each edit to the running
    /// containers of the deployed workloads (the same delta that is pushed), and roll out only
    /// once edits settle (needs --deploy).
    #[arg(long)]
    pub sync: bool,
    /// With --sync: run this in each container after its files are synced (`sh -c`).
    #[arg(long, value_name = "CMD")]
    pub then: Option<String>,
    /// With --sync: the templates take the newest image once edits have been still this long
    /// [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub settle: Option<String>,
    /// With --sync: an edit of a path matching this glob is rolled out, not synced (a file
    /// read only at start: package.json, requirements.txt). Repeatable.
    #[arg(long = "restart-on", value_name = "GLOB")]
    pub restart_on: Vec<String>,
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
    /// Run this first (`sh -c`, in the layerup.toml's directory, else here), with TARGETOS,
    /// TARGETARCH, TARGETVARIANT and TARGETPLATFORM set as BuildKit sets them: once, or once per
    /// platform when a SRC has `{arch}`. A failure pushes nothing (exit 11). `watch` runs it
    /// again when its inputs change.
    #[arg(long, value_name = "CMD")]
    pub build: Option<String>,
    /// With --build under `watch`: a glob (relative to the build's directory) of the files it
    /// reads; repeatable [default: every file there but the mapped ones and what .gitignore
    /// ignores]
    #[arg(long = "build-dep", value_name = "GLOB")]
    pub build_deps: Vec<String>,
    /// Skip the build layerup.toml names: push the files as they are (a CI job that built
    /// them already).
    #[arg(long)]
    pub no_build: bool,
    /// How the layers are compressed: gzip (every runtime reads it), or zstd[:LEVEL] (smaller
    /// and faster; OCI images, containerd ≥ 1.5, CRI-O, podman, Docker ≥ 23) [default: gzip]
    #[arg(long, value_name = "gzip|zstd[:LEVEL]")]
    pub compression: Option<String>,
    /// Leave out paths matching this pattern (`.layerupignore` syntax, applied after that
    /// file's rules; repeatable).
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<String>,
    /// Also tag the image `layerup-<digest prefix>` and write that tagged reference to FILE (for
    /// Tilt's `outputs_image_ref_to`, which needs a tag).
    #[arg(long, value_name = "FILE")]
    pub ref_file: Option<PathBuf>,
    /// The platform to take from a multi-platform base (os/arch[/variant]); `all`, or a
    /// comma-separated list, for the same files on each, pushed as an index [default: with
    /// --deploy the cluster nodes', else linux/<this machine's arch>]
    #[arg(long, value_name = "PLATFORM")]
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
    /// Set an annotation on the image's manifest, and on the index of several (repeatable; OCI
    /// images only).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// The new image's media types: `base` keeps the base's, `oci` writes OCI ones on a
    /// Docker schema 2 base too, for registries that refuse Docker's (zot); layers keep their
    /// bytes [default: base]
    #[arg(long, value_name = "base|oci")]
    pub format: Option<String>,
    /// Also tag the image TAG in --to's repository (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
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
    /// Keep a change journal of the sources: a watcher, started by the first such push and gone
    /// after 10 quiet minutes, tells the next push what changed, so it reads no other file
    /// (`watch` watches already).
    #[arg(long)]
    pub journal: bool,
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
    pub net: NetArgs,
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

const LOGIN_EXAMPLES: &str = "\
Examples:
  echo \"$TOKEN\" | layerup login localhost:5000 -u ci-bot --password-stdin
  layerup login localhost:5000 -u me            # on a terminal, asks for the password";

/// `layerup login`, as typed.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (`host[:port]`) [default: the project's `to` registry, else docker.io].
    #[arg(value_name = "REGISTRY")]
    pub registry: Option<String>,
    /// The username [default: asked for on the terminal].
    #[arg(short, long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the password (or token) from stdin, to its end.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password on the command line (it stays in the shell's history and the process
    /// list: prefer --password-stdin) [default: asked for on the terminal].
    #[arg(short, long, value_name = "PASSWORD")]
    pub password: Option<String>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// How layerup speaks to registries; every command that reads or writes images.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// Speak plain HTTP to registries that are not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Tries per request, and per blob, before giving up (1: no retry). Connection failures,
    /// timeouts, 5xx and 429 are retried with exponential backoff and jitter.
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub tries: u32,
    /// A request that moves no byte for this long has failed and is retried (like 30s, 2m).
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub stall_timeout: String,
}

/// How blobs travel; shared by `push`, `watch` and `copy`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Blob transfers in flight at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Upload blobs larger than this in chunks of this size from their first byte, for
    /// registries or proxies that cannot take a large body (like 4M, 512K). Without it, a blob
    /// goes in one request and only a failed one goes on in 4M chunks [default: 4M after a
    /// failure].
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<String>,
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
    /// Copy the image's referrers with it — signatures, SBOMs, attestations (OCI referrers
    /// API, its `sha256-<hex>` fallback tag, cosign's `.sig`/`.att`/`.sbom` tags); digests kept
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub referrers: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}
