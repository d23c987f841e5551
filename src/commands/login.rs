//! `login` and `logout`: credentials checked against the registry, then kept where docker,
//! podman, skopeo and crane read them (`store::login`) — or forgotten everywhere layerup reads.

use crate::error::{Error, Result};
use crate::store::login::{self, Place};
use crate::store::registry::{self, Registry};

/// A validated `layerup login`. Its `Debug` never shows the password.
#[derive(Clone)]
pub struct LoginPlan {
    /// `host[:port]`, or `docker.io`.
    pub registry: String,
    pub username: String,
    pub password: String,
    /// Given with `--password`: in the shell's history and the process list.
    pub password_on_command_line: bool,
    pub net: registry::Options,
}

impl std::fmt::Debug for LoginPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginPlan")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a login came to.
#[derive(Debug)]
pub struct LoggedIn {
    pub registry: String,
    pub username: String,
    /// Where it is kept.
    pub place: Place,
    /// The registry checked the credentials (`false`: it asks for none).
    pub checked: bool,
}

/// Checks the credentials against the registry, then keeps them. Nothing is written when the
/// registry refuses them.
pub async fn login(plan: &LoginPlan) -> Result<LoggedIn> {
    if plan.password_on_command_line {
        tracing::warn!(
            "--password leaves the password in your shell's history and the process list: \
             prefer --password-stdin"
        );
    }
    let host = host_of(&plan.registry);
    let registry = Registry::new(plan.net)?;
    let checked = registry
        .verify(&host, &plan.username, &plan.password)
        .await?;
    if !checked {
        tracing::warn!("registry {host} asks for no credentials; keeping them anyway");
    }
    let place = login::place(&plan.registry)?;
    login::store(&place, &plan.registry, &plan.username, &plan.password).await?;
    Ok(LoggedIn {
        registry: plan.registry.clone(),
        username: plan.username.clone(),
        place,
        checked,
    })
}

/// Forgets `registry`'s credentials everywhere layerup reads them; where they were.
pub async fn logout(registry: &str) -> Result<Vec<String>> {
    let gone = login::erase(registry).await?;
    if gone.is_empty() {
        return Err(Error::new(
            crate::error::ExitCode::NotFound,
            format!("there is no login for {registry} to forget"),
        ));
    }
    Ok(gone)
}

/// The host requests go to: Docker Hub's registry for `docker.io`.
fn host_of(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io".into(),
        r => r.to_string(),
    }
}
