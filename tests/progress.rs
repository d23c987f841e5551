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
        seen.contains("blobs ") && seen.contains(" sent ("),
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
