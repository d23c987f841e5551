//! Pure: how far a rollout has come, read from the workload's status as `kubectl rollout
//! status` reads it, and why it cannot finish, read from its pods and their events.

use serde_json::Value;

use super::workload::Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not there yet; what is still awaited.
    Waiting(String),
    Done,
    /// It will not finish by itself.
    Failed(String),
    /// The update strategy leaves it to someone else (`OnDelete`): nothing to wait for.
    Manual(String),
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The rules of kubectl's rollout status viewers (`polymorphichelpers/rollout_status.go`), per
/// kind.
pub fn progress(kind: Kind, obj: &Value) -> Progress {
    let generation = int(&obj["metadata"]["generation"]);
    let spec = &obj["spec"];
    let st = &obj["status"];
    let observed = int(&st["observedGeneration"]);
    let want = spec["replicas"].as_i64().unwrap_or(1);
    let unobserved = || Progress::Waiting("waiting for the controller to see the change".into());
    if kind != Kind::Deployment && spec["updateStrategy"]["type"] == "OnDelete" {
        return Progress::Manual(
            "its update strategy is OnDelete: pods take the new image only when deleted".into(),
        );
    }
    match kind {
        Kind::Deployment => {
            if generation > observed {
                return unobserved();
            }
            let deadline =
                st["conditions"].as_array().into_iter().flatten().any(|c| {
                    c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded"
                });
            if deadline {
                return Progress::Failed(format!(
                    "it exceeded its progress deadline ({}s)",
                    spec["progressDeadlineSeconds"].as_i64().unwrap_or(600)
                ));
            }
            let (updated, replicas) = (int(&st["updatedReplicas"]), int(&st["replicas"]));
            let available = int(&st["availableReplicas"]);
            if updated < want {
                Progress::Waiting(format!("{updated} of {want} new replicas updated"))
            } else if replicas > updated {
                Progress::Waiting(format!(
                    "{} old replicas pending termination",
                    replicas - updated
                ))
            } else if available < updated {
                Progress::Waiting(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                Progress::Done
            }
        }
        Kind::StatefulSet => {
            if observed == 0 || generation > observed {
                return unobserved();
            }
            let ready = int(&st["readyReplicas"]);
            if ready < want {
                return Progress::Waiting(format!("{ready} of {want} pods ready"));
            }
            let partition = int(&spec["updateStrategy"]["rollingUpdate"]["partition"]);
            let updated = int(&st["updatedReplicas"]);
            if partition > 0 {
                return if updated < want - partition {
                    Progress::Waiting(format!(
                        "{updated} of {} pods updated (partition {partition})",
                        want - partition
                    ))
                } else {
                    Progress::Done
                };
            }
            if st["updateRevision"] != st["currentRevision"] {
                return Progress::Waiting(format!("{updated} of {want} pods updated"));
            }
            Progress::Done
        }
        Kind::DaemonSet => {
            if generation > observed {
                return unobserved();
            }
            let desired = int(&st["desiredNumberScheduled"]);
            let updated = int(&st["updatedNumberScheduled"]);
            let available = int(&st["numberAvailable"]);
            if updated < desired {
                Progress::Waiting(format!("{updated} of {desired} updated pods scheduled"))
            } else if available < desired {
                Progress::Waiting(format!("{available} of {desired} updated pods available"))
            } else {
                Progress::Done
            }
        }
    }
}

/// Why a pod that runs the new image cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    pub pod: String,
    pub container: String,
    /// The kubelet's waiting reason: `ImagePullBackOff`, `CrashLoopBackOff`, …
    pub reason: String,
    pub message: String,
}

/// Waiting reasons that do not clear up by waiting: the kubelet is backing off, or the pod spec
/// cannot run. (`ContainerCreating` and `PodInitializing` are normal and not here.)
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The trouble of a pod whose `container` runs `image`, if it has any. Pods still running
/// another image (the old ones) are not this rollout's business.
pub fn trouble(pod: &Value, container: &str, image: &str) -> Option<Trouble> {
    let spec = &pod["spec"];
    let runs = ["containers", "initContainers"].iter().any(|f| {
        spec[f]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == container && c["image"] == image)
    });
    if !runs {
        return None;
    }
    let st = &pod["status"];
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|f| st[f].as_array().into_iter().flatten())
        .filter(|s| s["name"] == container)
        .find_map(|s| {
            let waiting = &s["state"]["waiting"];
            let reason = waiting["reason"].as_str()?;
            STUCK.contains(&reason).then(|| Trouble {
                pod: pod["metadata"]["name"].as_str().unwrap_or("?").to_string(),
                container: container.to_string(),
                reason: reason.to_string(),
                message: waiting["message"].as_str().unwrap_or("").to_string(),
            })
        })
}

/// Whether a pod's trouble is an image built for another platform than its node's: the pull
/// finds no matching manifest (containerd), or the binary cannot run (`exec format error`).
pub fn wrong_platform(why: &str) -> bool {
    let w = why.to_lowercase();
    w.contains("no match for platform") || w.contains("exec format error")
}

/// The newest Warning event that says more than the waiting reason, as `Reason: message`. The
/// kubelet follows each real cause ("Failed to pull image …: not found") with an echo of the
/// state ("Error: ImagePullBackOff"), which would hide it.
pub fn latest_warning(events: &[Value]) -> Option<String> {
    let echo = |m: &str| {
        m.trim()
            .strip_prefix("Error: ")
            .is_some_and(|rest| !rest.contains(char::is_whitespace))
    };
    events
        .iter()
        .filter(|e| e["type"] == "Warning" && !echo(e["message"].as_str().unwrap_or("")))
        .max_by_key(|e| {
            let t = |f: &str| e[f].as_str().unwrap_or("").to_string();
            // RFC 3339 in UTC sorts as text; events.k8s.io's eventTime where the old one is unset.
            let last = t("lastTimestamp");
            if last.is_empty() {
                t("eventTime")
            } else {
                last
            }
        })
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or("Warning"),
                e["message"].as_str().unwrap_or("").trim()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"metadata": {"generation": generation}, "spec": {"replicas": 2}, "status": status})
    }

    #[rstest]
    #[case(json!({"observedGeneration": 1}), "waiting for the controller")]
    #[case(json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1}), "1 of 2 new replicas updated")]
    #[case(json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2}), "1 old replicas pending termination")]
    #[case(json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}), "1 of 2 updated replicas available")]
    fn a_deployment_waits_as_kubectl_does(#[case] status: Value, #[case] what: &str) {
        match progress(Kind::Deployment, &deployment(2, status)) {
            Progress::Waiting(w) => assert!(w.contains(what), "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deployment_is_done_and_a_missed_deadline_fails() {
        let done = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert_eq!(
            progress(Kind::Deployment, &deployment(2, done)),
            Progress::Done
        );
        let stuck = json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]});
        assert!(matches!(
            progress(Kind::Deployment, &deployment(2, stuck)),
            Progress::Failed(_)
        ));
    }

    #[test]
    fn a_statefulset_waits_for_its_revision() {
        let sts = |cur: &str| {
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 1,
                              "currentRevision": cur, "updateRevision": "web-2"}})
        };
        assert!(matches!(
            progress(Kind::StatefulSet, &sts("web-1")),
            Progress::Waiting(_)
        ));
        assert_eq!(progress(Kind::StatefulSet, &sts("web-2")), Progress::Done);
    }

    #[test]
    fn on_delete_is_not_waited_for() {
        let ds = json!({"metadata": {"generation": 2}, "spec": {"updateStrategy": {"type": "OnDelete"}}});
        assert!(matches!(
            progress(Kind::DaemonSet, &ds),
            Progress::Manual(_)
        ));
    }

    fn pod(image: &str, waiting: &str) -> Value {
        json!({"metadata": {"name": "app-1"},
               "spec": {"containers": [{"name": "app", "image": image}]},
               "status": {"containerStatuses": [{"name": "app",
                   "state": {"waiting": {"reason": waiting, "message": "Back-off pulling image"}}}]}})
    }

    #[test]
    fn a_pod_of_the_new_image_backing_off_is_trouble() {
        let t = trouble(
            &pod("dev/app@sha256:1", "ImagePullBackOff"),
            "app",
            "dev/app@sha256:1",
        );
        assert_eq!(t.unwrap().reason, "ImagePullBackOff");
        // The same state on an old pod, or a normal wait, is not.
        assert_eq!(
            trouble(
                &pod("prod/app:1", "ImagePullBackOff"),
                "app",
                "dev/app@sha256:1"
            ),
            None
        );
        assert_eq!(
            trouble(
                &pod("dev/app@sha256:1", "ContainerCreating"),
                "app",
                "dev/app@sha256:1"
            ),
            None
        );
    }

    #[test]
    fn the_newest_warning_is_the_one_told() {
        let events = [
            json!({"type": "Warning", "reason": "Failed", "message": "old", "lastTimestamp": "2026-01-01T00:00:01Z"}),
            json!({"type": "Normal", "reason": "Pulling", "message": "x", "lastTimestamp": "2026-01-01T00:00:09Z"}),
            json!({"type": "Warning", "reason": "Failed", "message": "new\n", "lastTimestamp": "2026-01-01T00:00:05Z"}),
            json!({"type": "Warning", "reason": "Failed", "message": "Error: ImagePullBackOff", "lastTimestamp": "2026-01-01T00:00:07Z"}),
        ];
        assert_eq!(latest_warning(&events).as_deref(), Some("Failed: new"));
    }
}
