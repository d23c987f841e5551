//! Why live update does what it does, as types with stable codes (as a full push's
//! `FullReason`): why an edit is rolled out rather than synced ([`Fallback`]), and why the
//! workloads' template takes the newest image now ([`CatchUp`]). Their text is what stderr says;
//! their `code()` is what `--json` carries (docs/json.md).

use std::time::Duration;

use crate::build::stack::FullReason;

/// Why an edit is not synced into the running containers but rolled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// A full push: the delta does not say what the image holds.
    FullPush(FullReason),
    /// There was no last push to compare with (none is a delta on what the pods run).
    NotADelta,
    /// The per-platform files changed: the image holds more than the delta says.
    PlatformFiles,
    /// The delta layer cannot be read back.
    DeltaUnreadable(String),
    /// An edited path matches `--restart-on`.
    RestartOn {
        path: String,
        glob: String,
    },
    /// The cluster, a workload or its pods cannot be read.
    Unreachable(String),
    /// The deployed workloads have no pod.
    NoPods,
    /// A pod runs another image than the one last deployed.
    Drifted {
        pod: String,
        runs: String,
        deployed: String,
    },
    NotReady {
        pod: String,
        container: String,
    },
    /// The edit deletes too many paths to name in one exec.
    TooManyRemovals {
        bytes: usize,
    },
    /// The exec was refused (RBAC), or could not be served.
    ExecRefused(String),
    ExecFailed(String),
    /// The sync did not end within the time one exec may take.
    Timeout {
        pod: String,
        secs: u64,
    },
    /// The container has no `sh` or `tar`.
    NoShell {
        pod: String,
        said: String,
    },
    ReadOnly {
        pod: String,
        said: String,
    },
    PermissionDenied {
        pod: String,
        said: String,
    },
    /// The sync ran and failed otherwise.
    Failed {
        pod: String,
        code: i32,
        said: String,
    },
}

impl Fallback {
    /// A stable code for `--json` (docs/json.md).
    pub fn code(&self) -> &'static str {
        match self {
            Fallback::FullPush(_) => "full_push",
            Fallback::NotADelta => "not_a_delta",
            Fallback::PlatformFiles => "platform_files",
            Fallback::DeltaUnreadable(_) => "delta_unreadable",
            Fallback::RestartOn { .. } => "restart_on",
            Fallback::Unreachable(_) => "cluster_unreadable",
            Fallback::NoPods => "no_pods",
            Fallback::Drifted { .. } => "pod_drifted",
            Fallback::NotReady { .. } => "not_ready",
            Fallback::TooManyRemovals { .. } => "too_many_removals",
            Fallback::ExecRefused(_) => "exec_refused",
            Fallback::ExecFailed(_) => "exec_failed",
            Fallback::Timeout { .. } => "timeout",
            Fallback::NoShell { .. } => "no_shell",
            Fallback::ReadOnly { .. } => "read_only",
            Fallback::PermissionDenied { .. } => "permission_denied",
            Fallback::Failed { .. } => "sync_failed",
        }
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::FullPush(reason) => write!(f, "full push: {reason}"),
            Fallback::NotADelta => f.write_str("the push is not a delta on the image the pods run"),
            Fallback::PlatformFiles => {
                f.write_str("the files of a per-platform mapping ({os}/{arch} in SRC) changed")
            }
            Fallback::DeltaUnreadable(e) => write!(f, "the delta cannot be read: {e}"),
            Fallback::RestartOn { path, glob } => {
                write!(f, "{path} matches --restart-on `{glob}`")
            }
            Fallback::Unreachable(why) => f.write_str(why),
            Fallback::NoPods => f.write_str("the deployed workloads have no pod"),
            Fallback::Drifted {
                pod,
                runs,
                deployed,
            } => write!(
                f,
                "pod {pod} runs {runs}, not the last image deployed ({deployed})"
            ),
            Fallback::NotReady { pod, container } => {
                write!(f, "container {container} of pod {pod} is not ready")
            }
            Fallback::TooManyRemovals { bytes } => write!(
                f,
                "the edit removes too many paths to name in one exec ({bytes} bytes of script)"
            ),
            Fallback::ExecRefused(e) => write!(f, "exec refused: {e}"),
            Fallback::ExecFailed(e) => write!(f, "exec failed: {e}"),
            Fallback::Timeout { pod, secs } => {
                write!(f, "the sync did not end in {secs}s in pod {pod}")
            }
            Fallback::NoShell { pod, said } => {
                write!(f, "the container of pod {pod} has no sh or tar ({said})")
            }
            Fallback::ReadOnly { pod, said } => {
                write!(f, "a path is read-only in pod {pod}: {said}")
            }
            Fallback::PermissionDenied { pod, said } => {
                write!(f, "permission denied in pod {pod}: {said}")
            }
            Fallback::Failed { pod, code, said } => {
                write!(f, "the sync failed in pod {pod} (exit {code}): {said}")
            }
        }
    }
}

/// Why the workloads' template takes the newest image synced now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// Edits have been still for `--settle`.
    Settled(Duration),
    /// The watch is ending (its first Ctrl-C).
    Ending,
    PodGone {
        pod: String,
    },
    /// A synced container restarted: it runs its image without the synced files.
    Restarted {
        pod: String,
        container: String,
    },
    /// A pod started from the template, without the synced edits.
    NewPod {
        pod: String,
    },
    /// The synced containers cannot be looked at.
    Unobservable(Fallback),
}

impl CatchUp {
    /// A stable code for `--json` (docs/json.md).
    pub fn code(&self) -> &'static str {
        match self {
            CatchUp::Settled(_) => "settled",
            CatchUp::Ending => "watch_ending",
            CatchUp::PodGone { .. } => "pod_gone",
            CatchUp::Restarted { .. } => "container_restarted",
            CatchUp::NewPod { .. } => "new_pod",
            CatchUp::Unobservable(_) => "unobservable",
        }
    }
}

impl std::fmt::Display for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatchUp::Settled(still) => {
                write!(f, "no edit for {}", crate::units::show_duration(*still))
            }
            CatchUp::Ending => f.write_str("the watch is ending"),
            CatchUp::PodGone { pod } => write!(f, "pod {pod} is gone"),
            CatchUp::Restarted { pod, container } => {
                write!(f, "container {container} of pod {pod} restarted")
            }
            CatchUp::NewPod { pod } => write!(f, "pod {pod} started without the synced edits"),
            CatchUp::Unobservable(why) => write!(f, "{why}"),
        }
    }
}
