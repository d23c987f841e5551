//! The build step: a C service compiled with `cc` before its layer is made, the pushed image's
//! binary run by podman; a failing build pushes nothing; a build per platform; `watch`
//! building again when the source changes (with `--sync`: tests/live.rs).

mod common;

use common::watching::Watching;
use common::*;

use common::{c_service as service, main_c, C_BUILD as BUILD};

/// `layerup watch -v ARGS --base prod --to dev/svc:dev` run in `dir`, remembering its pushes.
fn watch_build(dir: &std::path::Path, dev: &Registry, args: &[&str]) -> Watching {
    let state = tempfile::tempdir().unwrap();
    let layerup = layerup_in(dir, &["watch", "-v"])
        .args(args)
        .args(["--base", &prod().oci, "--to", &dev.reference("dev/svc:dev")])
        .env("LAYERUP_STATE_DIR", state.path());
    Watching::of(layerup, state)
}

/// The builds a watch has started.
fn builds(w: &Watching) -> usize {
    w.log().matches("building: ").count()
}

#[test]
fn push_compiles_first_in_the_files_directory_and_the_image_runs_the_new_binary() {
    let dev = Registry::start();
    let svc = service("hello v1");
    std::fs::write(
        svc.path().join("layerup.toml"),
        format!(
            "base = \"{}\"\nto = \"{}\"\nbuild = \"{BUILD}\"\nmappings = [\"./out/hello:/app/hello\"]\n",
            prod().oci,
            dev.reference("dev/svc:dev")
        ),
    )
    .unwrap();
    // Run from below the file: the build still runs beside it.
    let below = svc.path().join("docs");
    std::fs::create_dir(&below).unwrap();
    let state = tempfile::tempdir().unwrap();
    let push = || {
        layerup_in(&below, &["push"])
            .env("LAYERUP_STATE_DIR", state.path())
            .run()
    };
    let first = push();
    let pinned = first.ok().to_string();
    assert!(
        first
            .stderr
            .starts_with(&format!("building: {BUILD}\nbuilt in ")),
        "{}",
        first.stderr
    );
    assert_eq!(run_in(&pinned, "/app/hello"), "hello v1\n");
    // An edit of the source: compiled again, and the image runs the new binary.
    std::fs::write(svc.path().join("main.c"), main_c("hello v2")).unwrap();
    let second = push();
    let pinned2 = second.ok().to_string();
    assert_ne!(pinned, pinned2);
    assert_eq!(run_in(&pinned2, "/app/hello"), "hello v2\n");
    assert!(!svc.path().join("docs/out").exists());
}

#[test]
fn a_failing_build_pushes_nothing_and_says_why_even_quietly() {
    let dev = Registry::start();
    let svc = service("broken\"");
    let to = dev.reference("dev/svc:dev");
    for quiet in [false, true] {
        let mut args = vec![
            "push",
            "./out/hello:/app/hello",
            "--build",
            BUILD,
            "--base",
            &prod().oci,
            "--to",
            &to,
        ];
        if quiet {
            args.push("-q");
        }
        let run = layerup_in(svc.path(), &args).run();
        run.fails(
            11,
            &[
                "error: the build `mkdir -p out && cc -static -O1 -o out/hello main.c` failed (exit code 1)",
                "; nothing was pushed",
            ],
        );
        // The compiler's own words, in either case.
        assert!(run.stderr.contains("main.c:2:"), "{}", run.stderr);
        assert_eq!(run.stdout, "");
    }
    assert_eq!(dev.writes(), vec![], "nothing reached the registry");
}

#[test]
fn a_build_that_makes_no_output_is_named() {
    let dev = Registry::start();
    let svc = service("x");
    let run = layerup_in(
        svc.path(),
        &[
            "push",
            "./out/hello:/app/hello",
            "--build",
            "true",
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/svc:dev"),
        ],
    )
    .run();
    run.fails(
        3,
        &["error: source `./out/hello` does not exist after the build `true` ran"],
    );
    assert_eq!(dev.writes(), vec![]);
}

#[test]
fn a_build_per_platform_puts_each_platforms_output_in_its_image() {
    let dev = Registry::start();
    let svc = service("x");
    let build = "mkdir -p out/$TARGETARCH && echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT] on $BUILDOS\" > out/$TARGETARCH/p";
    let to = dev.reference("dev/svc:multi");
    let run = layerup_in(
        svc.path(),
        &[
            "push",
            "./out/{arch}/p:/app/p",
            "--build",
            build,
            "--platform",
            "all",
            "--base",
            &prod().multi,
            "--to",
            &to,
        ],
    )
    .run();
    let pinned = run.ok().to_string();
    for platform in ["linux/amd64", "linux/arm64"] {
        assert!(
            run.stderr
                .contains(&format!("building for {platform}: mkdir")),
            "{}",
            run.stderr
        );
    }
    let index = inspect_raw(&pinned);
    let kids: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kids.len(), 2);
    for (arch, digest) in kids {
        let tree = unpacked_tree(&format!("{}/dev/svc@{digest}", dev.host));
        let want = format!("linux/{arch} linux {arch} [] on linux\n");
        assert!(
            tree["p"].ends_with(&format!("file {:?}", want.as_bytes())),
            "{arch}: {:?}",
            tree.get("p")
        );
    }
    // One build for every platform cannot read their variables.
    let once = layerup_in(
        svc.path(),
        &[
            "push",
            "./out/amd64/p:/app/p",
            "--build",
            build,
            "--platform",
            "all",
            "--base",
            &prod().multi,
            "--to",
            &to,
        ],
    )
    .run();
    once.fails(2, &["reads TARGET variables but runs once for 2 platforms"]);
}

#[test]
fn build_flags_are_checked_before_anything_runs() {
    let svc = service("x");
    let base = prod().oci.clone();
    for (args, says) in [
        (
            vec!["--build-dep", "*.c"],
            "--build-dep `*.c` says what a build reads: add --build CMD",
        ),
        (vec!["--build", " "], "--build is empty"),
        (
            vec!["--build", "touch ran", "--build-dep", "a["],
            "build-deps `a[` is not a pattern",
        ),
    ] {
        let mut all = vec![
            "push",
            "./out:/app",
            "--base",
            &base,
            "--to",
            "localhost:1/x:y",
        ];
        all.extend(args);
        layerup_in(svc.path(), &all).run().fails(2, &[says]);
    }
    assert!(!svc.path().join("ran").exists());
}

#[test]
fn watch_builds_again_on_a_source_edit_and_a_failing_build_keeps_the_last_image() {
    let dev = Registry::start();
    let svc = service("watch v1");
    // A file that is not a build input: pushed as it is, without a build.
    std::fs::write(svc.path().join("motd"), "one\n").unwrap();
    let w = watch_build(
        svc.path(),
        &dev,
        &[
            "--debounce",
            "300",
            "./out/hello:/app/hello",
            "./motd:/app/motd",
            "--build",
            BUILD,
            "--build-dep",
            "*.c",
        ],
    );
    w.wait_for("the first push", |w| !w.pushes().is_empty());
    assert_eq!(builds(&w), 1);
    assert_eq!(
        run_in(w.pushes().last().unwrap(), "/app/hello"),
        "watch v1\n"
    );

    std::fs::write(svc.path().join("main.c"), main_c("watch v2")).unwrap();
    w.wait_for("the rebuilt push", |w| w.pushes().len() == 2);
    assert_eq!(builds(&w), 2, "{}", w.log());
    assert_eq!(run_in(&w.pushes()[1], "/app/hello"), "watch v2\n");

    // Not an input: pushed without a build.
    std::fs::write(svc.path().join("motd"), "two\n").unwrap();
    w.wait_for("the motd push", |w| w.pushes().len() == 3);
    assert_eq!(builds(&w), 2, "{}", w.log());
    assert_eq!(
        run_in(&w.pushes()[2], "/app/hello; cat /app/motd"),
        "watch v2\ntwo\n"
    );

    // A broken edit: said, nothing pushed, the watch goes on.
    std::fs::write(svc.path().join("main.c"), main_c("broken\"")).unwrap();
    w.wait_for("the failed build", |w| {
        w.log().contains("failed (exit code 1)") && w.log().contains("(still watching)")
    });
    assert_eq!(w.pushes().len(), 3);
    std::fs::write(svc.path().join("main.c"), main_c("watch v3")).unwrap();
    w.wait_for("the mended push", |w| w.pushes().len() == 4);
    assert_eq!(
        run_in(&w.pushes()[3], "/app/hello; cat /app/motd"),
        "watch v3\ntwo\n"
    );
    w.stop();
}

#[test]
fn a_build_that_writes_among_its_own_inputs_does_not_run_forever() {
    let dev = Registry::start();
    let svc = service("loop v1");
    // No build-deps: every file of the directory but the mapped output is an input, and the
    // build writes one of them each time.
    let build = format!("{BUILD} && date +%s%N > build.log");
    let w = watch_build(
        svc.path(),
        &dev,
        &[
            "--debounce",
            "300",
            "./out/hello:/app/hello",
            "--build",
            &build,
        ],
    );
    w.wait_for("the first push", |w| !w.pushes().is_empty());
    std::fs::write(svc.path().join("main.c"), main_c("loop v2")).unwrap();
    w.wait_for("the warning", |w| {
        w.log()
            .contains("build.log` among its own inputs: not taken as edits")
    });
    w.wait_for("the rebuilt push", |w| w.pushes().len() == 2);
    // The first build, the edit's, and one more that showed build.log to be the build's own.
    assert_eq!(builds(&w), 3, "{}", w.log());
    assert_eq!(run_in(&w.pushes()[1], "/app/hello"), "loop v2\n");
    std::fs::write(svc.path().join("main.c"), main_c("loop v3")).unwrap();
    w.wait_for("the next push", |w| w.pushes().len() == 3);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(builds(&w), 4, "{}", w.log());
    assert_eq!(w.pushes().len(), 3, "{}", w.log());
    w.stop();
}

#[test]
fn no_build_pushes_the_files_as_they_are() {
    let dev = Registry::start();
    let svc = service("never built");
    std::fs::write(
        svc.path().join("layerup.toml"),
        format!(
            "base = \"{}\"\nto = \"{}\"\nbuild = \"touch ran; {BUILD}\"\nmappings = [\"./main.c:/app/main.c\"]\n",
            prod().oci,
            dev.reference("dev/svc:dev")
        ),
    )
    .unwrap();
    let run = layerup_in(svc.path(), &["push", "--no-build"]).run();
    let pinned = run.ok().to_string();
    assert!(!run.stderr.contains("building"), "{}", run.stderr);
    assert!(!svc.path().join("ran").exists());
    assert_eq!(run_in(&pinned, "grep -c never /app/main.c"), "1\n");
}

#[test]
fn json_says_how_long_the_build_took_and_its_lines_stay_on_stderr() {
    let dev = Registry::start();
    let svc = service("x");
    let run = layerup_in(
        svc.path(),
        &[
            "push",
            "--json",
            "./out:/app/out",
            "--build",
            "sleep 0.3; mkdir -p out; echo made | tee out/f",
            "--base",
            &prod().oci,
            "--to",
            &dev.reference("dev/svc:dev"),
        ],
    )
    .run();
    let doc: serde_json::Value = serde_json::from_str(run.ok()).unwrap();
    assert!(doc["timings_ms"]["build"].as_u64().unwrap() >= 300, "{doc}");
    assert!(run.stderr.contains("made\n"), "{}", run.stderr);
}

#[test]
fn an_edit_during_a_build_builds_once_more_and_the_newest_is_pushed() {
    let dev = Registry::start();
    let svc = service("during v1");
    // The build says it started, then takes a while: the test edits in that while.
    let build = format!("touch started; sleep 1; {BUILD}");
    let w = watch_build(
        svc.path(),
        &dev,
        &[
            "--debounce",
            "100",
            "./out/hello:/app/hello",
            "--build",
            &build,
            "--build-dep",
            "*.c",
        ],
    );
    w.wait_for("the first push", |w| !w.pushes().is_empty());
    let started = svc.path().join("started");
    std::fs::remove_file(&started).unwrap();
    std::fs::write(svc.path().join("main.c"), main_c("during v2")).unwrap();
    w.wait_for("the second build", |_| started.exists());
    std::fs::write(svc.path().join("main.c"), main_c("during v3")).unwrap();
    w.wait_for("the push after two builds", |w| w.pushes().len() >= 2);
    assert_eq!(builds(&w), 3, "{}", w.log());
    assert_eq!(w.pushes().len(), 2, "{}", w.log());
    assert_eq!(run_in(&w.pushes()[1], "/app/hello"), "during v3\n");
    w.stop();
}
