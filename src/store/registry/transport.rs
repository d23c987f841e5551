//! Failures before any HTTP answer, told apart by the errors' types (never their text): a name
//! that does not resolve, TLS, a refused connection, a timeout, a connection that broke. The
//! name lookup is layerup's own resolver, so that "no such host" is a type it can recognise.

use std::net::SocketAddr;

use crate::error::{Error, ExitCode};

/// What broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// No answer within `--stall-timeout` (or the connect timeout).
    Timeout,
    /// A certificate, or a peer that does not speak TLS.
    Tls,
    /// The host name does not resolve.
    Dns,
    /// Nobody listens there.
    Refused,
    /// Connected, then cut: a reset, a closed connection, a registry that went away.
    Broken,
    Other,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Timeout => "no answer in time",
            Transport::Tls => "TLS failed",
            Transport::Dns => "the host name does not resolve",
            Transport::Refused => "the connection was refused",
            Transport::Broken => "the connection broke",
            Transport::Other => "the request failed",
        })
    }
}

/// Kept as the cause of a failure before any HTTP answer (see [`Error::cause`]).
impl std::error::Error for Transport {}

/// The host name did not resolve; the resolver's own type, so that it can be recognised.
#[derive(Debug)]
pub struct NoSuchHost {
    pub name: String,
    pub why: String,
}

impl std::fmt::Display for NoSuchHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot resolve host name `{}`: {}", self.name, self.why)
    }
}

impl std::error::Error for NoSuchHost {}

/// The system's resolver (getaddrinfo, as reqwest's default), with failures typed.
pub struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found = tokio::net::lookup_host(format!("{host}:0")).await;
            match found {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if addrs.is_empty() {
                        return Err(Box::new(NoSuchHost {
                            name: host,
                            why: "no addresses".into(),
                        }) as _);
                    }
                    Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
                }
                Err(e) => Err(Box::new(NoSuchHost {
                    name: host,
                    why: crate::error::os_reason(&e),
                }) as _),
            }
        })
    }
}

/// What kind of failure a request's error is.
pub fn classify(err: &reqwest::Error) -> Transport {
    let all = crate::error::chain(err);
    if all.iter().any(|e| e.is::<NoSuchHost>()) {
        return Transport::Dns;
    }
    if all.iter().any(|e| e.is::<rustls::Error>()) {
        return Transport::Tls;
    }
    if err.is_timeout() {
        return Transport::Timeout;
    }
    let io = all
        .iter()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .next();
    match io {
        Some(std::io::ErrorKind::TimedOut) => return Transport::Timeout,
        Some(std::io::ErrorKind::ConnectionRefused) => return Transport::Refused,
        _ => {}
    }
    if err.is_connect() {
        return Transport::Refused;
    }
    if err.is_request() || err.is_body() || err.is_decode() || io.is_some() {
        return Transport::Broken;
    }
    Transport::Other
}

/// A failure before any HTTP answer, worded once: what broke, with which registry. Its kind
/// is kept as the cause.
pub fn error(err: &reqwest::Error, host: &str) -> Error {
    let cause = crate::error::root_cause(err);
    let kind = classify(err);
    let (code, text) = match kind {
        Transport::Timeout => (
            ExitCode::Unreachable,
            format!("registry {host} did not answer in time ({cause})"),
        ),
        Transport::Tls => (
            ExitCode::Unreachable,
            format!(
                "TLS with registry {host} failed: {cause} (a registry that speaks plain HTTP \
                 needs --insecure)"
            ),
        ),
        Transport::Dns | Transport::Refused => (
            ExitCode::Unreachable,
            format!("cannot reach registry {host}: {cause}"),
        ),
        Transport::Broken => (
            ExitCode::Unreachable,
            format!("the connection to registry {host} broke: {cause}"),
        ),
        Transport::Other => (
            ExitCode::Registry,
            format!("talking to registry {host} failed: {cause}"),
        ),
    };
    Error::new(code, text).with_cause(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(Resolver))
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_dns() {
        let e = client()
            .get("http://no-such-host.invalid/v2/")
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify(&e), Transport::Dns);
        let said = error(&e, "no-such-host.invalid");
        assert_eq!(said.cause::<Transport>(), Some(&Transport::Dns));
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client()
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify(&e), Transport::Refused);
    }

    #[tokio::test]
    async fn tls_to_a_plain_http_server_is_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let e = client()
            .get(format!("https://{addr}/v2/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify(&e), Transport::Tls, "{e:?}");
    }
}
