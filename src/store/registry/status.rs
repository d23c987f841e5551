//! A registry's refusal: its status and its error body (distribution spec, "Error Codes") worded
//! into one line, with the status and the registry's error code kept as the error's cause.

use reqwest::StatusCode;

use crate::error::{Error, ExitCode};

/// What a registry answered when it refused a request, as an [`Error`]'s cause: callers that
/// must tell refusals apart (a missing blob from a refused token) read this, never the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub status: u16,
    /// The first error code of its JSON body (`MANIFEST_UNKNOWN`, `DENIED`, …), if it sent one.
    pub code: Option<String>,
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "registry answered {}", self.status)?;
        if let Some(c) = &self.code {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}

/// The first error of a registry's JSON error body: its code, and its message when it has one.
fn first_error(body: &str) -> Option<(String, String)> {
    let v = serde_json::from_str::<serde_json::Value>(body).ok()?;
    let first = v.get("errors")?.as_array()?.first()?.clone();
    let code = first.get("code")?.as_str()?.to_string();
    let message = first
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    Some((code, message))
}

/// A registry's error answer, worded from its status and its JSON error body.
pub(super) fn status_error(status: StatusCode, body: &str, action: &str, host: &str) -> Error {
    let parsed = first_error(body);
    let detail = match &parsed {
        Some((code, message)) if message.is_empty() => code.clone(),
        Some((code, message)) => format!("{code}: {message}"),
        // A proxy or load balancer in front of the registry answered (its error page).
        None if body.trim_start().starts_with('<') => {
            "and its answer was a web page, not a registry error (a proxy in front of it?)".into()
        }
        None => body
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect(),
    };
    let code = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ExitCode::Auth,
        StatusCode::NOT_FOUND => ExitCode::NotFound,
        _ => ExitCode::Registry,
    };
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (check the credentials for this registry)",
        StatusCode::FORBIDDEN => " (the credentials are valid but not allowed to do this)",
        _ if parsed.as_ref().is_some_and(|(c, _)| c == "TAG_INVALID") => {
            " (the repository's tags may be immutable: give each push a tag of its own with --tag)"
        }
        _ => "",
    };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(", {detail}")
    };
    Error::new(
        code,
        format!("{action}: registry {host} answered {status}{detail}{hint}"),
    )
    .with_cause(RegistryError {
        status: status.as_u16(),
        code: parsed.map(|(c, _)| c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_body_is_worded_with_code_and_message() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"9"}}]}"#;
        let err = status_error(
            StatusCode::NOT_FOUND,
            body,
            "cannot read manifest a:9",
            "reg:5000",
        );
        assert_eq!(
            err.to_string(),
            "cannot read manifest a:9: registry reg:5000 answered 404 Not Found, MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(err.code(), ExitCode::NotFound);
    }

    #[test]
    fn the_status_and_error_code_are_kept_as_the_cause() {
        let body = r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let err =
            status_error(StatusCode::FORBIDDEN, body, "cannot upload", "reg").context("image api");
        let cause = err.cause::<RegistryError>().expect("typed cause");
        assert_eq!(cause.status, 403);
        assert_eq!(cause.code.as_deref(), Some("DENIED"));
        // The line users read is unchanged by the cause.
        assert!(err
            .to_string()
            .starts_with("image api: cannot upload: registry reg answered"));
    }

    #[test]
    fn denied_is_an_auth_failure_with_a_hint() {
        let err = status_error(StatusCode::FORBIDDEN, "", "cannot upload", "reg");
        assert_eq!(err.code(), ExitCode::Auth);
        assert!(err
            .to_string()
            .ends_with("(the credentials are valid but not allowed to do this)"));
        assert_eq!(err.cause::<RegistryError>().unwrap().code, None);
    }
}
