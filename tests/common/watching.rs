//! A running `layerup watch`, its output collected line by line as it comes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A running `layerup watch -v`, its stdout and stderr collected line by line.
pub struct Watching {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    _state: tempfile::TempDir,
}

impl Watching {
    pub fn start(tree: &std::path::Path, to: &str) -> Self {
        Self::start_with(tree, to, &[], None)
    }

    pub fn start_with(
        tree: &std::path::Path,
        to: &str,
        extra: &[&str],
        kubeconfig: Option<&std::path::Path>,
    ) -> Self {
        let state = tempfile::tempdir().unwrap();
        let mut layerup = Layerup::new()
            .env("LAYERUP_STATE_DIR", state.path())
            .args(["watch", "-v", "--debounce", "300"])
            .args(push_args(tree, &prod().oci, to).into_iter().skip(1))
            .args(["--squash-at", "100000%"])
            .args(extra);
        if let Some(k) = kubeconfig {
            layerup = layerup.env("KUBECONFIG", k);
        }
        Self::of(layerup, state)
    }

    /// A watch as `layerup` is set up to run it (`state` kept for as long as it runs).
    pub fn of(mut layerup: Layerup, state: tempfile::TempDir) -> Self {
        let mut child = layerup
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    sink.lock().unwrap().push(line.unwrap());
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Watching {
            child,
            stdout,
            stderr,
            _state: state,
        }
    }

    pub fn pushes(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until `done` holds, failing with the log after a minute.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "never saw {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C: watching ends cleanly.
    pub fn stop(mut self) -> String {
        run(std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{}", self.log());
        self.log()
    }
}

/// A watch whose test failed before stopping it does not outlive the test.
impl Drop for Watching {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
