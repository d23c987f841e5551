//! Every registry request, retried as a bad link or a busy registry needs: connection failures,
//! timeouts, 5xx and 429 (honouring `Retry-After`), with exponential backoff and jitter, a bounded
//! number of tries, then one error naming what was being done, the registry and the last answer.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::transport::{self, Transport};
use super::{status_error, Registry, RegistryError, Target};
use crate::error::{redact_url, Error, ExitCode, Result};
pub(super) use crate::retry::backoff;

/// A registry asking for a longer pause than this is treated as down, not busy.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What to do about one failed try.
pub(super) enum Verdict {
    /// Worth another try after this long.
    Retry(Duration, String),
    /// Final: retrying cannot help.
    Fail(Error),
}

impl Registry {
    /// Sends the request `build` makes (with `t`'s credentials) until it gets an answer that is
    /// not worth retrying, which it returns whatever its status. `action` words the failure:
    /// "cannot read manifest …".
    pub(super) async fn send(
        &self,
        t: Target<'_>,
        action: &(dyn Fn() -> String + Sync),
        build: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Sync),
    ) -> Result<Response> {
        let mut renewed = false;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut req = build(&self.http).build().map_err(|e| {
                Error::new(
                    ExitCode::Registry,
                    format!("{}: cannot make the request: {e}", action()),
                )
            })?;
            let elsewhere = !self.same_origin(t.host, req.url());
            if let Some(h) = self.header_for(t, req.url()) {
                req.headers_mut().insert(AUTHORIZATION, h);
            }
            let sent = self.execute(req, tries).await;
            if sent.is_ok() {
                self.answered(t.host);
            }
            let verdict = match sent {
                Ok(res) if elsewhere && res.status() == StatusCode::UNAUTHORIZED => {
                    return Err(self.refused_elsewhere(t, &res, action));
                }
                Ok(res)
                    if res.status() == StatusCode::UNAUTHORIZED
                        && !renewed
                        && self.was_taken_as_open(t.host) =>
                {
                    // Open last run, not now: log in (unless a request beside this one just
                    // did), and send it again.
                    renewed = true;
                    if self.taken_as_open(t) {
                        let challenge = res
                            .headers()
                            .get(reqwest::header::WWW_AUTHENTICATE)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        Box::pin(self.log_in_now(t, &challenge)).await?;
                    }
                    tries -= 1;
                    continue;
                }
                Ok(res) if refuses_token(res.status()) && !renewed => {
                    // A token that expired during a long transfer: fetch a fresh one, once.
                    renewed = true;
                    // Boxed: fetching the token is itself a request sent through here.
                    if Box::pin(self.renew(t)).await? {
                        tries -= 1;
                        continue;
                    }
                    return Ok(res);
                }
                Ok(res) => match self.judge_status(&res, tries) {
                    None => return Ok(res),
                    Some(Verdict::Retry(wait, why)) if tries < self.options.attempts => {
                        Verdict::Retry(wait, why)
                    }
                    Some(Verdict::Retry(..)) => {
                        let status = res.status();
                        let body = self.answer_text(res).await;
                        let e = status_error(status, &body, &action(), t.host);
                        return Err(gave_up(e, tries));
                    }
                    Some(Verdict::Fail(e)) => return Err(e.context(action())),
                },
                Err(e) => match self.judge_transport(&e, t.host, tries) {
                    Verdict::Retry(..) if tries >= self.options.attempts => {
                        return Err(gave_up(
                            transport::error(&e, t.host).context(action()),
                            tries,
                        ))
                    }
                    v => v,
                },
            };
            match verdict {
                Verdict::Retry(wait, why) => {
                    let next = format!("try {} of {}", tries + 1, self.options.attempts);
                    self.again(tries, &action(), &why, &next, wait).await?;
                }
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    /// Sends one request, and with `-vv` says it on one line: method, URL (no credentials, no
    /// query: upload URLs carry state tokens), status, bytes each way, time, and which try.
    pub(super) async fn execute(
        &self,
        req: reqwest::Request,
        tries: u32,
    ) -> reqwest::Result<Response> {
        crate::meter::request();
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return self.http.execute(req).await;
        }
        let (method, url) = (req.method().clone(), redact_url(req.url().as_str()));
        let up = req
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| {
                req.body()
                    .and_then(|b| b.as_bytes())
                    .map(|b| b.len() as u64)
            })
            .unwrap_or(0);
        let started = std::time::Instant::now();
        let res = self.http.execute(req).await;
        let ms = started.elapsed().as_millis();
        let again = if tries > 1 {
            format!(", try {tries}")
        } else {
            String::new()
        };
        match &res {
            Ok(r) => {
                let down = r
                    .content_length()
                    .map_or_else(|| "?".to_string(), |n| n.to_string());
                tracing::debug!(
                    "{method} {url} -> {} ({up} B up, {down} B down, {ms} ms{again})",
                    r.status()
                );
            }
            Err(e) => tracing::debug!(
                "{method} {url} -> {} ({up} B up, {ms} ms{again})",
                transport::classify(e)
            ),
        }
        res
    }

    /// A 401 from a host the registry sent a request on to: its credentials are not sent
    /// there, so this is final, and the error names that host.
    pub(super) fn refused_elsewhere(
        &self,
        t: Target<'_>,
        res: &Response,
        action: &(dyn Fn() -> String + Sync),
    ) -> Error {
        let u = res.url();
        let other = match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or("?")),
            None => u.host_str().unwrap_or("?").to_string(),
        };
        Error::auth(format!(
            "{}: registry {} sent the request on to {other}, which asks for credentials; \
             layerup sends the credentials for {} only to {}",
            action(),
            t.host,
            t.host,
            t.host
        ))
    }

    /// `None` when the answer is final (success or a client error the caller words itself).
    pub(super) fn judge_status(&self, res: &Response, tries: u32) -> Option<Verdict> {
        let status = res.status();
        if !retryable(status) {
            return None;
        }
        let asked = retry_after(res);
        if let Some(after) = asked.filter(|a| *a > MAX_RETRY_AFTER) {
            return Some(Verdict::Fail(
                Error::new(
                    ExitCode::Registry,
                    format!(
                        "registry answered {status} and asks to wait {}s before trying again",
                        after.as_secs()
                    ),
                )
                .with_cause(RegistryError {
                    status: status.as_u16(),
                    code: None,
                }),
            ));
        }
        let wait = asked.unwrap_or_else(|| backoff(tries));
        let limit = res
            .headers()
            .get("RateLimit-Remaining")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let v: String = v.chars().take(40).filter(|c| !c.is_control()).collect();
                format!(" (rate limit: {v} requests remaining)")
            })
            .unwrap_or_default();
        Some(Verdict::Retry(
            wait,
            format!("registry answered {status}{limit}"),
        ))
    }

    /// Connection failures and timeouts are retried; a TLS failure, a name that does not
    /// resolve, or a host that has refused every connection so far (a wrong port) is final.
    pub(super) fn judge_transport(&self, e: &reqwest::Error, host: &str, tries: u32) -> Verdict {
        let err = transport::error(e, host);
        let final_ = match transport::classify(e) {
            Transport::Tls | Transport::Dns => true,
            // A host that never answered in this run is a wrong address, not weather.
            Transport::Refused => !self.has_answered(host),
            Transport::Timeout => e.is_connect() && !self.has_answered(host),
            Transport::Broken | Transport::Other => false,
        };
        if final_ {
            return Verdict::Fail(err);
        }
        Verdict::Retry(backoff(tries), err.to_string())
    }

    /// Waits `wait` before the next try, saying on stderr why and what comes `next`; or, once
    /// `tries` are spent, the error `action: why`.
    pub(super) async fn again(
        &self,
        tries: u32,
        action: &str,
        why: &str,
        next: &str,
        wait: Duration,
    ) -> Result<()> {
        if tries >= self.options.attempts {
            let e = Error::new(ExitCode::Registry, format!("{action}: {why}"));
            return Err(gave_up(e, tries));
        }
        tracing::warn!("{action}: {why}; {next} in {:.1}s", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        Ok(())
    }

    pub(super) fn answered(&self, host: &str) {
        let mut hosts = self.answered.lock().expect("answered lock");
        if !hosts.contains(host) {
            hosts.insert(host.to_string());
        }
    }

    fn has_answered(&self, host: &str) -> bool {
        self.answered.lock().expect("answered lock").contains(host)
    }
}

/// What a token that expired gets: 401, or 403 `DENIED` from GHCR. A fresh one is fetched once
/// and the request sent again; a refusal that is real comes back, worded as such.
pub(super) fn refuses_token(status: StatusCode) -> bool {
    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
}

/// 408, 429 and the 5xx that mean "not now": worth another try.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 allows both; Docker Hub has sent
/// either).
fn retry_after(res: &Response) -> Option<Duration> {
    let text = res.headers().get(RETRY_AFTER)?.to_str().ok()?;
    wait_for(text.trim(), std::time::SystemTime::now())
}

fn wait_for(text: &str, now: std::time::SystemTime) -> Option<Duration> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    // A date already past: go now. The date has whole seconds: round up, not short.
    Some(
        when.duration_since(now)
            .map_or(Duration::ZERO, |d| d + Duration::from_millis(500)),
    )
}

/// The last error, saying that it was not the first.
pub(super) fn gave_up(e: Error, tries: u32) -> Error {
    e.suffixed(&format!("(gave up after {tries} tries)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Thu, 03 Dec 2026 18:00:00 GMT").unwrap();
        assert_eq!(wait_for("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            wait_for("Thu, 03 Dec 2026 18:00:03 GMT", now),
            Some(Duration::from_millis(3500))
        );
        assert_eq!(
            wait_for("Thu, 03 Dec 2026 17:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(wait_for("soon", now), None);
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 201, 202, 400, 401, 403, 404, 405, 416, 501] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
