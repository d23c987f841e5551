//! Pure: workloads as the Kubernetes API returns them — kinds, names, pod-template containers —
//! which container an image belongs in, and the patch that sets it while recording what it
//! replaced (for `rollback`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The workloads layerup patches: those whose pods come from a pod template (apps/v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Deployment, Kind::StatefulSet, Kind::DaemonSet];

    /// kubectl's names for the kind: singular, plural, short, and `.apps`-qualified.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        let s = s.strip_suffix(".apps").unwrap_or(&s);
        match s {
            "deployment" | "deployments" | "deploy" => Some(Kind::Deployment),
            "statefulset" | "statefulsets" | "sts" => Some(Kind::StatefulSet),
            "daemonset" | "daemonsets" | "ds" => Some(Kind::DaemonSet),
            _ => None,
        }
    }

    /// The API's `kind` field.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
        }
    }

    /// The resource name in API paths (`/apis/apps/v1/namespaces/NS/deployments`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
        }
    }

    /// How kubectl and layerup's messages name it (`deployment/app`).
    pub fn word(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
        }
    }
}

/// `KIND/NAME`, as kubectl writes it: `deployment/app`, `sts/db`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadRef {
    pub kind: Kind,
    pub name: String,
}

impl WorkloadRef {
    pub fn parse(s: &str) -> Result<WorkloadRef, String> {
        let Some((kind, name)) = s.split_once('/') else {
            return Err(format!(
                "`{s}` is not KIND/NAME (write deployment/{s}, statefulset/{s} or daemonset/{s})"
            ));
        };
        let kind = Kind::parse(kind).ok_or_else(|| {
            format!("`{kind}` is not a kind layerup patches (deployment, statefulset, daemonset)")
        })?;
        if !is_object_name(name) {
            return Err(format!(
                "`{name}` is not a Kubernetes object name (lowercase letters, digits, `-` and `.`)"
            ));
        }
        Ok(WorkloadRef {
            kind,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.word(), self.name)
    }
}

/// A DNS subdomain (RFC 1123), the rule for these objects' names.
fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// One container of a pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image: String,
    /// An init container (`initContainers`).
    pub init: bool,
}

/// What layerup reads of a workload object.
#[derive(Debug, Clone)]
pub struct Workload {
    pub id: WorkloadRef,
    pub resource_version: String,
    pub containers: Vec<Container>,
    /// layerup's annotation, as found (empty when absent or unreadable).
    pub record: Record,
    /// `spec.selector` as a label selector (`app=web,tier in (front,edge)`); `None` when empty
    /// or unreadable.
    pub selector: Option<String>,
}

/// A `LabelSelector` object as the `labelSelector` text the API reads: `matchLabels` as
/// `k=v`, `matchExpressions` as `k in (a,b)`, `k notin (a,b)`, `k`, `!k` — all of them ANDed.
/// `None` for an empty selector or an operator this does not know.
fn label_selector(sel: &Value) -> Option<String> {
    let mut terms = Vec::new();
    for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
        terms.push(format!("{k}={}", v.as_str()?));
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str()?;
        let values = || -> Option<String> {
            let all = e["values"].as_array()?;
            let texts: Option<Vec<&str>> = all.iter().map(Value::as_str).collect();
            Some(texts?.join(","))
        };
        terms.push(match e["operator"].as_str()? {
            "In" => format!("{key} in ({})", values()?),
            "NotIn" => format!("{key} notin ({})", values()?),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

impl Workload {
    pub fn from_object(kind: Kind, obj: &Value) -> Result<Workload, String> {
        let meta = &obj["metadata"];
        let name = meta["name"]
            .as_str()
            .ok_or("an object without metadata.name")?;
        let id = WorkloadRef {
            kind,
            name: name.to_string(),
        };
        let pod = &obj["spec"]["template"]["spec"];
        let mut containers = Vec::new();
        for (field, init) in [("initContainers", true), ("containers", false)] {
            for c in pod[field].as_array().into_iter().flatten() {
                let (Some(name), image) = (c["name"].as_str(), c["image"].as_str()) else {
                    return Err(format!("{id}: a container in {field} has no name"));
                };
                containers.push(Container {
                    name: name.to_string(),
                    image: image.unwrap_or_default().to_string(),
                    init,
                });
            }
        }
        let record = meta["annotations"][ANNOTATION]
            .as_str()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let selector = label_selector(&obj["spec"]["selector"]);
        Ok(Workload {
            id,
            resource_version: meta["resourceVersion"].as_str().unwrap_or("").to_string(),
            containers,
            record,
            selector,
        })
    }

    pub fn container(&self, name: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// `app (nginx:1.25), sidecar (envoy:1.30)`, for messages that list the choices.
    pub fn describe_containers(&self) -> String {
        let all: Vec<String> = self
            .containers
            .iter()
            .map(|c| {
                let init = if c.init { "init container " } else { "" };
                format!("{init}{} ({})", c.name, c.image)
            })
            .collect();
        all.join(", ")
    }

    /// Which container the image goes in. `--container` names it; else the one container whose
    /// image `matches` (the base or destination repository); else, in a workload named on the
    /// command line, its only container. `Ok(None)`: nothing matches (only possible when
    /// `named` is false: a workload found by search that does not run the image).
    pub fn choose(
        &self,
        container: Option<&str>,
        matches: impl Fn(&str) -> bool,
        named: bool,
    ) -> Result<Option<&Container>, String> {
        if let Some(want) = container {
            return match self.container(want) {
                Some(c) if named || matches(&c.image) => Ok(Some(c)),
                Some(_) => Ok(None),
                None if !named => Ok(None),
                None => Err(format!(
                    "{} has no container `{want}`; it has {}",
                    self.id,
                    self.describe_containers()
                )),
            };
        }
        let hits: Vec<&Container> = self
            .containers
            .iter()
            .filter(|c| matches(&c.image))
            .collect();
        match hits.as_slice() {
            [one] => Ok(Some(one)),
            [] if named => {
                let plain: Vec<&Container> = self.containers.iter().filter(|c| !c.init).collect();
                match plain.as_slice() {
                    [one] => Ok(Some(one)),
                    _ => Err(format!(
                        "{} runs none of the images' repositories; name the container with \
                         --container (it has {})",
                        self.id,
                        self.describe_containers()
                    )),
                }
            }
            [] => Ok(None),
            _ => Err(format!(
                "{} has several containers that run the image: {}; name one with --container",
                self.id,
                hits.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The annotation where layerup records, per container, what it set and what that replaced.
pub const ANNOTATION: &str = "layerup.dev/images";

/// Per container name.
pub type Record = BTreeMap<String, Entry>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The image layerup wrote last.
    pub image: String,
    /// The image that write replaced: what `rollback` restores.
    pub previous: String,
    /// What ran before layerup's first write in a row of them: what `rollback --original`
    /// restores.
    pub original: String,
}

/// The record after setting `container` from `current` to `new`. A row of layerup's writes
/// keeps its `original`; an image someone else set in between starts a new row.
pub fn next_entry(record: &Record, container: &str, current: &str, new: &str) -> Entry {
    let original = match record.get(container) {
        Some(e) if e.image == current => e.original.clone(),
        _ => current.to_string(),
    };
    Entry {
        image: new.to_string(),
        previous: current.to_string(),
        original,
    }
}

/// The strategic-merge patch (the API's `application/strategic-merge-patch+json`) that sets the
/// given containers' images and layerup's annotation, and nothing else.
///
/// Containers and init containers are lists merged by `name` (their `patchMergeKey`), so
/// naming one container leaves its siblings and its own other fields as they are. The
/// `resourceVersion` makes the write conditional: if the object changed since it was read
/// (someone else set the image, say), the API answers 409 and layerup reads it again, so the
/// recorded previous image is always the one really replaced.
pub fn patch(w: &Workload, set: &[(&Container, &str)], record: &Record) -> Value {
    let list = |init: bool| -> Vec<Value> {
        set.iter()
            .filter(|(c, _)| c.init == init)
            .map(|(c, image)| json!({"name": c.name, "image": image}))
            .collect()
    };
    let mut pod = serde_json::Map::new();
    for (field, init) in [("initContainers", true), ("containers", false)] {
        let items = list(init);
        if !items.is_empty() {
            pod.insert(field.to_string(), Value::Array(items));
        }
    }
    json!({
        "metadata": {
            "resourceVersion": w.resource_version,
            "annotations": {
                ANNOTATION: serde_json::to_string(record).expect("a map of strings serialises"),
            },
        },
        "spec": {"template": {"spec": pod}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::labels(json!({"matchLabels": {"app": "web", "tier": "front"}}), Some("app=web,tier=front"))]
    #[case::expressions(
        json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            {"key": "track", "operator": "NotIn", "values": ["canary"]},
            {"key": "team", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"}]}),
        Some("app=web,tier in (front,edge),track notin (canary),team,!legacy")
    )]
    #[case::empty(json!({}), None)]
    #[case::unknown_operator(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}), None)]
    fn a_selector_is_the_label_selector_text_the_api_reads(
        #[case] sel: Value,
        #[case] want: Option<&str>,
    ) {
        assert_eq!(label_selector(&sel).as_deref(), want);
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "team-a", "resourceVersion": "41"},
            "spec": {
                "selector": {"matchLabels": {"app": "web", "tier": "front"}},
                "template": {"spec": {
                    "initContainers": [{"name": "migrate", "image": "registry.example.com/prod/app:1.0"}],
                    "containers": [
                        {"name": "app", "image": "registry.example.com/prod/app:1.0", "env": [{"name": "A", "value": "1"}]},
                        {"name": "proxy", "image": "envoyproxy/envoy:v1.30"}
                    ]
                }}
            }
        })
    }

    #[rstest]
    #[case("deployment/app", Kind::Deployment)]
    #[case("deploy/app", Kind::Deployment)]
    #[case("deployments.apps/app", Kind::Deployment)]
    #[case("sts/app", Kind::StatefulSet)]
    #[case("DaemonSet/app", Kind::DaemonSet)]
    fn workload_refs_take_kubectl_kind_names(#[case] text: &str, #[case] kind: Kind) {
        assert_eq!(WorkloadRef::parse(text).unwrap().kind, kind);
    }

    #[rstest]
    #[case("app", "is not KIND/NAME")]
    #[case("pod/app", "not a kind layerup patches")]
    #[case("deployment/App", "not a Kubernetes object name")]
    #[case("deployment/", "not a Kubernetes object name")]
    fn bad_workload_refs_say_why(#[case] text: &str, #[case] why: &str) {
        let err = WorkloadRef::parse(text).unwrap_err();
        assert!(err.contains(why), "{err}");
    }

    #[test]
    fn reads_containers_init_first_and_the_selector() {
        let w = Workload::from_object(Kind::Deployment, &deployment()).unwrap();
        let names: Vec<(&str, bool)> = w
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.init))
            .collect();
        assert_eq!(names, [("migrate", true), ("app", false), ("proxy", false)]);
        assert_eq!(w.selector.as_deref(), Some("app=web,tier=front"));
        assert_eq!(w.resource_version, "41");
    }

    fn prod(image: &str) -> bool {
        image.starts_with("registry.example.com/prod/app")
    }

    #[test]
    fn two_matching_containers_are_ambiguous_without_container() {
        let w = Workload::from_object(Kind::Deployment, &deployment()).unwrap();
        let err = w.choose(None, prod, true).unwrap_err();
        assert!(
            err.contains("migrate, app") && err.contains("--container"),
            "{err}"
        );
        let c = w.choose(Some("migrate"), prod, true).unwrap().unwrap();
        assert!(c.init);
    }

    #[test]
    fn a_named_workload_with_one_container_takes_the_image_whatever_it_ran() {
        let mut obj = deployment();
        obj["spec"]["template"]["spec"] =
            json!({"containers": [{"name": "x", "image": "busybox"}]});
        let w = Workload::from_object(Kind::Deployment, &obj).unwrap();
        assert_eq!(w.choose(None, prod, true).unwrap().unwrap().name, "x");
        assert_eq!(w.choose(None, prod, false).unwrap(), None);
    }

    #[test]
    fn a_missing_container_lists_the_ones_there() {
        let w = Workload::from_object(Kind::Deployment, &deployment()).unwrap();
        let err = w.choose(Some("web"), prod, true).unwrap_err();
        assert!(
            err.contains("init container migrate (registry.example.com/prod/app:1.0)")
                && err.contains("proxy (envoyproxy/envoy:v1.30)"),
            "{err}"
        );
    }

    #[test]
    fn the_patch_names_only_the_chosen_container_and_is_conditional() {
        let w = Workload::from_object(Kind::Deployment, &deployment()).unwrap();
        let app = w.container("app").unwrap();
        let mut record = Record::new();
        let entry = next_entry(&record, "app", &app.image, "dev/app@sha256:1");
        record.insert("app".into(), entry);
        let p = patch(&w, &[(app, "dev/app@sha256:1")], &record);
        assert_eq!(
            p["spec"],
            json!({"template": {"spec": {"containers": [{"name": "app", "image": "dev/app@sha256:1"}]}}})
        );
        assert_eq!(p["metadata"]["resourceVersion"], "41");
        let saved: Record =
            serde_json::from_str(p["metadata"]["annotations"][ANNOTATION].as_str().unwrap())
                .unwrap();
        assert_eq!(saved["app"].previous, "registry.example.com/prod/app:1.0");
    }

    #[test]
    fn a_row_of_writes_keeps_the_original_and_an_outside_change_starts_a_new_row() {
        let mut r = Record::new();
        r.insert("app".into(), next_entry(&r, "app", "prod:1", "dev@1"));
        r.insert("app".into(), next_entry(&r, "app", "dev@1", "dev@2"));
        assert_eq!(
            r["app"],
            Entry {
                image: "dev@2".into(),
                previous: "dev@1".into(),
                original: "prod:1".into()
            }
        );
        // Someone ran `kubectl set image` in between.
        let e = next_entry(&r, "app", "prod:2", "dev@3");
        assert_eq!(
            (e.previous.as_str(), e.original.as_str()),
            ("prod:2", "prod:2")
        );
    }
}
