//! Pure: which kubeconfig contexts layerup may change or even contact — local development
//! clusters by the names their tools give them, and the contexts the user allowed — decided
//! before any request is sent. An API server on loopback is no evidence: an `ssh -L` tunnel,
//! `kubectl proxy` or a bastion to production looks exactly like that.

/// Context names of local development clusters, as their tools create them (Tilt's
/// `allow_k8s_contexts` starts from the same list).
const LOCAL: &[&str] = &[
    "minikube",
    "docker-desktop",
    "docker-for-desktop",
    "rancher-desktop",
    "orbstack",
    "microk8s",
    "colima",
];
const LOCAL_PREFIXES: &[&str] = &["kind-", "k3d-"];

/// Whether a context is one layerup may use; the refusal names the ways to allow it.
/// `server` is the API server's `host[:port]`, for the message.
pub fn check(context: &str, server: &str, allowed: &[String]) -> Result<(), String> {
    let local = LOCAL.contains(&context) || LOCAL_PREFIXES.iter().any(|p| context.starts_with(p));
    if local || allowed.iter().any(|a| a == context) {
        return Ok(());
    }
    Err(format!(
        "context `{context}` (API server {server}) is not named like a local development \
         cluster (kind-*, k3d-*, minikube, docker-desktop, …), so layerup will not touch it; if \
         it is yours to change, allow it with --allow-context {context} (or \
         `allow-contexts` in layerup.local.toml or ~/.config/layerup/config.toml, or \
         LAYERUP_ALLOW_CONTEXTS={context})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("kind-dev", "10.0.0.5:6443")]
    #[case("k3d-mine", "0.0.0.0:6550")]
    #[case("minikube", "192.168.49.2:8443")]
    #[case("docker-desktop", "kubernetes.docker.internal:6443")]
    #[case("orbstack", "k8s.orb.local")]
    #[case("kind-dev", "127.0.0.1:6443")]
    fn local_clusters_pass(#[case] context: &str, #[case] server: &str) {
        assert_eq!(check(context, server, &[]), Ok(()));
    }

    #[rstest]
    #[case("gke_acme_europe-west1_prod", "34.77.1.2")]
    #[case("kindly-prod", "prod.example.com:6443")]
    #[case("minikube-but-not", "10.1.1.1:443")]
    // What a tunnel, `kubectl proxy` or a bastion to production looks like: loopback proves
    // nothing.
    #[case("production", "127.0.0.1:7443")]
    #[case("prod-eks", "localhost:8001")]
    #[case("arn:aws:eks:eu-west-1:123456789012:cluster/prod", "[::1]:6443")]
    fn others_are_refused_with_the_flag_that_allows_them(
        #[case] context: &str,
        #[case] server: &str,
    ) {
        let err = check(context, server, &[]).unwrap_err();
        assert!(
            err.contains(&format!("--allow-context {context}")) && err.contains(server),
            "{err}"
        );
        assert_eq!(check(context, server, &[context.to_string()]), Ok(()));
    }
}
