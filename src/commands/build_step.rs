//! The image's build command (`build`, `--build`): run with `sh -c` in the image's directory
//! before its layer is made — once, or once per platform when a mapping's SRC has `{os}` or
//! `{arch}` — with BuildKit's `TARGET*`/`BUILD*` variables, its output told line by line.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::oci::platform::Platform;

/// A build command and what it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStep {
    /// Run as `sh -c COMMAND`.
    pub command: String,
    /// Where it runs: the directory of the layerup.toml that names it, else the working
    /// directory.
    pub dir: PathBuf,
    /// `build-deps`: globs relative to `dir` whose edits re-run it under `watch` (empty: every
    /// file of `dir`, less the mapped sources and ignored files).
    pub deps: Vec<String>,
}

/// What a build tells as it goes.
pub enum Event<'a> {
    /// It starts, for this platform when it runs per platform.
    Started(&'a str, Option<&'a Platform>),
    /// A line it wrote (stdout and stderr, as they come).
    Line(&'a str),
    /// It failed: its last lines.
    Failed(&'a [String]),
    /// It succeeded, every platform's, in this long.
    Done(Duration),
}

/// Lines kept for a failure's report.
const TAIL: usize = 20;

/// How long a build's last lines are waited for once it exited (a process it left running may
/// hold its output open).
const DRAIN: Duration = Duration::from_millis(500);

impl BuildStep {
    /// Runs the build for `targets`: once per platform when `per_platform`, else once. A
    /// several-platform push whose build reads `TARGET*` variables but whose outputs are not
    /// per platform is refused: one build cannot be every platform's.
    pub async fn run(
        &self,
        targets: &[Platform],
        per_platform: bool,
        told: &(dyn Fn(Event) + Sync),
    ) -> Result<Duration> {
        let started = Instant::now();
        crate::meter::phase(crate::meter::Phase::Compiling);
        if per_platform {
            for t in targets {
                self.run_one(Some(t), true, told).await?;
            }
        } else if targets.len() > 1 && self.command.contains("TARGET") {
            return Err(Error::usage(format!(
                "the build `{}` reads TARGET variables but runs once for {} platforms: put \
                 `{{arch}}` in the SRC of the mapping of its output (`./out/{{arch}}/app:/app`), \
                 and it runs once per platform",
                short(&self.command),
                targets.len()
            )));
        } else {
            let single = targets.first().filter(|_| targets.len() == 1);
            self.run_one(single, false, told).await?;
        }
        let took = started.elapsed();
        told(Event::Done(took));
        crate::meter::phase(crate::meter::Phase::Base);
        Ok(took)
    }

    async fn run_one(
        &self,
        target: Option<&Platform>,
        named: bool,
        told: &(dyn Fn(Event) + Sync),
    ) -> Result<()> {
        told(Event::Started(&self.command, target.filter(|_| named)));
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .current_dir(&self.dir)
            .envs(variables(target, &Platform::host()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: stopped whole (the compilers it started too) when the
            // push is interrupted or a watch ends.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            Error::build(format!(
                "cannot run the build `{}` in `{}`: {e}",
                short(&self.command),
                self.dir.display()
            ))
        })?;
        let mut group = Group(child.id());
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(lines(out, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(lines(err, tx));
        }
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL);
        let mut keep = |line: String| {
            told(Event::Line(&line));
            if tail.len() == TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        };
        let status = loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(l) => keep(l),
                    None => break child.wait().await,
                },
                status = child.wait() => {
                    let drained = tokio::time::timeout(DRAIN, async {
                        while let Some(l) = rx.recv().await {
                            keep(l);
                        }
                    });
                    let _ = drained.await;
                    break status;
                }
            }
        }
        .map_err(|e| Error::build(format!("the build `{}`: {e}", short(&self.command))))?;
        // Done: what it left running on purpose (a compiler's daemon) stays.
        group.0 = None;
        if status.success() {
            return Ok(());
        }
        let tail: Vec<String> = tail.into_iter().collect();
        told(Event::Failed(&tail));
        // A compiler's last line is often a caret under the source: its last error says more.
        let last = tail
            .iter()
            .rev()
            .find(|l| l.to_lowercase().contains("error"))
            .or_else(|| tail.iter().rev().find(|l| !l.trim().is_empty()));
        Err(Error::build(format!(
            "the build `{}` failed ({}){}{}; nothing was pushed",
            short(&self.command),
            match status.code() {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".into(),
            },
            target
                .filter(|_| named)
                .map_or(String::new(), |t| format!(" for {t}")),
            last.map_or(String::new(), |l| format!(": {}", l.trim())),
        )))
    }
}

/// A running build's process group, ended (SIGTERM) when it is dropped unfinished.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a negative pid signals the group the build leads; it takes
            // no pointers.
            unsafe {
                libc::kill(-pid, libc::SIGTERM);
            }
        }
    }
}

/// Sends each line of `from` (bytes that are not UTF-8 replaced) until it closes.
async fn lines(from: impl AsyncRead + Unpin, to: mpsc::UnboundedSender<String>) {
    let mut from = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match from.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if to.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// BuildKit's platform variables: the target's (empty when the build is not for one platform)
/// and the machine's.
pub fn variables(target: Option<&Platform>, build: &Platform) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", Some(build))] {
        let (platform, os, arch, variant) = match p {
            Some(p) => (
                p.to_string(),
                p.os.clone(),
                p.architecture.clone(),
                p.variant.clone().unwrap_or_default(),
            ),
            None => Default::default(),
        };
        vars.push((format!("{prefix}PLATFORM"), platform));
        vars.push((format!("{prefix}OS"), os));
        vars.push((format!("{prefix}ARCH"), arch));
        vars.push((format!("{prefix}VARIANT"), variant));
    }
    vars
}

/// A command as named in a message: its first line, at most 60 characters.
pub fn short(command: &str) -> String {
    let line = command.lines().next().unwrap_or("");
    match line.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None if command.lines().nth(1).is_some() => format!("{line}…"),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(command: &str, dir: &std::path::Path) -> BuildStep {
        BuildStep {
            command: command.into(),
            dir: dir.to_path_buf(),
            deps: Vec::new(),
        }
    }

    #[test]
    fn the_variables_are_buildkits() {
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        let amd: Platform = "linux/amd64".parse().unwrap();
        let vars = variables(Some(&arm), &amd);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).unwrap().1.as_str();
        assert_eq!(get("TARGETPLATFORM"), "linux/arm/v7");
        assert_eq!(get("TARGETOS"), "linux");
        assert_eq!(get("TARGETARCH"), "arm");
        assert_eq!(get("TARGETVARIANT"), "v7");
        assert_eq!(get("BUILDPLATFORM"), "linux/amd64");
        assert_eq!(get("BUILDVARIANT"), "");
        let none = variables(None, &amd);
        assert!(none
            .iter()
            .filter(|(k, _)| k.starts_with("TARGET"))
            .all(|(_, v)| v.is_empty()));
    }

    #[tokio::test]
    async fn runs_in_its_directory_per_platform_and_tells_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = step(
            "mkdir -p out/$TARGETARCH && echo $TARGETPLATFORM > out/$TARGETARCH/p && echo made $TARGETARCH && echo warn >&2",
            dir.path(),
        );
        let targets: Vec<Platform> = vec![
            "linux/amd64".parse().unwrap(),
            "linux/arm64".parse().unwrap(),
        ];
        let seen = std::sync::Mutex::new(Vec::new());
        let told = |e: Event| {
            if let Event::Line(l) = e {
                seen.lock().unwrap().push(l.to_string());
            }
        };
        s.run(&targets, true, &told).await.unwrap();
        let read =
            |a: &str| std::fs::read_to_string(dir.path().join(format!("out/{a}/p"))).unwrap();
        assert_eq!(read("amd64"), "linux/amd64\n");
        assert_eq!(read("arm64"), "linux/arm64\n");
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, ["made amd64", "made arm64", "warn", "warn"]);
    }

    #[tokio::test]
    async fn a_failure_names_the_command_its_exit_code_and_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = step(
            "echo compiling; echo 'main.c:3: error: nope' >&2; exit 3",
            dir.path(),
        );
        let tail = std::sync::Mutex::new(Vec::new());
        let told = |e: Event| {
            if let Event::Failed(t) = e {
                *tail.lock().unwrap() = t.to_vec();
            }
        };
        let e = s.run(&[], false, &told).await.unwrap_err();
        assert_eq!(e.code(), crate::error::ExitCode::Build);
        assert!(e.to_string().contains("failed (exit code 3)"), "{e}");
        assert!(
            e.to_string()
                .ends_with("main.c:3: error: nope; nothing was pushed"),
            "{e}"
        );
        assert_eq!(tail.into_inner().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn one_build_for_several_platforms_may_not_read_their_variables() {
        let dir = tempfile::tempdir().unwrap();
        let s = step("GOARCH=$TARGETARCH go build", dir.path());
        let targets: Vec<Platform> = vec![
            "linux/amd64".parse().unwrap(),
            "linux/arm64".parse().unwrap(),
        ];
        let e = s.run(&targets, false, &|_| {}).await.unwrap_err();
        assert_eq!(e.code(), crate::error::ExitCode::Usage);
        assert!(e.to_string().contains("{arch}"), "{e}");
    }

    #[tokio::test]
    async fn a_build_that_leaves_a_process_holding_its_output_still_ends() {
        let dir = tempfile::tempdir().unwrap();
        let s = step("sleep 30 & echo started", dir.path());
        let started = Instant::now();
        s.run(&[], false, &|_| {}).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn an_interrupted_build_is_stopped_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let s = step(
            "sh -c 'touch started; sleep 1.5; touch late' & wait",
            dir.path(),
        );
        let mut run = Box::pin(s.run(&[], false, &|_| {}));
        let started = dir.path().join("started");
        let running = async {
            while !started.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            _ = &mut run => panic!("the build ended by itself"),
            _ = running => {}
        }
        drop(run);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!dir.path().join("late").exists(), "its child went on");
    }

    #[test]
    fn long_commands_are_shortened_in_messages() {
        assert_eq!(short("make"), "make");
        assert_eq!(short("make\nmake install"), "make…");
        assert_eq!(short(&"x".repeat(70)).chars().count(), 61);
    }
}
