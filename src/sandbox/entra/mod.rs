//! Entra ID / Microsoft Graph simulator.
//!
//! * Token endpoint `POST /{tenant}/oauth2/v2.0/token` (client secret or federated
//!   assertion) and a managed-identity endpoint `GET /msi/token` (`X-IDENTITY-HEADER`).
//! * Graph: `GET /{ver}/users/{id}`, `GET …/fido2Methods/creationOptions(…)` issuing
//!   challenges that expire, `POST …/fido2Methods` that verifies the registration as Entra
//!   does (see [`super::webauthn`]) and refuses duplicates, `GET`/`DELETE` of methods.
//! * Caller tokens for the connector's own API: OpenID configuration and RS256 JWKS under
//!   `/{tenant}/v2.0/.well-known/openid-configuration` and `/{tenant}/discovery/v2.0/keys`,
//!   minted by [`EntraSim::issue_caller_token`] or `POST /_sim/caller-token`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use josekit::jwk::Jwk;
use josekit::jws::{JwsHeader, RS256};
use josekit::jwt::JwtPayload;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::faults::Faults;
use super::{serve, Served};

mod caller_tokens;
mod control;
mod graph;
mod login;
mod signin;

pub use caller_tokens::CallerClaims;
#[allow(unused_imports)]
use caller_tokens::*;
use control::*;
use graph::*;
use login::*;
use sha2::Digest;
use signin::*;
pub use signin::{default_people, Person};

/// The audience of Microsoft Graph tokens.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

#[derive(Debug, Clone)]
pub struct EntraSimConfig {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// Accepted as `client_assertion` (workload identity), if set.
    pub federated_assertion: Option<String>,
    /// Expected `X-IDENTITY-HEADER` of the managed-identity endpoint, if set.
    pub identity_header: Option<String>,
    pub rp_id: String,
    /// Lifetime of issued Graph tokens.
    pub token_lifetime_secs: i64,
    /// Plain-HTTP port (Graph, managed identity, simulator controls); 0 = any.
    pub port: u16,
    /// HTTPS port of the login host (token endpoint, OpenID discovery, keys); 0 = any.
    /// The Azure SDK's credentials refuse a plain-http authority.
    pub tls_port: u16,
    /// Who may sign in to the console ([`default_people`]).
    pub people: Vec<Person>,
}

impl EntraSimConfig {
    pub fn new(tenant: &str, client_id: &str, client_secret: &str) -> Self {
        Self {
            tenant: tenant.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            federated_assertion: None,
            identity_header: None,
            rp_id: "login.microsoft.com".into(),
            token_lifetime_secs: 3599,
            port: 0,
            tls_port: 0,
            people: default_people(),
        }
    }
}

#[derive(Debug, Clone)]
struct Method {
    id: String,
    display_name: String,
    credential_id: Vec<u8>,
    created: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    users: Vec<(String, String)>, // (upn, object id)
    challenges: HashMap<String, Vec<(String, DateTime<Utc>)>>,
    methods: HashMap<String, Vec<Method>>,
    /// Graph/Azure access token → (expiry, audience).
    tokens: HashMap<String, (DateTime<Utc>, String)>,
    token_requests: usize,
    registrations: usize,
    /// Per object id: (accountEnabled, userType); absent = (true, "Member").
    user_state: HashMap<String, (bool, String)>,
    /// The tenant's passkey policy (`fido2AuthenticationMethodConfiguration`), or `None`
    /// for the default (enabled for all users, self-service on, no key restrictions).
    policy: Option<Value>,
    /// The app lacks the permission to read the policy (403).
    policy_forbidden: bool,
    policy_reads: usize,
    /// Group id → member object ids (checkMemberGroups).
    groups: HashMap<String, Vec<String>>,
    /// Answer 400 to a user lookup with `$select` (a server without query options).
    refuse_select: bool,
    /// The app registration's web redirect URIs (sign-in for people).
    redirect_uris: Vec<String>,
    /// Authorization codes issued and not yet redeemed.
    codes: HashMap<String, Code>,
    sign_ins: usize,
}

/// The policy of a tenant that lets every user register passkeys, any key model.
pub fn default_fido2_policy() -> Value {
    json!({
        "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
        "id": "Fido2",
        "state": "enabled",
        "isSelfServiceRegistrationAllowed": true,
        "isAttestationEnforced": true,
        "excludeTargets": [],
        "keyRestrictions": {"isEnforced": false, "enforcementType": "block", "aaGuids": []},
        "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": false}]
    })
}

#[derive(Clone)]
struct St {
    inner: Arc<Mutex<Inner>>,
    cfg: Arc<EntraSimConfig>,
    faults: Faults,
    signing: Arc<Mutex<Arc<Jwk>>>,
    base: Arc<Mutex<String>>,
    /// The plain-http base (loopback): the browser-facing authorization endpoint, so that
    /// a browser in the sandbox meets no certificate of the sandbox CA.
    http_base: Arc<Mutex<String>>,
}

fn new_signing_key() -> Result<Jwk, josekit::JoseError> {
    let mut signing = Jwk::generate_rsa_key(2048)?;
    signing.set_key_id(format!("sim-{}", uuid::Uuid::new_v4().simple()));
    signing.set_key_use("sig");
    signing.set_algorithm("RS256");
    Ok(signing)
}

impl St {
    fn signing_key(&self) -> Arc<Jwk> {
        self.signing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
pub struct EntraSim {
    st: St,
    served: Arc<Served>,
    served_tls: Arc<Served>,
    pub faults: Faults,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill(v.as_mut_slice());
    v
}

impl EntraSim {
    pub async fn start(cfg: EntraSimConfig) -> std::io::Result<EntraSim> {
        let signing = new_signing_key().map_err(std::io::Error::other)?;
        let faults = Faults::default();
        let (port, tls_port) = (cfg.port, cfg.tls_port);
        let st = St {
            inner: Arc::new(Mutex::new(Inner::default())),
            cfg: Arc::new(cfg),
            faults: faults.clone(),
            signing: Arc::new(Mutex::new(Arc::new(signing))),
            base: Arc::new(Mutex::new(String::new())),
            http_base: Arc::new(Mutex::new(String::new())),
        };
        let graph = Router::new()
            .route("/{root}/users/{id}", get(get_user))
            .route("/{root}/users/{id}/checkMemberGroups", post(check_member_groups))
            .route(
                "/{root}/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{method}",
                get(get_method_policy),
            )
            .route(
                "/{root}/users/{id}/authentication/fido2Methods",
                get(list_methods).post(register),
            )
            .route(
                "/{root}/users/{id}/authentication/fido2Methods/{op}",
                get(creation_options).delete(delete_method),
            )
            .route("/{root}/oauth2/v2.0/token", post(token))
            .route("/msi/token", get(msi_token))
            .with_state(st.clone());
        let open = Router::new()
            .route(
                "/{root}/v2.0/.well-known/openid-configuration",
                get(openid_configuration),
            )
            .route("/{root}/discovery/v2.0/keys", get(keys))
            .route(
                "/{root}/oauth2/v2.0/authorize",
                get(authorize).post(authorize_pick),
            )
            .route("/_sim/caller-token", post(ctl_caller_token))
            .route("/_sim/users", post(ctl_add_user))
            .route("/_sim/user-state", post(ctl_user_state))
            .route("/_sim/fido2-policy", post(ctl_fido2_policy))
            .route("/_sim/methods", get(ctl_methods))
            .with_state(st.clone());
        let router = faults.wrap(graph).merge(open);
        let served = serve(router.clone(), port).await?;
        let served_tls = super::serve_tls(router, tls_port).await?;
        *st.base.lock().unwrap_or_else(|p| p.into_inner()) = served_tls.url();
        *st.http_base.lock().unwrap_or_else(|p| p.into_inner()) = served.url();
        Ok(EntraSim {
            st,
            served: Arc::new(served),
            served_tls: Arc::new(served_tls),
            faults,
        })
    }

    /// The login host (`ENTRA_LOGIN_ENDPOINT`), over HTTPS with a certificate of the
    /// sandbox CA ([`super::tls::ca_pem`]).
    pub fn login_url(&self) -> String {
        format!("{}/", self.served_tls.url())
    }

    /// The audience of a valid (issued, unexpired) access token.
    pub fn token_audience(&self, token: &str) -> Option<String> {
        self.st
            .lock()
            .tokens
            .get(token)
            .filter(|(exp, _)| *exp > Utc::now())
            .map(|(_, aud)| aud.clone())
    }

    /// A check that accepts exactly the valid tokens this simulator issued for `audience`,
    /// compared as Entra's `aud` claim is, character for character (for the Key Vault
    /// simulator and the mail sink).
    pub fn token_check(&self, audience: &str) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
        let sim = self.clone();
        let want = audience.to_string();
        Arc::new(move |t: &str| sim.token_audience(t).as_deref() == Some(want.as_str()))
    }
    /// The Graph host (`GRAPH_API_ENDPOINT`).
    pub fn graph_url(&self) -> String {
        format!("{}/", self.served.url())
    }
    /// Managed-identity endpoint (`IDENTITY_ENDPOINT`).
    pub fn msi_url(&self) -> String {
        format!("{}/msi/token", self.served.url())
    }
    pub fn tenant(&self) -> &str {
        &self.st.cfg.tenant
    }
    pub fn rp_id(&self) -> &str {
        &self.st.cfg.rp_id
    }

    pub fn add_user(&self, upn: &str, object_id: &str) {
        self.st.lock().users.push((upn.into(), object_id.into()));
    }
    /// Sets a user's `accountEnabled` and `userType` (`Member`, `Guest`).
    pub fn set_user_state(&self, object_id: &str, account_enabled: bool, user_type: &str) {
        self.st
            .lock()
            .user_state
            .insert(object_id.into(), (account_enabled, user_type.into()));
    }
    /// Replaces the tenant's passkey policy (Graph's JSON shape, see
    /// [`default_fido2_policy`]).
    pub fn set_fido2_policy(&self, policy: Value) {
        self.st.lock().policy = Some(policy);
    }
    /// Whether the app is refused reading the policy (403, as without
    /// Policy.Read.AuthenticationMethod).
    pub fn forbid_policy_read(&self, forbidden: bool) {
        self.st.lock().policy_forbidden = forbidden;
    }
    /// Whether user lookups with `$select` are refused (400).
    pub fn refuse_select(&self, refuse: bool) {
        self.st.lock().refuse_select = refuse;
    }
    /// Policy reads served so far.
    pub fn policy_reads(&self) -> usize {
        self.st.lock().policy_reads
    }
    pub fn add_group_member(&self, group_id: &str, object_id: &str) {
        self.st
            .lock()
            .groups
            .entry(group_id.into())
            .or_default()
            .push(object_id.into());
    }
    /// Methods registered for a user (by object id): (id, displayName).
    pub fn registered_methods(&self, object_id: &str) -> Vec<(String, String)> {
        self.st
            .lock()
            .methods
            .get(object_id)
            .map(|v| {
                v.iter()
                    .map(|m| (m.id.clone(), m.display_name.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Successful registrations so far, over all users.
    pub fn registration_count(&self) -> usize {
        self.st.lock().registrations
    }
    /// Token requests served (client secret, assertion or managed identity).
    pub fn token_requests(&self) -> usize {
        self.st.lock().token_requests
    }
    /// Makes every challenge issued so far expired.
    pub fn expire_challenges(&self) {
        let past = Utc::now() - Duration::seconds(1);
        for list in self.st.lock().challenges.values_mut() {
            for c in list.iter_mut() {
                c.1 = past;
            }
        }
    }
    /// Every Graph access token issued so far (for tests that grep logs for secrets).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.st.lock().tokens.keys().cloned().collect()
    }
    /// Adds a method directly (as if registered elsewhere).
    pub fn add_method(&self, object_id: &str, display_name: &str, credential_id: &[u8]) -> String {
        let id = b64(&random(16));
        self.st
            .lock()
            .methods
            .entry(object_id.into())
            .or_default()
            .push(Method {
                id: id.clone(),
                display_name: display_name.into(),
                credential_id: credential_id.to_vec(),
                created: Utc::now(),
            });
        id
    }

    /// Registers a web redirect URI of the app (where sign-ins may return).
    pub fn allow_redirect_uri(&self, uri: &str) {
        self.st.lock().redirect_uris.push(uri.into());
    }
    /// The people who may sign in.
    pub fn people(&self) -> &[Person] {
        &self.st.cfg.people
    }
    /// Authorization codes redeemed so far.
    pub fn sign_ins(&self) -> usize {
        self.st.lock().sign_ins
    }

    /// Mints an RS256 caller token for the connector's API.
    pub fn issue_caller_token(&self, claims: CallerClaims) -> String {
        mint(&self.st, &claims).unwrap_or_default()
    }
    /// The issuer of caller tokens (v2 form).
    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.served_tls.url(), self.st.cfg.tenant)
    }
    /// Replaces the caller-token signing key: the old one is withdrawn from the published
    /// set at once (as Entra does when a key is compromised).
    pub fn rotate_caller_signing_key(&self) {
        if let Ok(k) = new_signing_key() {
            *self.st.signing.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(k);
        }
    }

    /// The public signing key of caller tokens (JWK JSON).
    pub fn signing_public_jwk(&self) -> Value {
        crate::crypto::public_of(&self.st.signing_key())
            .map(|k| Value::Object(k.as_ref().clone()))
            .unwrap_or(Value::Null)
    }
}
