//! What a new user meets in the first ten minutes (issue 26): output that behaves in pipes,
//! registry requests one can read, and messages worded for the command in hand.

mod common;

use std::io::Read;
use std::process::Stdio;

use common::*;

/// `layerup inspect --json REF | head -c 1`: the reader closes the pipe after one byte, and
/// layerup ends quietly — no panic, no backtrace — as other command-line tools do.
#[test]
fn a_closed_pipe_ends_quietly() {
    for args in [
        vec!["inspect", "--json", prod().oci.as_str()],
        vec!["inspect", prod().oci.as_str()],
    ] {
        let mut child = Layerup::new()
            .args(&args)
            .command()
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before layerup has read the image: its first write meets a closed pipe.
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// A base with no WorkingDir, made with umoci and pushed with skopeo as `base/nowd:1`.
fn base_without_workdir(reg: &Registry) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    busybox_rootfs(&root);
    let layout = dir.path().join("layout");
    let img = format!("{}:1", layout.display());
    run(std::process::Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(std::process::Command::new("umoci").args(["new", "--image", &img]));
    run(std::process::Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&root)
        .arg("/"));
    let base = reg.reference("base/nowd:1");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{img}"),
        &format!("docker://{base}"),
    ]);
    base
}

/// Issue 26: `layerup push ./src --base prod/app:1.0` on a base without WorkingDir put the tree
/// at the image's root (`/botocore`, `/server.sh`). It asks for a DEST instead, and pushes
/// nothing.
#[test]
fn a_source_without_dest_on_a_base_without_workdir_asks_where_it_goes() {
    let reg = Registry::start();
    let base = base_without_workdir(&reg);
    let tree = app_tree();
    let src = tree.path().display().to_string();
    let run = push(&[&src, "--base", &base, "--to", &reg.reference("dev/x:1")]);
    run.fails(
        2,
        &[
            "has no DEST",
            "sets no WorkingDir",
            ":/app`), or give --workdir DIR",
        ],
    );
    assert!(reg.writes().iter().all(|(_, p, _)| !p.contains("/dev/x/")));
    // Given one, or a --workdir, it goes there.
    let run = push(&[
        &src,
        "--base",
        &base,
        "--to",
        &reg.reference("dev/x:1"),
        "--workdir",
        "/app",
    ]);
    let pinned = run.ok().to_string();
    assert_eq!(run_in(&pinned, "cat /app/VERSION"), "1.2.3\n");
}

/// Issue 26: `copy --json` still wrote its text lines to stderr where `push --json` does not.
#[test]
fn copy_with_json_writes_only_its_document() {
    let reg = Registry::start();
    let run = Layerup::new()
        .args([
            "copy",
            "--json",
            &prod().oci,
            &reg.reference("copied/app:1"),
        ])
        .run();
    let doc: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert_eq!(doc["manifests"], 1);
    assert_eq!(run.stderr, "", "text beside the document");
}

/// Issue 26: users of crane, ko and Jib expect several tags per push, and annotations.
#[test]
fn more_tags_and_annotations_go_with_the_image() {
    let reg = Registry::start();
    let tree = app_tree();
    let src = format!("{}:/app", tree.path().display());
    let run = push(&[
        &src,
        "--base",
        &prod().oci,
        "--to",
        &reg.reference("dev/app:dev"),
        "--tag",
        "v1",
        "--tag",
        "latest",
        "--annotation",
        "org.opencontainers.image.source=https://example.com/app",
    ]);
    let pinned = run.ok().to_string();
    let digest = pinned.split('@').nth(1).unwrap().to_string();
    for tag in ["dev", "v1", "latest"] {
        let seen = inspect(&reg.reference(&format!("dev/app:{tag}")));
        assert_eq!(seen["Digest"], digest.as_str(), "{tag}");
    }
    let manifest = inspect_raw(&pinned);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.source"],
        "https://example.com/app"
    );
    // A Docker schema 2 manifest has no annotations: said, not dropped.
    let refused = push(&[
        &src,
        "--base",
        &prod().docker,
        "--to",
        &reg.reference("dev/app:docker"),
        "--annotation",
        "a=b",
    ]);
    refused.fails(2, &["--annotation needs an OCI image"]);
    let bad = push(&[
        &src,
        "--base",
        &prod().oci,
        "--to",
        &reg.reference("dev/app:x"),
        "--tag",
        "no/slash",
    ]);
    bad.fails(2, &["--tag `no/slash` is not a tag"]);
}

/// Issue 26: every `--ref-file` push added a `layerup-<digest>` tag, and they piled up. The
/// newest 5 are kept: once 10 are there, the older ones are deleted at once (distribution 2.x
/// deletes no tag, so their images go — none that another tag names).
#[test]
fn ref_file_tags_do_not_pile_up() {
    let reg = Registry::start();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let ref_file = state.path().join("ref.txt");
    let push = |n: usize| {
        std::fs::write(tree.path().join("VERSION"), format!("{n}\n")).unwrap();
        let mut args: Vec<String> =
            push_args(tree.path(), &prod().oci, &reg.reference("dev/app:dev")).into();
        args.extend(["--ref-file".into(), ref_file.display().to_string()]);
        if n == 1 {
            // A tag of the user's on the second image: it stays, and so does its image.
            args.extend(["--tag".into(), "keep-me".into()]);
        }
        Layerup::new()
            .env("LAYERUP_STATE_DIR", state.path())
            .args(&args)
            .run()
    };
    let listed = || -> Vec<String> {
        let (_, _, body) = http(&reg.host, "GET", "/v2/dev/app/tags/list", &[], b"");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut t: Vec<String> = v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .filter(|t| t.starts_with("layerup-"))
            .collect();
        t.sort();
        t
    };
    let mut refs = Vec::new();
    for n in 0..9 {
        let run = push(n);
        run.ok();
        assert!(
            !run.stderr.contains("older layerup tag"),
            "{n}: {}",
            run.stderr
        );
        refs.push(
            std::fs::read_to_string(&ref_file)
                .unwrap()
                .trim()
                .to_string(),
        );
    }
    assert_eq!(listed().len(), 9);
    let run = push(9);
    run.ok();
    refs.push(
        std::fs::read_to_string(&ref_file)
            .unwrap()
            .trim()
            .to_string(),
    );
    assert!(
        run.stderr.contains("deleted 4 older layerup tags")
            && run.stderr.contains("kept the newest 5"),
        "{}",
        run.stderr
    );
    // The newest five, and the one whose image the user's own tag names.
    let mut want: Vec<String> = refs[5..]
        .iter()
        .chain(std::iter::once(&refs[1]))
        .map(|r| r.rsplit(':').next().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(listed(), want);
    assert_eq!(run_in(&refs[9], "cat /app/VERSION"), "9\n");
    assert_eq!(
        run_in(&reg.reference("dev/app:keep-me"), "cat /app/VERSION"),
        "1\n"
    );
}
