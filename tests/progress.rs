//! Progress on a terminal, and none anywhere else: a push under a pseudo-terminal (`script`)
//! draws the bar; the same push into a pipe writes only its summary.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_terminal_sees_blobs_and_bytes_and_a_pipe_sees_no_bar() {
    require("script", "bsdutils");
    let dest = Registry::start();
    let tree = app_tree();
    let args = push_args(tree.path(), &prod().oci, &dest.reference("dev/app:tty"));
    let state = tempfile::tempdir().unwrap();
    let line = std::iter::once(env!("CARGO_BIN_EXE_layerup").to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("LAYERUP_STATE_DIR", state.path())
        .env("DOCKER_CONFIG", state.path())
        .env("REGISTRY_AUTH_FILE", state.path().join("auth.json"))
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{seen}");
    assert!(
        // The bar's words (issue 26): `sending: 3 of 4 blobs, 1.0 MiB sent (…/s)`.
        seen.contains("sending: ") && seen.contains(" blobs, ") && seen.contains(" sent"),
        "no progress on a terminal:\n{seen}"
    );

    let piped = Layerup::new()
        .args(push_args(
            tree.path(),
            &prod().oci,
            &dest.reference("dev/app:pipe"),
        ))
        .args(["--full"])
        .run();
    piped.ok();
    assert!(
        !piped.stderr.contains("blobs ")
            && !piped.stderr.contains('\r')
            && !piped.stderr.contains('\x1b'),
        "{:?}",
        piped.stderr
    );
}

/// A watch of several images on a terminal keeps one line per image, updated in place.
#[test]
fn a_watch_of_several_images_keeps_one_line_each_on_a_terminal() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    require("script", "bsdutils");
    let dev = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!("base = \"{}\"\n", prod().oci);
    for name in ["api", "web"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("NAME"), name).unwrap();
        toml += &format!(
            "[images.{name}]\nto = \"{}\"\nmappings = [\"./{name}:/app\"]\n",
            dev.reference(&format!("shop/{name}:dev"))
        );
    }
    std::fs::write(dir.path().join("layerup.toml"), toml).unwrap();
    let line = format!(
        "timeout -s INT 60 {} watch --squash-at 100000%",
        env!("CARGO_BIN_EXE_layerup")
    );
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .current_dir(dir.path())
        .env("LAYERUP_STATE_DIR", state.path())
        .env("DOCKER_CONFIG", state.path())
        .env("REGISTRY_AUTH_FILE", state.path().join("auth.json"))
        .env("TERM", "xterm")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    let mut out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_for = |what: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(50);
        while !what(&seen.lock().unwrap()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                seen.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for(&|s| s.matches("full, ").count() >= 2);
    std::fs::write(dir.path().join("web/NAME"), "web 2").unwrap();
    wait_for(&|s| s.contains("1 changed, 0 deleted"));
    run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let _ = child.wait();
    let all = seen.lock().unwrap().clone();
    let web = all.rfind("web ").unwrap();
    assert!(all[web..].contains("1 changed, 0 deleted"), "{all}");
    assert!(
        all.contains("api ") && all.contains("\u{1b}["),
        "lines redrawn in place: {all:?}"
    );
}

/// Issue 26: a finished push left its progress line under the result (`⠦ blobs 9/10, …`), so
/// a done run looked stuck. Run in a real terminal (tmux), the screen after a full push and
/// after a delta shows their results and summaries, and no bar.
#[test]
fn a_finished_push_leaves_no_progress_line_on_the_terminal() {
    require("tmux", "tmux");
    let dest = Registry::start();
    let tree = app_tree();
    let state = tempfile::tempdir().unwrap();
    let socket = state.path().join("tmux.sock");
    let tmux = || {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&socket);
        c
    };
    let push = std::iter::once(env!("CARGO_BIN_EXE_layerup").to_string())
        .chain(push_args(
            tree.path(),
            &prod().oci,
            &dest.reference("dev/app:term"),
        ))
        .collect::<Vec<_>>()
        .join(" ");
    let env = format!(
        "LAYERUP_STATE_DIR={s}/state DOCKER_CONFIG={s} REGISTRY_AUTH_FILE={s}/auth.json \
         XDG_CONFIG_HOME={s} TERM=xterm",
        s = state.path().display()
    );
    let script = format!(
        "env {env} {push}; echo 'edited' > {}/VERSION; env {env} {push}; echo DONE; sleep 120",
        tree.path().display()
    );
    run(tmux().args(["new-session", "-d", "-x", "220", "-y", "40", &script]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let screen = loop {
        let shown = run(tmux().args(["capture-pane", "-p"]));
        if shown.contains("DONE") || std::time::Instant::now() > deadline {
            break shown;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = tmux().arg("kill-server").output();
    assert!(screen.contains("DONE"), "{screen}");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    // full summary, reference, delta summary, reference, DONE: nothing else.
    assert_eq!(lines.len(), 5, "{screen}");
    assert!(
        lines[0].starts_with("full:") && lines[2].starts_with("delta 1:"),
        "{screen}"
    );
    assert!(
        lines[1].contains("/dev/app@sha256:") && lines[3].contains("/dev/app@sha256:"),
        "{screen}"
    );
    assert!(
        !screen.contains("sending") && !screen.contains("blobs"),
        "{screen}"
    );
}
