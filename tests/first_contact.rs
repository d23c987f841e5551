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
