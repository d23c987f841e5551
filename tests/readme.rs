//! Every example of README.md and of `layerup <command> --help`, run as written (issue 26): in a
//! copy of the checkout's `examples/hello`, against a registry standing where the examples say
//! (`localhost:5000`, the one `./scripts/demo` starts; here a free port, written in its place)
//! with the bases they name, and the tests' Kubernetes API server for the cluster examples. A
//! new example that cannot run fails this test until it can.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The commands of the fenced blocks of a text: lines that run layerup (or feed it), with `\`
/// continuations joined and trailing `# comments` left out; synopses (`SRC[:DEST]...`) aside.
fn commands(text: &str, in_blocks: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = !in_blocks;
    let mut pending = String::new();
    for line in text.lines() {
        if in_blocks && line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            continue;
        }
        let line = line.trim();
        let joined = format!("{pending}{}", line.trim_end_matches('\\').trim_end());
        if line.ends_with('\\') {
            pending = joined + " ";
            continue;
        }
        pending.clear();
        let command = match joined.find(" # ") {
            Some(i) => joined[..i].trim_end().to_string(),
            None => joined,
        };
        let runs_layerup = command.starts_with("layerup ") || command.contains("| layerup ");
        let feeds_example = command.starts_with("echo ") && command.contains("examples/hello");
        if (runs_layerup || feeds_example) && !command.contains("SRC[") {
            out.push(command);
        }
    }
    out
}

/// The examples of every command's `--help`.
fn help_examples() -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["push", "watch", "copy", "deploy", "rollback", "login"] {
        let help = Layerup::new().args([sub, "--help"]).run();
        let text = help.ok().to_string();
        let examples = text
            .split("Examples:")
            .nth(1)
            .unwrap_or_else(|| panic!("{sub} --help has no examples"));
        let block: String = examples
            .lines()
            .take_while(|l| l.starts_with("  ") || l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        out.extend(commands(&block, false));
    }
    out
}

/// Where the examples run: a copy of `examples/hello`, per-platform files, a registry with the
/// bases the examples name, a cluster whose `deployment/app` runs the demo's base.
struct Place {
    dir: tempfile::TempDir,
    reg: Registry,
    /// Kept serving while the examples run.
    _kube: common::kube::FakeKube,
    kubeconfig: PathBuf,
}

impl Place {
    fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
        std::fs::create_dir_all(dir.path().join("examples")).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(&hello)
            .arg(dir.path().join("examples/hello")));
        for arch in ["amd64", "arm64"] {
            let d = dir.path().join(format!("out/linux-{arch}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("server"), format!("{arch}\n")).unwrap();
        }
        let reg = Registry::start();
        skopeo(&[
            "copy",
            "-q",
            &format!("docker://{}", prod().oci),
            &format!("docker://{}", reg.reference("prod/demo:1.0")),
        ]);
        skopeo(&[
            "copy",
            "-q",
            "--all",
            &format!("docker://{}", prod().multi),
            &format!("docker://{}", reg.reference("prod/demo-multi:1.0")),
        ]);
        let kube = common::kube::FakeKube::start();
        let image = reg.reference("prod/demo:1.0");
        kube.add(
            "deployments",
            "team-a",
            common::kube::looping_deployment("app", &image),
        );
        let kubeconfig = kube.kubeconfig(dir.path(), "kind-dev", "team-a", None, "dev-token");
        Place {
            dir,
            reg,
            _kube: kube,
            kubeconfig,
        }
    }

    /// The example as run here: the registry's real port for `localhost:5000`, layerup from
    /// this build, the tests' own state, credentials and cluster.
    fn command(&self, example: &str, cwd: &Path) -> Command {
        let line = example.replace("localhost:5000", &self.reg.host);
        let bin = Path::new(env!("CARGO_BIN_EXE_layerup")).parent().unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let mut c = Command::new("sh");
        c.args(["-c", &line])
            .current_dir(cwd)
            .env("PATH", path)
            .env("LAYERUP_STATE_DIR", self.dir.path().join(".state"))
            .env("DOCKER_CONFIG", self.dir.path().join(".docker"))
            .env("XDG_CONFIG_HOME", self.dir.path().join(".config"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("TOKEN", "t0ken")
            .env_remove("REGISTRY_AUTH_FILE");
        c
    }

    /// Runs one example to its end (a watch: until its first push is done, then Ctrl-C).
    fn run(&self, example: &str) {
        let cwd = if example == "layerup watch --sync" {
            self.project()
        } else {
            self.dir.path().to_path_buf()
        };
        if example.starts_with("layerup watch") {
            return self.watch(example, &cwd);
        }
        let out = if example.contains("asks for the password") || example.ends_with("-u me") {
            // On a terminal: `script` gives it one, and types the password.
            let mut c = self.command(example, &cwd);
            let inner: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into()).collect();
            let mut s = Command::new("script");
            s.args(["-qefc", &inner[1], "/dev/null"])
                .current_dir(&cwd)
                .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))));
            c = s;
            output_with_input(&mut c, b"pw\n")
        } else {
            self.command(example, &cwd).output().unwrap()
        };
        assert!(
            out.status.success(),
            "`{example}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A watch example: its first push (and with --deploy its rollout), then Ctrl-C: exit 0.
    fn watch(&self, example: &str, cwd: &Path) {
        let mut child = self
            .command(example, cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = |from: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<_>| {
            std::thread::spawn(move || {
                use std::io::BufRead;
                for l in std::io::BufReader::new(from).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            })
        };
        lines(Box::new(child.stdout.take().unwrap()), tx.clone());
        let stderr = lines(Box::new(child.stderr.take().unwrap()), tx);
        let deploys = example.contains("--deploy") || example == "layerup watch --sync";
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = |seen: &[String]| {
            let pushed = seen.iter().any(|l| l.contains("@sha256:"));
            let rolled = seen.iter().any(|l| l.contains("rolled out"));
            pushed && (rolled || !deploys)
        };
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        let finished = done(&seen);
        // The shell's child is layerup: signal the whole group.
        let _ = Command::new("kill")
            .args(["-INT", "--", &format!("-{}", child.id())])
            .status();
        let _ = Command::new("pkill")
            .args(["-INT", "-P", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        stderr.join().unwrap();
        seen.extend(rx.try_iter());
        let said = seen.join("\n");
        assert!(
            finished,
            "`{example}` did not push (and roll out) in 60 s:\n{said}"
        );
        assert!(
            status.success() || status.code() == Some(130),
            "`{example}` ended {status}:\n{said}"
        );
    }

    /// A project directory whose layerup.toml names the deploy target, for `watch --sync`.
    fn project(&self) -> PathBuf {
        let p = self.dir.path().join("project");
        if !p.exists() {
            std::fs::create_dir_all(&p).unwrap();
            run(Command::new("cp")
                .arg("-a")
                .arg(self.dir.path().join("examples/hello"))
                .arg(p.join("src")));
            std::fs::write(
                p.join("layerup.toml"),
                "base = \"localhost:5000/prod/demo:1.0\"\nto = \"localhost:5000/dev/demo:dev\"\n\
                 mappings = [\"./src:/app\"]\ndeploy = \"deployment/app\"\n\
                 [registries]\n"
                    .replace("localhost:5000", &self.reg.host),
            )
            .unwrap();
        }
        p
    }
}

#[test]
fn every_readme_and_help_example_runs_as_written() {
    require("script", "bsdutils");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut examples = commands(&readme, true);
    assert!(examples.len() >= 15, "{examples:#?}");
    assert!(
        examples[0].starts_with("layerup push ./examples/hello:/app --base localhost:5000/"),
        "the README's first example is the demo's: {}",
        examples[0]
    );
    examples.extend(help_examples());
    let place = Place::new();
    for e in &examples {
        let started = Instant::now();
        place.run(e);
        eprintln!("{:5.1}s  {e}", started.elapsed().as_secs_f64());
    }
}
