//! layerup run exactly as Tilt and Skaffold run it — the command written in examples/tilt/Tiltfile
//! and examples/skaffold/skaffold.yaml, through a shell, in the example's directory, with the
//! variables each tool sets — then what the tool reads next, read back from the registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A copy of `examples/NAME` whose `prod/hello:1.0` lives in a registry of its own, reached
/// through the developer's uncommitted override, as the example's layerup.toml says to.
struct Example {
    dir: tempfile::TempDir,
    registry: Registry,
    _config: tempfile::TempDir,
}

fn example(name: &str) -> Example {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dir.path()));
    let registry = Registry::start();
    skopeo(&[
        "copy",
        &format!("docker://{}", prod().oci),
        &format!("docker://{}/prod/hello:1.0", registry.host),
    ]);
    std::fs::write(
        dir.path().join("layerup.local.toml"),
        format!("[registries]\nprod = \"{}/prod\"\n", registry.host),
    )
    .unwrap();
    Example {
        dir,
        registry,
        _config: tempfile::tempdir().unwrap(),
    }
}

impl Example {
    /// `sh -c COMMAND` in the example's directory, with layerup on PATH and `env` set, as the
    /// tool would run its build command.
    fn run(&self, command: &str, env: &[(&str, &str)]) -> Run {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_layerup"));
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("DOCKER_CONFIG", self._config.path())
            .env("LAYERUP_STATE_DIR", self._config.path().join("state"));
        for k in [
            "EXPECTED_REF",
            "LAYERUP_PROFILE",
            "IMAGE",
            "BUILD_CONTEXT",
            "PUSH_IMAGE",
            "PLATFORMS",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap()
    }
}

/// The image and command of the Tiltfile's `custom_build(...)`: its first two string arguments.
fn tilt_build(tiltfile: &str) -> (String, String) {
    let call = &tiltfile[tiltfile
        .find("\ncustom_build(")
        .expect("a custom_build call")..];
    let strings: Vec<&str> = call.split('\'').skip(1).step_by(2).take(2).collect();
    (strings[0].to_string(), strings[1].to_string())
}

/// The `buildCommand:` of skaffold.yaml's custom builder.
fn skaffold_build(yaml: &str) -> String {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix("buildCommand:"))
        .expect("a buildCommand")
        .trim()
        .to_string()
}

#[test]
fn tilt_gets_exactly_the_expected_ref_and_it_runs() {
    let ex = example("tilt");
    let (image, command) = tilt_build(&ex.file("Tiltfile"));
    assert_eq!(image, "localhost:5000/hello");
    // Tilt sets EXPECTED_REF to the image name on its registry with a fresh tag.
    let expected = format!("{}/hello:tilt-0f1e2d3c4b5a6978", ex.registry.host);
    let out = ex.run(&command, &[("EXPECTED_REF", &expected)]);
    let pushed = out.ok().to_string();
    assert!(pushed.starts_with(&format!("{}/hello@sha256:", ex.registry.host)));
    // What Tilt deploys, EXPECTED_REF, names the image layerup printed.
    assert_eq!(inspect(&expected)["Digest"], digest_of(&pushed));
    let said = run_in(&expected, "/app/hello.sh");
    assert!(said.contains("hello from tilt dev build"), "{said}");
}

#[test]
fn tilts_ref_file_gets_a_tag_naming_the_same_image() {
    let ex = example("tilt");
    let expected = format!("{}/hello:tilt-1", ex.registry.host);
    let out = ex.run(
        "layerup push --ref-file ref.txt",
        &[("EXPECTED_REF", &expected)],
    );
    let pushed = out.ok().to_string();
    let written = ex.file("ref.txt");
    let reference = written.trim_end();
    assert_eq!(written, format!("{reference}\n"));
    // Tilt parses the file as name:tag and refuses a digest (tilt#5987).
    let (name, tag) = reference.rsplit_once(':').unwrap();
    assert_eq!(name, format!("{}/hello", ex.registry.host));
    assert!(!reference.contains('@'));
    let hex = digest_of(&pushed).trim_start_matches("sha256:");
    assert_eq!(tag, format!("layerup-{}", &hex[..16]));
    assert_eq!(inspect(reference)["Digest"], digest_of(&pushed));
}

#[test]
fn skaffold_gets_its_image_pushed_for_its_platform() {
    let ex = example("skaffold");
    let command = skaffold_build(&ex.file("skaffold.yaml"));
    assert_eq!(command, "layerup push");
    let image = format!("{}/hello:v1-dirty", ex.registry.host);
    let context = ex.dir.path().display().to_string();
    let out = ex.run(
        &command,
        &[
            ("IMAGE", &image),
            ("PUSH_IMAGE", "true"),
            ("BUILD_CONTEXT", &context),
            ("PLATFORMS", "linux/amd64"),
        ],
    );
    let pushed = out.ok().to_string();
    assert_eq!(inspect(&image)["Digest"], digest_of(&pushed));
    assert_eq!(inspect(&image)["Architecture"], "amd64");
    let said = run_in(&image, "/app/hello.sh");
    assert!(said.contains("hello from skaffold dev build"), "{said}");
}

#[test]
fn skaffold_asking_for_the_docker_daemon_or_platforms_the_base_lacks_is_told_why_not() {
    let ex = example("skaffold");
    let image = format!("{}/hello:v1", ex.registry.host);
    let context = ex.dir.path().display().to_string();
    let base = [
        ("IMAGE", image.as_str()),
        ("BUILD_CONTEXT", context.as_str()),
    ];
    let local = ex.run("layerup push", &[base[0], base[1], ("PUSH_IMAGE", "false")]);
    local.fails(
        2,
        &["PUSH_IMAGE=false", "no daemon", "build.local.push: true"],
    );
    let many = ex.run(
        "layerup push",
        &[
            base[0],
            base[1],
            ("PUSH_IMAGE", "true"),
            ("PLATFORMS", "linux/amd64,linux/arm64"),
        ],
    );
    // Several platforms make an index — of a base that has them: this one has one.
    many.fails(
        6,
        &["is a single-platform image (linux/amd64)", "linux/arm64"],
    );
    let writes: Vec<_> = ex
        .registry
        .writes()
        .into_iter()
        .filter(|(_, path, _)| !path.contains("/prod/"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}
