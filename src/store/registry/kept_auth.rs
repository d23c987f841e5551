//! Logging in once for many runs: how each registry asks to be authenticated, that its basic
//! credentials were checked, and each bearer token until it expires — kept in the state's
//! `auth/` (owner-only directory and files, never printed), so that a one-shot push sends
//! neither `GET /v2/` nor a token request while what it kept holds. Any refusal forgets it.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Challenge, Registry, Renew};
use crate::oci::digest;
use crate::store::auth::Credentials;

/// The state's directory of what logging in taught.
const DIR: &str = "auth";
/// A kept token with less than this many seconds left is not used: a push takes seconds.
const MARGIN: u64 = 15;
/// distribution's token spec: a token whose answer names no lifetime is good for 60 s.
const DEFAULT_LIFE: u64 = 60;
/// A token is kept no longer than this, whatever its answer said.
const MAX_LIFE: u64 = 24 * 3600;
/// A check of basic credentials holds this long (a wrong password still fails the push, with
/// the registry's 401, and forgets the check).
const CHECK_LIFE: u64 = 3600;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum KeptChallenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A token, the scopes it was granted for, and when it expires (seconds since the epoch).
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptToken {
    token: String,
    scopes: Vec<String>,
    expires: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which credentials, as a hash: a new login is a new key, and no secret is in a file name.
fn fingerprint(creds: &Credentials) -> String {
    let text = match creds {
        Credentials::Anonymous => "anonymous".to_string(),
        Credentials::Basic(user, pass) => format!("basic\0{user}\0{pass}"),
        Credentials::Bearer(t) => format!("bearer\0{t}"),
        Credentials::Identity(t) => format!("identity\0{t}"),
    };
    digest::sha256(text.as_bytes()).digest().to_string()
}

/// A record's file name for `parts`.
fn key(parts: &[&str]) -> String {
    let hex = digest::sha256(parts.join("\n").as_bytes())
        .digest()
        .to_string();
    hex[..40].to_string()
}

impl Registry {
    fn auth_file(&self, name: &str) -> Option<PathBuf> {
        Some(self.state.get()?.join(DIR).join(name))
    }

    fn read_kept<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let bytes = std::fs::read(self.auth_file(name)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_kept(&self, name: &str, value: &impl serde::Serialize) {
        if let Some(file) = self.auth_file(name) {
            let bytes = serde_json::to_vec(value).expect("records serialise");
            // A failure only costs the next run its round trips.
            let _ = crate::store::login::write_private(&file, &bytes);
        }
    }

    fn forget_kept(&self, name: &str) {
        if let Some(file) = self.auth_file(name) {
            let _ = std::fs::remove_file(file);
        }
    }

    /// How `host` asked to be authenticated last run, if it asked at all.
    pub(super) fn kept_challenge(&self, host: &str) -> Option<Challenge> {
        Some(match self.read_kept(&key(&["challenge", host]))? {
            KeptChallenge::Basic => Challenge::Basic,
            KeptChallenge::Bearer { realm, service } => Challenge::Bearer { realm, service },
        })
    }

    pub(super) fn keep_challenge(&self, host: &str, challenge: &Challenge) {
        let name = key(&["challenge", host]);
        match challenge {
            Challenge::Open => self.forget_kept(&name),
            Challenge::Basic => self.write_kept(&name, &KeptChallenge::Basic),
            Challenge::Bearer { realm, service } => self.write_kept(
                &name,
                &KeptChallenge::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                },
            ),
        }
    }

    /// Whether these basic credentials passed `host`'s check within the last hour.
    pub(super) fn checked_lately(&self, host: &str, creds: &Credentials) -> bool {
        let kept: Option<(String, u64)> = self.read_kept(&key(&["checked", host]));
        kept.is_some_and(|(who, expires)| who == fingerprint(creds) && expires > now())
    }

    pub(super) fn keep_checked(&self, host: &str, creds: &Credentials) {
        let kept = (fingerprint(creds), now() + CHECK_LIFE);
        self.write_kept(&key(&["checked", host]), &kept);
    }

    pub(super) fn forget_checked(&self, host: &str) {
        self.forget_kept(&key(&["checked", host]));
    }

    /// Where the token for `renew`'s request (as first asked, before any narrowing) is kept.
    pub(super) fn token_name(host: &str, renew: &Renew) -> String {
        let scopes = renew.scopes.join(" ");
        let service = renew.service.as_deref().unwrap_or("");
        key(&[
            "token",
            host,
            &renew.realm,
            service,
            &scopes,
            &fingerprint(&renew.creds),
        ])
    }

    /// A kept token for the request named `name`, with enough life left, and the scopes it
    /// was granted for.
    pub(super) fn kept_token(&self, name: &str) -> Option<(String, Vec<String>)> {
        let kept: KeptToken = self.read_kept(name)?;
        // Expired, or a file that was tampered with: fetched afresh instead.
        let sendable = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", kept.token));
        if kept.expires <= now() + MARGIN || sendable.is_err() || kept.token.is_empty() {
            self.forget_kept(name);
            return None;
        }
        self.secret(&kept.token);
        Some((kept.token, kept.scopes))
    }

    /// Keeps a token good for `life` seconds (60 when its answer named none).
    pub(super) fn keep_token(&self, name: &str, token: &str, scopes: &[String], life: Option<u64>) {
        let kept = KeptToken {
            token: token.to_string(),
            scopes: scopes.to_vec(),
            // A token service's word, bounded: a day at most, and no overflow.
            expires: now().saturating_add(life.unwrap_or(DEFAULT_LIFE).min(MAX_LIFE)),
        };
        self.write_kept(name, &kept);
    }

    pub(super) fn forget_token(&self, name: &str) {
        self.forget_kept(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_in(dir: &std::path::Path) -> Registry {
        let r = Registry::new(super::super::Options {
            insecure: false,
            attempts: 1,
            stall: std::time::Duration::from_secs(1),
            chunk: 1 << 20,
            chunked: false,
        })
        .unwrap();
        r.remember_in(dir.to_path_buf());
        r
    }

    #[test]
    fn a_token_is_kept_owner_only_until_shortly_before_it_expires() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let r = registry_in(dir.path());
        let scopes = vec!["repository:a:pull".to_string()];
        r.keep_token("long", "t-long", &scopes, Some(300));
        r.keep_token("short", "t-short", &scopes, Some(MARGIN - 1));
        r.keep_token("unsaid", "t-unsaid", &scopes, None);
        assert_eq!(
            r.kept_token("long"),
            Some(("t-long".into(), scopes.clone()))
        );
        assert_eq!(r.kept_token("short"), None);
        assert!(!dir.path().join(DIR).join("short").exists(), "forgotten");
        assert!(r.kept_token("unsaid").is_some(), "60 s when unsaid");
        r.keep_token("boast", "t-boast", &scopes, Some(u64::MAX));
        let kept: KeptToken = r.read_kept("boast").unwrap();
        assert!(kept.expires <= now() + MAX_LIFE, "a day at most");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(DIR)), 0o700);
        assert_eq!(mode(&dir.path().join(DIR).join("long")), 0o600);
        r.keep_token("bent", "a\nb", &scopes, Some(300));
        assert_eq!(r.kept_token("bent"), None, "not a header value");
        r.forget_token("long");
        assert_eq!(r.kept_token("long"), None);
    }

    #[test]
    fn a_check_holds_for_the_credentials_checked_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry_in(dir.path());
        let right = Credentials::Basic("u".into(), "p1".into());
        let other = Credentials::Basic("u".into(), "p2".into());
        assert!(!r.checked_lately("h", &right));
        r.keep_checked("h", &right);
        assert!(r.checked_lately("h", &right));
        assert!(!r.checked_lately("h", &other));
        assert!(!r.checked_lately("h2", &right));
        r.forget_checked("h");
        assert!(!r.checked_lately("h", &right));
    }

    #[test]
    fn fingerprints_differ_by_credentials_and_hold_no_secret() {
        let a = fingerprint(&Credentials::Basic("u".into(), "hunter2".into()));
        let b = fingerprint(&Credentials::Basic("u".into(), "hunter3".into()));
        assert_ne!(a, b);
        assert!(!a.contains("hunter2"));
        assert_ne!(
            fingerprint(&Credentials::Anonymous),
            fingerprint(&Credentials::Bearer("anonymous".into()))
        );
    }
}
