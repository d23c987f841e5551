//! Validation: the arguments as typed (flags, layerup.toml, environment, all merged) become the
//! commands' plans, checked before any file is read or any request sent.

use crate::build::image::Tweaks;
use crate::build::stack::Squash;
use crate::cli::args::*;
use crate::cli::parse::{command, key_value, parse_mapping, parse_owner};
use crate::cluster::workload::WorkloadRef;
use crate::cluster::Target;
use crate::commands::build_step::BuildStep;
use crate::commands::copy::CopyPlan;
use crate::commands::deploy::{Deploy, DeployImagePlan, DeployPlan, RollbackPlan};
use crate::commands::inspect::InspectPlan;
use crate::commands::login::LoginPlan;
use crate::commands::push::{Platforms, PushPlan};
use crate::commands::sync::SyncPlan;
use crate::commands::watch::WatchPlan;
use crate::error::{Error, Result};
use crate::oci::platform::Platform;
use crate::oci::reference::ImageRef;
use crate::store::registry::Options;
use crate::units::{parse_duration, parse_size};

/// 9999-12-31T23:59:59Z: the last time an RFC 3339 `created` can hold.
const LAST_SECOND_OF_9999: u64 = 253_402_300_799;

/// File events waiting at most for one image of a watch before they count as lost.
const DEFAULT_QUEUE: usize = 4096;

/// Without `--chunk-size`: blobs up to this size go in one `PUT`, larger ones in one `PATCH`;
/// after a failure, chunks of this size.
const DEFAULT_CHUNK: &str = "4M";

impl PushArgs {
    /// Validates everything that can be checked without I/O beyond a `stat` of each source.
    /// `source_date_epoch` is the `SOURCE_DATE_EPOCH` environment variable.
    /// `env` is the process environment (`SOURCE_DATE_EPOCH`, where states live).
    pub fn plan(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<PushPlan> {
        let source_date_epoch = env("SOURCE_DATE_EPOCH");
        let source_date_epoch = source_date_epoch.as_deref();
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
        let build = self.build_step()?;
        // A build makes its outputs: they are checked once it ran.
        for m in mappings.iter().filter(|_| build.is_none()) {
            // Per platform: each platform's source is checked once the platforms are known.
            let src = m.fixed_part();
            if std::fs::symlink_metadata(&src).is_err() {
                return Err(Error::input(format!(
                    "source `{}` does not exist",
                    src.display()
                )));
            }
        }
        let (platform, platforms) = platforms(self.platform.as_deref())?;
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(Error::usage(format!(
                    "--workdir `{w}` must be an absolute path"
                )));
            }
        }
        let tweaks = self.tweaks()?;
        let owner = self.chown.as_deref().map(parse_owner).transpose()?;
        let mtime = mtime(source_date_epoch)?;
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
        let deploy = self.deploy(&to, to_text)?;
        for t in &self.tags {
            if !crate::oci::reference::is_tag(t) {
                return Err(Error::usage(format!(
                    "--tag `{t}` is not a tag (up to 128 letters, digits, `_`, `.`, `-`)"
                )));
            }
        }
        if self.ref_file.is_some() && matches!(to, ImageRef::Layout(_)) {
            return Err(Error::usage(
                "--ref-file names a registry image: --to is a layout on disk",
            ));
        }
        Ok(PushPlan {
            deploy,
            state_dir: crate::build::state::dir(env),
            confined: None,
            build,
            ignore: self.ignore.clone(),
            ref_file: self.ref_file.clone(),
            tags: self.tags.clone(),
            base,
            to,
            mappings,
            platform,
            platform_asked: self.platform.is_some(),
            platforms,
            tweaks,
            owner,
            mtime,
            compression: self
                .compression
                .as_deref()
                .map(crate::build::compression::Compression::parse)
                .transpose()?
                .unwrap_or_default(),
            net: self.transfer.options()?,
            jobs: self.transfer.jobs,
            full: self.full,
            journal: self.journal,
            squash: Squash {
                max_deltas: self.max_deltas,
                share,
            },
        })
    }
    /// `--build` (run here; a layerup.toml's runs in its directory, set by the caller) and
    /// `--build-dep`.
    fn build_step(&self) -> Result<Option<BuildStep>> {
        if self.no_build {
            return Ok(None);
        }
        let Some(command) = &self.build else {
            if let Some(d) = self.build_deps.first() {
                return Err(Error::usage(format!(
                    "--build-dep `{d}` says what a build reads: add --build CMD"
                )));
            }
            return Ok(None);
        };
        if command.trim().is_empty() {
            return Err(Error::usage(
                "--build is empty: give the command that builds",
            ));
        }
        crate::commands::watch::build_deps(&self.build_deps)?;
        Ok(Some(BuildStep {
            command: command.clone(),
            dir: std::env::current_dir().map_err(|e| {
                Error::io("read the working directory", std::path::Path::new("."), &e)
            })?,
            deps: self.build_deps.clone(),
        }))
    }

    /// `--env`, `--entrypoint`, `--cmd`, `--workdir`, `--label`, `--user`.
    fn tweaks(&self) -> Result<Tweaks> {
        Ok(Tweaks {
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
            annotations: self
                .annotations
                .iter()
                .map(|l| key_value(l, "--annotation"))
                .collect::<Result<_>>()?,
            oci: match self.format.as_deref() {
                None | Some("base") => false,
                Some("oci") => true,
                Some(other) => {
                    return Err(Error::usage(format!(
                        "--format `{}`: expected `base` or `oci`",
                        crate::error::escape(other)
                    )))
                }
            },
        })
    }

    /// `--deploy`, with the cluster flags that only mean something with it.
    fn deploy(&self, to: &ImageRef, to_text: &str) -> Result<Option<Deploy>> {
        Ok(match self.deploy.as_deref() {
        None => {
            if let Some(flag) = self.cluster.given().or(self
                .cluster_registry
                .as_ref()
                .map(|_| "--cluster-registry"))
            {
                return Err(Error::usage(format!(
                    "{flag} is for the cluster: add --deploy"
                )));
            }
            None
        }
        Some(_) if matches!(to, ImageRef::Layout(_)) => {
            return Err(Error::usage(format!(
                "--deploy needs --to in a registry (`{}` is a layout on disk; a cluster pulls from a registry)",
                to_text
            )))
        }
        Some(w) => Some(Deploy {
            plan: self
                .cluster
                .plan(Some(w).filter(|w| !w.is_empty()), "with --deploy KIND/NAME")?,
            cluster_registry: cluster_registry(self.cluster_registry.as_deref())?,
        }),
    })
    }
}

/// Every entry's mtime and the image's `created`: `SOURCE_DATE_EPOCH`, else layerup's fixed
/// time.
fn mtime(source_date_epoch: Option<&str>) -> Result<u64> {
    Ok(match source_date_epoch.filter(|s| !s.is_empty()) {
        Some(s) => {
            let secs = s.trim().parse::<u64>().map_err(|_| {
                Error::usage(format!(
                    "SOURCE_DATE_EPOCH `{s}` is not a whole number of seconds"
                ))
            })?;
            // The image's `created` is RFC 3339, whose years have four digits.
            if secs > LAST_SECOND_OF_9999 {
                return Err(Error::usage(format!(
                    "SOURCE_DATE_EPOCH `{s}` is after the year 9999: it counts seconds since \
                     1970 (a value in milliseconds is 1000 times too large)"
                )));
            }
            secs
        }
        None => crate::build::tar::DEFAULT_MTIME,
    })
}

impl WatchArgs {
    pub fn plan(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<WatchPlan> {
        let verify = parse_duration(&self.verify_every).ok_or_else(|| {
            Error::usage(format!(
                "--verify-every `{}` is not a duration (like 60s, 5m)",
                self.verify_every
            ))
        })?;
        let push = self.push.plan(env)?;
        let sync = if self.sync {
            if push.deploy.is_none() {
                return Err(Error::usage(
                    "--sync applies edits to the deployed containers: add --deploy (or `deploy` in layerup.toml)",
                ));
            }
            let text = self.settle.as_deref().unwrap_or("30s");
            let settle = parse_duration(text).ok_or_else(|| {
                Error::usage(format!(
                    "--settle `{text}` is not a duration (like 30s, 2m)"
                ))
            })?;
            Some(SyncPlan::new(self.then.clone(), settle, &self.restart_on)?)
        } else {
            let given = [
                ("--then", self.then.is_some()),
                ("--settle", self.settle.is_some()),
                ("--restart-on", !self.restart_on.is_empty()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                return Err(Error::usage(format!(
                    "{flag} applies to live update: add --sync (or `sync = true` in layerup.toml)"
                )));
            }
            None
        };
        Ok(WatchPlan {
            push,
            sync,
            debounce: std::time::Duration::from_millis(self.debounce),
            verify,
            // A knob for tests and for trees whose edits come in very large bursts.
            queue: env("LAYERUP_WATCH_QUEUE")
                .and_then(|q| q.parse().ok())
                .unwrap_or(DEFAULT_QUEUE),
        })
    }
}

impl ClusterArgs {
    /// `naming`: how the command names a workload, for messages.
    fn plan(&self, workload: Option<&str>, naming: &'static str) -> Result<DeployPlan> {
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
            naming,
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

impl DeployArgs {
    pub fn plan(&self) -> Result<DeployImagePlan> {
        let image = ImageRef::parse(&self.image, "IMAGE")?;
        if matches!(image, ImageRef::Layout(_)) {
            return Err(Error::usage(format!(
                "IMAGE `{}` is a layout on disk; a cluster pulls from a registry",
                self.image
            )));
        }
        Ok(DeployImagePlan {
            image,
            cluster_registry: cluster_registry(self.cluster_registry.as_deref())?,
            net: self.net.options()?,
            deploy: self.cluster.plan(
                self.workload.as_deref(),
                "as the WORKLOAD argument (layerup deploy IMAGE KIND/NAME)",
            )?,
        })
    }
}

impl RollbackArgs {
    pub fn plan(&self) -> Result<RollbackPlan> {
        Ok(RollbackPlan {
            deploy: self
                .cluster
                .plan(Some(&self.workload), "as the WORKLOAD argument")?,
            original: self.original,
        })
    }
}

impl InspectArgs {
    pub fn plan(&self) -> Result<InspectPlan> {
        Ok(InspectPlan {
            image: ImageRef::parse(&self.image, "IMAGE")?,
            platform: platform_or_host(self.platform.as_deref())?,
            net: self.net.options()?,
        })
    }
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
            platform_asked: self.platform.is_some(),
            net: self.transfer.options()?,
            jobs: self.transfer.jobs,
            referrers: self.referrers,
        })
    }
}

impl NetArgs {
    /// The network settings, with blobs sent as `--chunk-size` (`chunk`) says.
    pub fn options_with(&self, chunk: Option<&str>) -> Result<Options> {
        if self.tries == 0 {
            return Err(Error::usage("--tries must be at least 1"));
        }
        let stall = parse_duration(&self.stall_timeout).ok_or_else(|| {
            Error::usage(format!(
                "--stall-timeout `{}` is not a duration (like 30s, 2m, 500ms)",
                self.stall_timeout
            ))
        })?;
        let text = chunk.unwrap_or(DEFAULT_CHUNK);
        let size = parse_size(text).filter(|c| *c >= 1024).ok_or_else(|| {
            Error::usage(format!(
                "--chunk-size `{text}` is not a size of at least 1K (like 4M, 512K)"
            ))
        })?;
        Ok(Options {
            insecure: self.insecure,
            attempts: self.tries,
            stall,
            chunk: size,
            chunked: chunk.is_some(),
        })
    }

    /// For commands that move no blob of their own (`deploy`, `inspect`).
    pub fn options(&self) -> Result<Options> {
        self.options_with(None)
    }
}

impl LoginArgs {
    /// The credentials: the password from stdin (`--password-stdin`), the command line, or
    /// asked for on the terminal (not echoed); the username from `-u`, else asked for.
    pub fn plan(&self, project_registry: Option<String>) -> Result<LoginPlan> {
        let registry = registry_named(self.registry.clone(), project_registry)?;
        let terminal = || std::io::IsTerminal::is_terminal(&std::io::stdin());
        let username = match &self.username {
            Some(u) => u.clone(),
            None if terminal() => {
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "Username for {registry}: ").and_then(|()| err.flush());
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| Error::usage(format!("cannot read the username: {e}")))?;
                line.trim().to_string()
            }
            None => {
                return Err(Error::usage(
                    "no username: give -u USER (stdin is not a terminal to ask on)",
                ))
            }
        };
        let password = if self.password_stdin {
            let mut all = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut all)
                .map_err(|e| Error::usage(format!("cannot read the password from stdin: {e}")))?;
            all.trim_end_matches(['\n', '\r']).to_string()
        } else if let Some(p) = &self.password {
            p.clone()
        } else if terminal() {
            rpassword::prompt_password(format!("Password for {username} at {registry}: "))
                .map_err(|e| Error::usage(format!("cannot read the password: {e}")))?
        } else {
            return Err(Error::usage(
                "no password: pipe it in with --password-stdin (stdin is not a terminal to ask on)",
            ));
        };
        if username.is_empty() || password.is_empty() {
            return Err(Error::usage(
                "an empty username or password logs in to nothing",
            ));
        }
        Ok(LoginPlan {
            registry,
            username,
            password,
            password_on_command_line: self.password.is_some(),
            net: self.net.options()?,
        })
    }
}

/// `login`'s and `logout`'s REGISTRY: as given (`host[:port]`, a `https://` URL's host, Docker
/// Hub's names as `docker.io`), else the project's destination's registry, else Docker Hub.
pub fn registry_named(given: Option<String>, project: Option<String>) -> Result<String> {
    let Some(given) = given else {
        return Ok(project.unwrap_or_else(|| "docker.io".into()));
    };
    let host = given
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    if matches!(
        host.as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        return Ok("docker.io".into());
    }
    if !crate::oci::reference::is_registry_host(&host) {
        return Err(Error::usage(format!(
            "`{given}` is not a registry (host[:port], like registry.example.com or localhost:5000)"
        )));
    }
    Ok(host)
}

impl TransferArgs {
    pub fn options(&self) -> Result<Options> {
        if self.jobs == 0 {
            return Err(Error::usage("--jobs must be at least 1"));
        }
        self.net.options_with(self.chunk_size.as_deref())
    }
}

fn cluster_registry(text: Option<&str>) -> Result<Option<String>> {
    match text {
        Some(h) if !crate::oci::reference::is_registry_host(h) => Err(Error::usage(format!(
            "--cluster-registry `{h}` is not a registry host (host[:port], like registry.local:5000)"
        ))),
        h => Ok(h.map(str::to_string)),
    }
}

/// `--platform` of push and watch: one platform (or this machine's), or `all` or a list of
/// them for an index — Linux ones: the app layer is a Linux tree, which a Windows image cannot
/// take (its layers hold `Files/` and `Hives/`).
fn platforms(text: Option<&str>) -> Result<(Platform, Option<Platforms>)> {
    let (one, many) = any_platforms(text)?;
    let all = std::iter::once(&one).chain(match &many {
        Some(Platforms::These(p)) => p.iter(),
        _ => [].iter(),
    });
    for p in all {
        if p.os != "linux" {
            return Err(Error::usage(format!(
                "--platform {p}: layerup adds Linux layers, which a {} image cannot take",
                p.os
            )));
        }
    }
    Ok((one, many))
}

fn any_platforms(text: Option<&str>) -> Result<(Platform, Option<Platforms>)> {
    match text.map(str::trim) {
        Some("all") => Ok((Platform::host(), Some(Platforms::All))),
        Some(list) if list.contains(',') => {
            let mut all: Vec<Platform> = Vec::new();
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let p: Platform = p.parse()?;
                if !all.contains(&p) {
                    all.push(p);
                }
            }
            let first = all.first().cloned().unwrap_or_else(Platform::host);
            match all.len() {
                0 | 1 => Ok((first, None)),
                _ => Ok((first, Some(Platforms::These(all)))),
            }
        }
        other => Ok((platform_or_host(other)?, None)),
    }
}

/// `--platform`, else this machine's: `linux/<arch>`.
fn platform_or_host(text: Option<&str>) -> Result<Platform> {
    text.map_or_else(|| Ok(Platform::host()), str::parse)
}
