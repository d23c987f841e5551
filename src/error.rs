//! The error every stage returns, its one-line message, and the documented exit code it maps to.

use std::path::Path;
use std::sync::Arc;

/// Exit codes, documented in README.md ("Exit codes"). Scripts and inner-loop tools branch on them.
/// (130, interrupted, is returned by `main` directly.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Something layerup did not expect (a bug, or the machine itself failing).
    Internal = 1,
    /// The command line: flags, references, mappings.
    Usage = 2,
    /// The files to add: missing, unreadable, unsupported type, bad ignore file.
    Input = 3,
    /// A registry could not be reached (DNS, connection, TLS, timeout).
    Unreachable = 4,
    /// Credentials missing, refused (401/403) or a credential helper failed.
    Auth = 5,
    /// The base image (tag, digest, repository or layout) does not exist.
    NotFound = 6,
    /// The base image exists but cannot be used: schema1, unknown media type, not a runnable image,
    /// bytes that do not match their digest.
    Image = 7,
    /// A registry answered a write with an error (quota, invalid manifest, server error).
    Registry = 8,
    /// The Kubernetes API refused a change (invalid, conflicting, a server error).
    Cluster = 9,
    /// The rollout failed (ImagePullBackOff, CrashLoopBackOff, a missed progress deadline) or
    /// did not finish within `--timeout`.
    Rollout = 10,
    /// The image's build command (`build`, `--build`) failed: nothing was pushed.
    Build = 11,
}

/// One failure, worded as a single line that names what failed and where.
///
/// The message never holds a credential: registries and helpers are named by host, URLs pass
/// through [`redact_url`], and credential values are never formatted. It never holds a control
/// character either: text from registries, API servers and file names is [`escape`]d as the
/// error is made, so a hostile answer cannot forge a second line or drive the terminal.
///
/// Beside the line, an error keeps its typed cause as its `source` (a transport failure's kind,
/// a registry's status and error code, the API server's status, an I/O error's kind): callers
/// ask for it with [`Error::cause`], never by reading the message. The exit code is the kind.
/// An error is cheap to clone, cause included: one failure shared by several images stays one.
#[derive(Debug, Clone)]
pub struct Error {
    code: ExitCode,
    message: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match escape(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(safe) => safe,
        };
        Error {
            code,
            message,
            cause: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Usage, message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Input, message)
    }

    pub fn image(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Image, message)
    }

    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Auth, message)
    }

    pub fn build(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Build, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Internal, message)
    }

    /// A local file operation failed; names the path and the OS reason in plain words. The
    /// I/O error's kind is kept as the cause.
    pub fn io(action: &str, path: &Path, err: &std::io::Error) -> Self {
        let code = match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::OutOfMemory => ExitCode::Internal,
            _ => ExitCode::Input,
        };
        Self::new(
            code,
            format!("cannot {action} `{}`: {}", path.display(), os_reason(err)),
        )
        .with_cause(std::io::Error::from(err.kind()))
    }

    /// The same failure with its typed cause attached (see [`Error::cause`]). The cause is for
    /// programs; it is never printed, so it may not need escaping — but it must not hold a
    /// secret either: attach kinds and statuses, not a library's whole error.
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
    }

    pub fn code(&self) -> ExitCode {
        self.code
    }

    /// The first cause of type `T` in this error's chain.
    pub fn cause<T: std::error::Error + 'static>(&self) -> Option<&T> {
        chain(self).into_iter().find_map(|e| e.downcast_ref::<T>())
    }

    /// Prefixes the message with what was being done, keeping the exit code and the cause.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{}: {}", escape(&what.to_string()), self.message);
        self
    }

    /// Appends `more` to the message (`(gave up after 6 tries)`), keeping code and cause.
    pub fn suffixed(mut self, more: &str) -> Self {
        self.message = format!("{} {}", self.message, escape(more));
        self
    }
}

/// An error and its sources, outermost first (what `source()` gives, link by link).
pub fn sources<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// Every error of a chain — [`sources`], and each `io::Error`'s inner error too (its `source()`
/// skips it, and I/O errors nest: hyper's connect error holds tokio-rustls' which holds
/// rustls'). With [`sources`], the one place chains are walked.
pub fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut todo = vec![err];
    while let Some(e) = todo.pop() {
        out.push(e);
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            todo.push(inner);
        }
        if let Some(next) = e.source() {
            todo.push(next);
        }
    }
    out
}

/// The OS reason without Rust's "(os error 2)" suffix.
pub fn os_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The innermost cause of an error chain, in plain words: what the OS or TLS library said
/// (reqwest's, hyper's and kube's wrappers above it only say where).
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let io_reason = sources(err)
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .last()
        .map(os_reason);
    io_reason.unwrap_or_else(|| {
        let text = sources(err)
            .last()
            .map_or_else(String::new, |e| e.to_string());
        text.split(" for url (").next().unwrap_or(&text).to_string()
    })
}

/// Text from outside (a registry's message, an API server's, a file name) made safe for a
/// terminal and one line: control characters (newlines, ESC, C1 codes) and the bidirectional
/// overrides that reorder what is shown are written as escapes (`\n`, `\u{1b}`).
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
    }
    if !s.chars().any(unsafe_char) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

/// Text made one line: runs of whitespace (a kubelet message's newlines) become one space.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a program said, in brief: the first line with text on it, trimmed, at most 200
/// characters (a helper's or a container's stderr).
pub fn first_line(said: &str) -> String {
    said.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// A URL fit to print: no user-info, no query (upload URLs carry opaque state tokens).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<unprintable URL>".to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_drops_userinfo_and_query() {
        let shown = redact_url(
            "https://bob:hunter2@reg.example/v2/a/blobs/uploads/x?_state=abc&digest=sha256:1",
        );
        assert_eq!(shown, "https://reg.example/v2/a/blobs/uploads/x");
    }

    #[test]
    fn control_characters_from_outside_never_reach_the_terminal() {
        let hostile = "denied\nerror: forged\u{1b}[2J\u{1b}]0;title\u{7}\u{9b}31m \u{202e}txt.exe";
        let e = Error::new(ExitCode::Registry, format!("cannot read: {hostile}"));
        let shown = e.to_string();
        assert_eq!(shown.lines().count(), 1);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(
            shown.contains("denied\\nerror: forged\\u{1b}[2J"),
            "{shown}"
        );
        assert!(shown.contains("\\u{202e}"), "{shown}");
        let wrapped = Error::new(ExitCode::Registry, "x").context("file `a\nb`");
        assert_eq!(wrapped.to_string(), "file `a\\nb`: x");
    }

    #[test]
    fn os_reason_has_no_error_number() {
        let err = std::io::Error::from_raw_os_error(2);
        assert_eq!(os_reason(&err), "No such file or directory");
    }
}
