//! The console session: one cookie, encrypted and authenticated (AES-256-GCM, axum-extra's
//! private cookie jar), `HttpOnly`, `Secure`, `SameSite=Lax`, host-only (`__Host-`). It
//! lasts [`ConsoleConfig::session_max`] at most and ends after
//! [`ConsoleConfig::session_idle`] unused; signing out ends it on every replica (a sign-out
//! mark in the store, held until the session would have ended anyway).
//!
//! Every form that changes something carries the session's CSRF token, and its `Origin`
//! must be the console's own.

use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, Key, PrivateCookieJar, SameSite};
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Permission};

pub const SESSION_COOKIE: &str = "__Host-fc-session";
pub const PENDING_COOKIE: &str = "__Host-fc-signin";

/// The signed-in person.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// This session's id (sign-out marks it ended).
    pub sid: String,
    pub oid: String,
    pub name: String,
    pub username: String,
    pub roles: Vec<String>,
    /// Signed in at, and last used at (Unix seconds).
    pub issued: i64,
    pub seen: i64,
    pub csrf: String,
    /// The reader's time zone (IANA name), when chosen.
    #[serde(default)]
    pub tz: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("oid", &self.oid)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// What the person may do: their app roles, as for an app-only token (no scopes).
    pub fn caller(&self) -> Caller {
        let roles: Vec<&str> = self.roles.iter().map(String::as_str).collect();
        Caller {
            subject: self.oid.clone(),
            permissions: crate::auth::effective_permissions(&[], &roles, false),
        }
    }

    pub fn may(&self, p: Permission) -> bool {
        self.caller().permissions.contains(&p)
    }

    /// The name of the store mark that says this session was signed out.
    pub fn signout_mark(&self) -> String {
        format!("console-signout/{}", self.sid)
    }
}

/// Why a request carries no usable session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    Missing,
    Expired,
}

/// Reads the session from the cookie: `Err` when absent, unreadable (tampered, or sealed
/// with another key), past its lifetime or idle too long.
pub fn read(
    headers: &HeaderMap,
    key: &Key,
    now: i64,
    max: i64,
    idle: i64,
) -> Result<Session, NoSession> {
    let jar = PrivateCookieJar::from_headers(headers, key.clone());
    let c = jar.get(SESSION_COOKIE).ok_or(NoSession::Missing)?;
    let s: Session = serde_json::from_str(c.value()).map_err(|_| NoSession::Missing)?;
    if now - s.issued >= max || now - s.seen >= idle || now < s.issued - 60 {
        return Err(NoSession::Expired);
    }
    Ok(s)
}

fn cookie(name: &'static str, value: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .max_age(time::Duration::seconds(max_age_secs))
        .build()
}

/// The `Set-Cookie` that stores `s` (until its lifetime's end).
pub fn store(key: &Key, s: &Session, max: i64, now: i64) -> PrivateCookieJar {
    let left = (s.issued + max - now).max(1);
    let value = serde_json::to_string(s).unwrap_or_default();
    PrivateCookieJar::new(key.clone()).add(cookie(SESSION_COOKIE, value, left))
}

/// The `Set-Cookie`s that remove both cookies.
pub fn clear(key: &Key) -> PrivateCookieJar {
    PrivateCookieJar::new(key.clone())
        .add(cookie(SESSION_COOKIE, String::new(), 0))
        .add(cookie(PENDING_COOKIE, String::new(), 0))
}

/// The pending sign-in (state, nonce, PKCE verifier), for ten minutes.
pub fn store_pending(key: &Key, p: &super::oidc::Pending) -> PrivateCookieJar {
    let value = serde_json::to_string(p).unwrap_or_default();
    PrivateCookieJar::new(key.clone()).add(cookie(PENDING_COOKIE, value, 600))
}

pub fn read_pending(headers: &HeaderMap, key: &Key) -> Option<super::oidc::Pending> {
    let jar = PrivateCookieJar::from_headers(headers, key.clone());
    serde_json::from_str(jar.get(PENDING_COOKIE)?.value()).ok()
}

/// A fresh random token (256 bits, URL-safe base64).
pub fn random_token() -> String {
    use base64::Engine;
    use rand::Rng;
    let mut b = [0u8; 32];
    rand::rng().fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Why a changing request is refused before it is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forged {
    /// `Origin` absent or another origin's.
    Origin,
    /// The form's CSRF token is absent or not this session's.
    Token,
}

/// Checks a form post: its `Origin` is the console's, and its token is the session's.
pub fn check_post(
    headers: &HeaderMap,
    origin: &str,
    s: &Session,
    token: Option<&str>,
) -> Result<(), Forged> {
    let given = headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if given != Some(origin) {
        return Err(Forged::Origin);
    }
    use subtle::ConstantTimeEq;
    match token {
        Some(t) if bool::from(t.as_bytes().ct_eq(s.csrf.as_bytes())) => Ok(()),
        _ => Err(Forged::Token),
    }
}
