//! The only place that talks to Kubernetes (through kube-rs): the kubeconfig as kubectl reads
//! it, the context guard, and reading, patching and watching workloads, pods and events.

pub mod guard;
pub mod rollout;
pub mod workload;

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, WatchEvent,
    WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use crate::error::{Error, ExitCode, Result};
use crate::oci::platform::Platform;
use workload::{Kind, WorkloadRef};

/// Which cluster and namespace, as kubectl's `--context` and `-n`, and the contexts the user
/// allowed beyond local development clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub allow: Vec<String>,
}

/// A connection to a cluster that passed the guard.
pub struct Cluster {
    client: kube::Client,
    pub namespace: String,
    pub context: String,
    /// The API server's `host[:port]`, for messages.
    pub server: String,
    /// The context's credential plugin (`exec.command`), for messages.
    plugin: Option<String>,
}

/// How a command run in a container ended.
#[derive(Debug, Clone)]
pub struct Ran {
    pub code: i32,
    /// The first 64 KiB of each.
    pub stdout: String,
    pub stderr: String,
}

/// Tries of a read (or a patch) before a busy API server is an error: about 2 s of waiting.
const READ_TRIES: u32 = 4;

/// Whether a failed call may work if made again: the server busy, restarting, or the
/// connection broken — not a refusal, a missing object or a credential that failed.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => auth_error(e).is_none(),
        _ => false,
    }
}

/// A call made again while the API server is busy or restarting (429, 5xx, a broken
/// connection) — [`READ_TRIES`] in all, with the registry's backoff — as client-go does.
async fn retried<T, F>(what: &str, mut call: impl FnMut() -> F) -> kube::Result<T>
where
    F: std::future::Future<Output = kube::Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match call().await {
            Err(e) if tries < READ_TRIES && transient(&e) => {
                let wait = crate::retry::backoff(tries);
                tracing::info!(
                    "{what}: {}; again in {}",
                    crate::error::root_cause(&e),
                    crate::units::show_duration(wait)
                );
                tokio::time::sleep(wait).await;
            }
            done => return done,
        }
    }
}

/// A failed API call, before it is worded: 409 is the one callers act on.
pub enum Failure {
    Conflict,
    Other(Error),
}

/// A kubeconfig context the guard let through, not yet connected.
struct Loaded {
    context: String,
    config: kube::Config,
    server: String,
    plugin: Option<String>,
}

impl Cluster {
    /// Reads the kubeconfig (`KUBECONFIG`, else `~/.kube/config`), picks the context, and checks
    /// it with the guard — all before any request is sent.
    pub async fn connect(target: &Target) -> Result<Cluster> {
        let Loaded {
            context,
            mut config,
            server,
            plugin,
        } = load(target).await?;
        config.connect_timeout = Some(Duration::from_secs(10));
        // A watch is ended by the server within its timeoutSeconds (below this), so any answer
        // that takes longer is a stalled server.
        config.read_timeout = Some(Duration::from_secs(60));
        // kube's own retry waits up to 15 times, the last alone for minutes, past --timeout:
        // a server that keeps answering 503 held a deploy for 5½ minutes. Reads are tried
        // again here instead, a few times (`read`).
        config.default_retry = false;
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .map_err(|e| unusable(&context, &e, plugin.as_deref()))?;
        Ok(Cluster {
            client,
            namespace,
            context,
            server,
            plugin,
        })
    }
}

/// Checks, with no request sent, that the context `target` names may be used: the kubeconfig
/// reads, the context exists, and the guard lets it through. `push --deploy` and `watch
/// --deploy` ask this before pushing anything.
pub async fn check(target: &Target) -> Result<()> {
    load(target).await.map(|_| ())
}

/// A context that cannot be used: its credentials (exit 5), or anything else in it (exit 2).
fn unusable(context: &str, e: &(dyn std::error::Error + 'static), plugin: Option<&str>) -> Error {
    let code = if auth_error(e).is_some() {
        ExitCode::Auth
    } else {
        ExitCode::Usage
    };
    Error::new(
        code,
        format!(
            "cannot use kubeconfig context `{context}`: {}",
            describe(e, plugin)
        ),
    )
}

/// The kubeconfig's context, once the guard has let it through.
async fn load(target: &Target) -> Result<Loaded> {
    let kubeconfig = Kubeconfig::read().map_err(|e| {
        Error::usage(format!(
            "cannot read the kubeconfig (KUBECONFIG, else ~/.kube/config): {}",
            describe(&e, None)
        ))
    })?;
    let context = match target
        .context
        .clone()
        .or(kubeconfig.current_context.clone())
    {
        Some(c) => c,
        None => {
            return Err(Error::usage(
                "the kubeconfig has no current context; name one with --context",
            ))
        }
    };
    let Some(named) = kubeconfig.contexts.iter().find(|c| c.name == context) else {
        let known: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(Error::usage(format!(
            "the kubeconfig has no context `{context}` (it has: {})",
            known.join(", ")
        )));
    };
    let user = named.context.as_ref().and_then(|c| c.user.clone());
    let plugin = kubeconfig
        .auth_infos
        .iter()
        .find(|a| Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_ref()?.exec.as_ref()?.command.clone());
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| unusable(&context, &e, plugin.as_deref()))?;
    let server = config
        .cluster_url
        .authority()
        .map_or_else(|| config.cluster_url.to_string(), |a| a.to_string());
    guard::check(&context, &server, &target.allow).map_err(Error::usage)?;
    Ok(Loaded {
        context,
        config,
        server,
        plugin,
    })
}

impl Cluster {
    fn api(&self, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(group, "v1", kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    fn workloads(&self, kind: Kind) -> Api<DynamicObject> {
        self.api("apps", kind.kind(), kind.plural())
    }

    pub async fn get(&self, w: &WorkloadRef) -> Result<Value> {
        let what = format!("read {w}");
        let api = self.workloads(w.kind);
        let o = self.read(&what, Some(w), || api.get(&w.name)).await?;
        Ok(to_value(o))
    }

    pub async fn list(&self, kind: Kind) -> Result<Vec<Value>> {
        let what = format!("list {}", kind.plural());
        let api = self.workloads(kind);
        let params = ListParams::default();
        let list = self.read(&what, None, || api.list(&params)).await?;
        Ok(list.items.into_iter().map(to_value).collect())
    }

    /// A strategic-merge patch; the changed object, or [`Failure::Conflict`] when its
    /// `resourceVersion` precondition no longer holds.
    pub async fn patch(&self, w: &WorkloadRef, body: &Value) -> Result<Value, Failure> {
        let params = PatchParams {
            field_manager: Some("layerup".into()),
            ..Default::default()
        };
        let api = self.workloads(w.kind);
        let what = format!("patch {w}");
        // A patch made twice is the same change (and its resourceVersion precondition turns a
        // repeat after a lost answer into a 409, read again by the caller).
        let patch = Patch::Strategic(body);
        let done = retried(&what, || api.patch(&w.name, &params, &patch)).await;
        match done {
            Ok(o) => Ok(to_value(o)),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(Failure::Conflict),
            Err(e) => Err(Failure::Other(self.failure(&what, Some(w), e))),
        }
    }

    /// Changes to one workload after `resource_version`, ended by the server within 30 s.
    pub async fn watch(
        &self,
        w: &WorkloadRef,
        resource_version: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent<Value>>> + use<'_>> {
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", w.name))
            .timeout(30);
        let what = format!("watch {w}");
        let stream = self
            .workloads(w.kind)
            .watch(&params, resource_version)
            .await
            .map_err(|e| self.failure(&what, Some(w), e))?;
        let w = w.clone();
        Ok(stream.map(move |event| {
            event
                .map(|e| match e {
                    WatchEvent::Added(o) => WatchEvent::Added(to_value(o)),
                    WatchEvent::Modified(o) => WatchEvent::Modified(to_value(o)),
                    WatchEvent::Deleted(o) => WatchEvent::Deleted(to_value(o)),
                    WatchEvent::Bookmark(b) => WatchEvent::Bookmark(b),
                    WatchEvent::Error(s) => WatchEvent::Error(s),
                })
                .map_err(|e| self.failure(&format!("watch {w}"), Some(&w), e))
        }))
    }

    /// Runs `command` in `container` of `pod` (`pods/exec`), `input` on its stdin, and says how
    /// it ended. A refusal (RBAC) or a broken connection is an error; a command that fails is a
    /// [`Ran`] with its exit code.
    pub async fn exec(
        &self,
        pod: &str,
        container: &str,
        command: Vec<String>,
        input: &[u8],
    ) -> Result<Ran> {
        use k8s_openapi::api::core::v1::Pod;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = kube::api::AttachParams::default()
            .container(container)
            .stdin(true)
            .stdout(true)
            .stderr(true);
        let what = format!("run a command in container {container} of pod {pod}");
        let mut process = pods
            .exec(pod, command, &params)
            .await
            .map_err(|e| self.failure(&what, None, e))?;
        let (Some(mut stdin), Some(stdout), Some(stderr), Some(status)) = (
            process.stdin(),
            process.stdout(),
            process.stderr(),
            process.take_status(),
        ) else {
            return Err(Error::internal("an exec without its streams"));
        };
        let feed = async move {
            let _ = stdin.write_all(input).await;
            let _ = stdin.shutdown().await;
        };
        let read = |mut r: tokio::io::ReadHalf<tokio::io::SimplexStream>| async move {
            let mut out = Vec::new();
            let _ = (&mut r).take(64 << 10).read_to_end(&mut out).await;
            // What is past the limit is read and dropped, so the command is never blocked.
            let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
            String::from_utf8_lossy(&out).into_owned()
        };
        let ((), out, err, status) = tokio::join!(feed, read(stdout), read(stderr), status);
        let _ = process.join().await;
        let code = match status {
            Some(s) if s.status.as_deref() == Some("Success") => 0,
            Some(s) => s
                .details
                .and_then(|d| d.causes)
                .into_iter()
                .flatten()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message?.parse().ok())
                .unwrap_or(1),
            None => 1,
        };
        Ok(Ran {
            code,
            stdout: out,
            stderr: err,
        })
    }

    /// The platforms of the cluster's nodes (`status.nodeInfo`), each once, in node order.
    pub async fn node_platforms(&self) -> Result<Vec<Platform>> {
        let gvk = GroupVersionKind::gvk("", "v1", "Node");
        let nodes: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, "nodes"),
        );
        let params = ListParams::default();
        // Nodes belong to the cluster, not to a namespace.
        let place = format!("of context {}", self.context);
        let list = retried("list nodes", || nodes.list(&params))
            .await
            .map_err(|e| self.failure_at("read the cluster's nodes", &place, None, e))?;
        let mut out: Vec<Platform> = Vec::new();
        for node in list.items.into_iter().map(to_value) {
            let info = &node["status"]["nodeInfo"];
            let (Some(os), Some(arch)) = (
                info["operatingSystem"].as_str(),
                info["architecture"].as_str(),
            ) else {
                continue;
            };
            if let Ok(p) = format!("{os}/{arch}").parse::<Platform>() {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    pub async fn pods(&self, selector: &str) -> Result<Vec<Value>> {
        let api = self.api("", "Pod", "pods");
        let params = ListParams::default().labels(selector);
        let list = self.read("list pods", None, || api.list(&params)).await?;
        Ok(list.items.into_iter().map(to_value).collect())
    }

    pub async fn events(&self, pod: &str) -> Result<Vec<Value>> {
        let fields = format!("involvedObject.kind=Pod,involvedObject.name={pod}");
        let api = self.api("", "Event", "events");
        let params = ListParams::default().fields(&fields);
        let list = self.read("list events", None, || api.list(&params)).await?;
        Ok(list.items.into_iter().map(to_value).collect())
    }

    /// A read, [`retried`], its failure worded.
    async fn read<T, F>(
        &self,
        what: &str,
        w: Option<&WorkloadRef>,
        call: impl FnMut() -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = kube::Result<T>>,
    {
        retried(what, call)
            .await
            .map_err(|e| self.failure(what, w, e))
    }

    /// One line naming the action, the object, the context and the cluster's answer.
    fn failure(&self, what: &str, w: Option<&WorkloadRef>, e: kube::Error) -> Error {
        let place = format!(
            "in namespace {} of context {}",
            self.namespace, self.context
        );
        self.failure_at(what, &place, w, e)
    }

    /// [`Cluster::failure`] for an action at `place` (`in namespace …`, `of context …`).
    fn failure_at(
        &self,
        what: &str,
        place: &str,
        w: Option<&WorkloadRef>,
        e: kube::Error,
    ) -> Error {
        match e {
            kube::Error::Api(s) => {
                let code = match s.code {
                    401 | 403 => ExitCode::Auth,
                    404 => ExitCode::NotFound,
                    _ => ExitCode::Cluster,
                };
                let message = match (s.code, w) {
                    (404, Some(w)) => format!("there is no {w} {place}"),
                    _ => format!(
                        "cannot {what} {place}: the API server answered {} {}: {}",
                        s.code,
                        s.reason,
                        s.message.trim()
                    ),
                };
                Error::new(code, message).with_cause(ApiStatus {
                    code: s.code,
                    reason: s.reason.clone(),
                })
            }
            e if auth_error(&e).is_some() => Error::auth(format!(
                "cannot get credentials for context {}: {}",
                self.context,
                describe(&e, self.plugin.as_deref())
            )),
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => Error::new(
                ExitCode::Unreachable,
                format!(
                    "cannot {what}: the API server {} of context {} could not be reached: {}",
                    self.server,
                    self.context,
                    crate::error::root_cause(&e)
                ),
            ),
            e => Error::new(
                ExitCode::Cluster,
                format!(
                    "cannot {what} {place}: {}",
                    describe(&e, self.plugin.as_deref())
                ),
            ),
        }
    }
}

/// The API server's status when it refused a request (`Status.code`, `Status.reason`: `NotFound`,
/// `Forbidden`, `Conflict`), kept as the cause of the error that words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiStatus {
    pub code: u16,
    pub reason: String,
}

impl std::fmt::Display for ApiStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the API server answered {} {}", self.code, self.reason)
    }
}

impl std::error::Error for ApiStatus {}

fn to_value(o: DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// The credential error in an error's chain, if it holds one.
fn auth_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a kube::client::AuthError> {
    crate::error::sources(e).find_map(|c| match c.downcast_ref::<kube::Error>() {
        Some(kube::Error::Auth(a)) => Some(a),
        _ => c.downcast_ref::<kube::client::AuthError>(),
    })
}

/// An error in one line. A credential plugin's failure is said as which plugin failed and its
/// exit status, never what it printed: kube's own wording quotes the plugin's whole output,
/// which can hold the token it was about to hand over.
fn describe(e: &(dyn std::error::Error + 'static), plugin: Option<&str>) -> String {
    use kube::client::AuthError as A;
    let plugin = plugin.map_or_else(
        || "the credential plugin".to_string(),
        |p| format!("the credential plugin `{p}`"),
    );
    match auth_error(e) {
        Some(A::AuthExecRun { out, .. }) => format!("{plugin} failed ({})", out.status),
        Some(A::AuthExecStart(io)) => {
            format!("{plugin} could not start: {}", crate::error::os_reason(io))
        }
        Some(A::AuthExecParse(_)) => format!("{plugin} printed no ExecCredential"),
        Some(A::ExecPluginFailed) => format!("{plugin} answered without a status"),
        Some(A::AuthExec(_)) => format!("{plugin} could not be run"),
        Some(A::ReadTokenFile(io, path)) => format!(
            "cannot read the token file `{}`: {}",
            path.display(),
            crate::error::os_reason(io)
        ),
        Some(other) => format!(
            "the kubeconfig's credentials cannot be used ({})",
            kind_of(other)
        ),
        None => chain(e),
    }
}

/// What is wrong with the kubeconfig's credentials, in words, without the error's payload
/// (which may hold a token or a plugin's output).
fn kind_of(e: &kube::client::AuthError) -> &'static str {
    use kube::client::AuthError as A;
    match e {
        A::InvalidBasicAuth(_) => "a username or password that cannot be sent in a header",
        A::InvalidBearerToken(_) => "a token that cannot be sent in a header",
        A::UnrefreshableTokenResponse => "a token that cannot be refreshed",
        A::ExecPluginFailed => "a credential plugin that answered without a status",
        A::MalformedTokenExpirationDate(_) => "a token whose expiry date cannot be read",
        A::AuthExecStart(_) => "a credential plugin that could not start",
        A::AuthExecRun { .. } => "a credential plugin that failed",
        A::AuthExecParse(_) => "a credential plugin that printed no ExecCredential",
        A::AuthExecSerialize(_) => "a credential plugin's input that cannot be written",
        A::AuthExec(_) => "a credential plugin that could not be run",
        A::ReadTokenFile(..) => "a token file that cannot be read",
        A::ParseTokenKey(_) => "a token that cannot be read",
        A::MissingCommand => "an exec section without a command",
        A::ExecMissingClusterInfo => "a plugin that asks for cluster information it was not given",
        A::NoValidNativeRootCA(_) => "no usable root certificates on this machine",
    }
}

/// An error and its causes in one line, without repeating a cause the message already holds.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    for s in crate::error::sources(e).skip(1) {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
    }
    text
}
