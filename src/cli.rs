//! The command line: clap parses raw flags, then [`PushArgs::plan`] validates them into a
//! [`PushPlan`] before any file is read or any registry is contacted.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::error::{Error, Result};
use crate::image::Tweaks;
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::stack::Squash;
use crate::PushPlan;

const EXAMPLES: &str = "\
Examples:
  layerup push ./src:/app --base registry.example.com/prod/app:1.0 \\
      --to dev-registry.example.com/dev/app:dev
  layerup push ./src --base oci:./prod-layout:1.0 --to oci:./dev-layout:dev
  layerup push ./build:/srv/www ./nginx.conf:/etc/nginx/conf.d/ \\
      --base prod/web:2 --to localhost:5000/web:dev --env MODE=dev

Exit codes: 0 ok, 1 internal, 2 usage, 3 source files, 4 registry unreachable,
5 authentication, 6 base image not found, 7 unusable image, 8 registry refused a write,
130 interrupted.";

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add SRC files as a new layer on top of --base and push the image to --to.
    #[command(after_help = EXAMPLES)]
    Push(PushArgs),
    /// Push as `push` does, then again on every change to the SRC files, until Ctrl-C.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(WatchArgs),
}

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
    #[arg(required = true, value_name = "SRC[:DEST]")]
    pub mappings: Vec<String>,
    /// The production image to build on: only its manifest and config are read.
    #[arg(long, value_name = "REF")]
    pub base: String,
    /// Where the new image goes (a tag is written; `latest` if none is given).
    #[arg(long, value_name = "REF")]
    pub to: String,
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
    /// Speak plain HTTP to registries that are not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Blob transfers in flight at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Push the full app layer (in parts), not a delta on the last push.
    #[arg(long)]
    pub full: bool,
    /// Deltas stacked at most before the next push is a full one.
    #[arg(long, default_value_t = Squash::default().max_deltas, value_name = "N")]
    pub max_deltas: usize,
    /// Push a full app layer instead once the deltas would weigh more than this share of it.
    #[arg(long, default_value = "50%", value_name = "PERCENT")]
    pub squash_at: String,
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
        let base = ImageRef::parse(&self.base, "--base")?;
        let to = ImageRef::parse(&self.to, "--to")?;
        if let ImageRef::Registry(r) = &to {
            if r.digest().is_some() {
                return Err(Error::usage(format!(
                    "--to `{}` names a digest; give a tag (the digest is computed and printed)",
                    self.to
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
        let platform = match &self.platform {
            Some(p) => p.parse()?,
            None => Platform::host(),
        };
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
        if self.jobs == 0 {
            return Err(Error::usage("--jobs must be at least 1"));
        }
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
        Ok(PushPlan {
            base,
            to,
            mappings,
            platform,
            tweaks,
            owner,
            mtime,
            insecure: self.insecure,
            jobs: self.jobs,
            full: self.full,
            squash: Squash {
                max_deltas: self.max_deltas,
                share,
            },
        })
    }
}

/// `SRC[:DEST]`: the last `:` separates them, so a source whose name holds `:` needs a DEST.
fn parse_mapping(text: &str) -> Result<RawMapping> {
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
