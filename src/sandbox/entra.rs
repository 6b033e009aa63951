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

/// Claims of a caller token for the connector's API.
#[derive(Debug, Clone, Deserialize)]
pub struct CallerClaims {
    pub aud: String,
    #[serde(default)]
    pub scp: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default = "default_sub")]
    pub sub: String,
    /// Overrides for negative tests.
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub lifetime_secs: Option<i64>,
    #[serde(default)]
    pub not_before_offset_secs: Option<i64>,
    /// Set to mint an ID-token-like token (tests that ID tokens are refused).
    #[serde(default)]
    pub nonce: Option<String>,
}

fn default_sub() -> String {
    "sandbox-admin".into()
}

impl CallerClaims {
    /// A token for `aud` carrying these scopes (space-joined into `scp`).
    pub fn for_audience(aud: &str, scopes: &[&str]) -> Self {
        Self {
            aud: aud.into(),
            scp: Some(scopes.join(" ")),
            roles: vec![],
            sub: default_sub(),
            iss: None,
            lifetime_secs: None,
            not_before_offset_secs: None,
            nonce: None,
        }
    }
}

#[derive(Clone)]
struct St {
    inner: Arc<Mutex<Inner>>,
    cfg: Arc<EntraSimConfig>,
    faults: Faults,
    signing: Arc<Mutex<Arc<Jwk>>>,
    base: Arc<Mutex<String>>,
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

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message,
            "innerError": {"request-id": uuid::Uuid::new_v4().to_string(), "date": Utc::now().to_rfc3339()}}})),
    )
        .into_response()
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

fn mint(st: &St, c: &CallerClaims) -> Result<String, String> {
    let base = st.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = Utc::now().timestamp();
    let mut p = JwtPayload::new();
    let iss = c
        .iss
        .clone()
        .unwrap_or_else(|| format!("{base}/{}/v2.0", st.cfg.tenant));
    let set =
        |p: &mut JwtPayload, k: &str, v: Value| p.set_claim(k, Some(v)).map_err(|e| e.to_string());
    set(&mut p, "iss", json!(iss))?;
    set(&mut p, "aud", json!(c.aud))?;
    set(&mut p, "sub", json!(c.sub))?;
    set(&mut p, "oid", json!(c.sub))?;
    set(&mut p, "tid", json!(st.cfg.tenant))?;
    set(&mut p, "iat", json!(now))?;
    set(
        &mut p,
        "nbf",
        json!(now + c.not_before_offset_secs.unwrap_or(0)),
    )?;
    set(&mut p, "exp", json!(now + c.lifetime_secs.unwrap_or(3600)))?;
    if let Some(s) = &c.scp {
        set(&mut p, "scp", json!(s))?;
    }
    if !c.roles.is_empty() {
        set(&mut p, "roles", json!(c.roles))?;
    }
    if let Some(n) = &c.nonce {
        set(&mut p, "nonce", json!(n))?;
    }
    let mut h = JwsHeader::new();
    h.set_token_type("JWT");
    let signing = st.signing_key();
    if let Some(kid) = signing.key_id() {
        h.set_key_id(kid);
    }
    let signer = RS256.signer_from_jwk(&signing).map_err(|e| e.to_string())?;
    josekit::jwt::encode_with_signer(&p, &h, &signer).map_err(|e| e.to_string())
}

/// Records a new opaque access token for `audience`; returns it with its lifetime.
fn new_token(st: &St, audience: &str) -> (String, i64) {
    let token = b64(&random(48));
    let mut g = st.lock();
    g.token_requests += 1;
    g.tokens.insert(
        token.clone(),
        (
            Utc::now() + Duration::seconds(st.cfg.token_lifetime_secs),
            audience.to_string(),
        ),
    );
    (token, st.cfg.token_lifetime_secs)
}

/// The audience a v2 `scope` names (`https://graph.microsoft.com/.default` →
/// `https://graph.microsoft.com`).
fn audience_of_scope(scope: &str) -> Option<String> {
    let s = scope.split_whitespace().next()?;
    Some(s.strip_suffix("/.default").unwrap_or(s).to_string())
}

async fn token(
    State(st): State<St>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let bad = |code: &str, desc: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": code, "error_description": desc})),
        )
            .into_response()
    };
    if tenant != st.cfg.tenant {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request",
            "error_description": "AADSTS90002: Tenant not found."})),
        )
            .into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_id") != Some(&st.cfg.client_id)
    {
        return bad(
            "unauthorized_client",
            "AADSTS700016: Application not found.",
        );
    }
    let secret_ok = form.get("client_secret") == Some(&st.cfg.client_secret);
    let assertion_ok = st.cfg.federated_assertion.is_some()
        && form.get("client_assertion") == st.cfg.federated_assertion.as_ref();
    if !(secret_ok || assertion_ok) {
        return bad(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let Some(audience) = form.get("scope").and_then(|s| audience_of_scope(s)) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_codes": [90014],
                "error_description": "AADSTS90014: The required field 'scope' is missing from the credential."})),
        )
            .into_response();
    };
    let (token, lifetime) = new_token(&st, &audience);
    Json(json!({"token_type": "Bearer", "expires_in": lifetime,
        "ext_expires_in": lifetime, "access_token": token}))
    .into_response()
}

/// The App Service / Container Apps managed-identity protocol (api-version 2019-08-01):
/// `GET {IDENTITY_ENDPOINT}?api-version=…&resource=…` with `X-IDENTITY-HEADER`.
async fn msi_token(
    State(st): State<St>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let given = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if st.cfg.identity_header.is_none() || given != st.cfg.identity_header.as_deref() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request"})),
        )
            .into_response();
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_request", "error_description": "resource is required"})),
        )
            .into_response();
    };
    let (token, lifetime) = new_token(&st, resource);
    let expires_on = (Utc::now() + Duration::seconds(lifetime)).timestamp();
    Json(
        json!({"access_token": token, "expires_on": expires_on.to_string(),
        "resource": resource, "token_type": "Bearer", "client_id": st.cfg.client_id}),
    )
    .into_response()
}

/// Checks the Graph bearer token; `Err` is the 401 answer.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn check_token(st: &St, headers: &HeaderMap) -> Result<(), Response> {
    let t = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = t.is_some_and(|t| {
        st.lock()
            .tokens
            .get(t)
            .is_some_and(|(exp, aud)| *exp > Utc::now() && aud == GRAPH_AUDIENCE)
    });
    if valid && !st.faults.tokens_expired() {
        Ok(())
    } else {
        Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ))
    }
}

fn find_user(g: &Inner, id: &str) -> Option<(String, String)> {
    g.users
        .iter()
        .find(|(upn, oid)| oid.eq_ignore_ascii_case(id) || upn.eq_ignore_ascii_case(id))
        .cloned()
}

fn not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

async fn get_user(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, id)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let g = st.lock();
    if g.refuse_select && q.contains_key("$select") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Query option '$select' is not allowed.",
        );
    }
    let Some((upn, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let (enabled, user_type) = g
        .user_state
        .get(&oid)
        .cloned()
        .unwrap_or((true, "Member".into()));
    let all = json!({"id": oid, "userPrincipalName": upn,
        "displayName": upn.split('@').next().unwrap_or(""), "mail": upn,
        "accountEnabled": enabled, "userType": user_type});
    // Like Graph: the default property set without $select (no accountEnabled, no
    // userType), exactly the named properties with it.
    let selected: Vec<&str> = match q.get("$select") {
        Some(s) => s.split(',').map(str::trim).collect(),
        None => vec!["id", "userPrincipalName", "displayName", "mail"],
    };
    let mut body = serde_json::Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "https://graph.microsoft.com/{ver}/$metadata#users/$entity"
        )),
    );
    for k in selected {
        if let Some(v) = all.get(k) {
            body.insert(k.to_string(), v.clone());
        }
    }
    Json(Value::Object(body)).into_response()
}

async fn get_method_policy(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, method)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let mut g = st.lock();
    if !method.eq_ignore_ascii_case("fido2") {
        return graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The authentication method configuration was not found.",
        );
    }
    if g.policy_forbidden {
        return graph_error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Request Authorization failed",
        );
    }
    g.policy_reads += 1;
    let mut p = g.policy.clone().unwrap_or_else(default_fido2_policy);
    if let Some(o) = p.as_object_mut() {
        o.insert(
            "@odata.context".into(),
            json!(format!(
                "https://graph.microsoft.com/{ver}/$metadata#authenticationMethodConfigurations/$entity"
            )),
        );
        o.insert(
            "includeTargets@odata.context".into(),
            json!(format!(
                "https://graph.microsoft.com/{ver}/$metadata#policies/authenticationMethodsPolicy/authenticationMethodConfigurations('Fido2')/microsoft.graph.fido2AuthenticationMethodConfiguration/includeTargets"
            )),
        );
    }
    Json(p).into_response()
}

async fn check_member_groups(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let Some(ids) = body["groupIds"].as_array() else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "groupIds is required",
        );
    };
    if ids.len() > 20 {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "Too many groupIds: at most 20 are allowed",
        );
    }
    let member: Vec<&str> = ids
        .iter()
        .filter_map(Value::as_str)
        .filter(|gid| g.groups.get(*gid).is_some_and(|m| m.contains(&oid)))
        .collect();
    Json(json!({
        "@odata.context": format!("https://graph.microsoft.com/{ver}/$metadata#Collection(Edm.String)"),
        "value": member
    }))
    .into_response()
}

/// The three encodings Graph uses for credential ids in excludeCredentials.
fn odd_encoding(bytes: &[u8], i: usize) -> String {
    match i % 3 {
        0 => b64(bytes),
        1 => {
            let padded = base64::engine::general_purpose::URL_SAFE.encode(bytes);
            let pads = padded.matches('=').count();
            format!("{}{pads}", padded.trim_end_matches('='))
        }
        _ => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

async fn creation_options(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, id, op)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let minutes: i64 = if ver == "v1.0" {
        if op != "creationOptions" {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "v1.0 creationOptions takes no parameters",
            );
        }
        5
    } else {
        match op
            .strip_prefix("creationOptions(challengeTimeoutInMinutes=")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse::<i64>().ok())
        {
            Some(n) if (5..=43200).contains(&n) => n,
            _ => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "challengeTimeoutInMinutes must be 5..43200",
                )
            }
        }
    };
    let mut g = st.lock();
    let Some((upn, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    // A realistic, large opaque challenge (Entra's are several KB).
    let challenge = b64(&random(1536));
    let expires = Utc::now() + Duration::minutes(minutes);
    g.challenges
        .entry(oid.clone())
        .or_default()
        .push((challenge.clone(), expires));
    let exclude: Vec<Value> = g
        .methods
        .get(&oid)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| {
            json!({"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialDescriptor",
            "type": "public-key", "id": odd_encoding(&m.credential_id, i), "transports": ["usb"]})
        })
        .collect();
    Json(json!({
        "@odata.context": format!("https://graph.microsoft.com/{ver}/$metadata#microsoft.graph.webauthnCredentialCreationOptions"),
        "value": {
            "@odata.type": "#microsoft.graph.webauthnCredentialCreationOptions",
            "challengeTimeoutDateTime": expires.to_rfc3339(),
            "publicKey": {
                "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialCreationOptions",
                "challenge": challenge,
                "timeout": 0,
                "attestation": "direct",
                "rp": {"id": st.cfg.rp_id, "name": "Microsoft"},
                "user": {"id": b64(oid.as_bytes()), "name": upn, "displayName": upn},
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
                "excludeCredentials": exclude,
                "authenticatorSelection": {"authenticatorAttachment": "cross-platform",
                    "requireResidentKey": true, "userVerification": "required"},
                "extensions": {"hmacCreateSecret": true, "enforceCredentialProtectionPolicy": true,
                    "credentialProtectionPolicy": "userVerificationOptional"}
            }
        }
    }))
    .into_response()
}

async fn register(
    State(st): State<St>,
    headers: HeaderMap,
    Path((_ver, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let mut g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let pkc = &body["publicKeyCredential"];
    let (Some(cid), Some(cdj), Some(ao), Some(name)) = (
        pkc["id"].as_str(),
        pkc["response"]["clientDataJSON"].as_str(),
        pkc["response"]["attestationObject"].as_str(),
        body["displayName"].as_str(),
    ) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "publicKeyCredential is incomplete",
        );
    };
    let v = match super::webauthn::verify_registration(cid, cdj, ao, &st.cfg.rp_id) {
        Ok(v) => v,
        Err(e) => return graph_error(StatusCode::BAD_REQUEST, "invalidAttestation", &e),
    };
    let now = Utc::now();
    let issued = g.challenges.get_mut(&oid);
    let Some(list) = issued else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "challengeNotFound",
            "no challenge was issued to this user",
        );
    };
    let Some(pos) = list.iter().position(|(c, _)| *c == v.challenge) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "challengeNotFound",
            "the challenge was not issued to this user",
        );
    };
    if list[pos].1 <= now {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "challengeExpired",
            "the challenge has expired",
        );
    }
    if g.methods
        .values()
        .flatten()
        .any(|m| m.credential_id == v.credential_id)
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "credentialAlreadyRegistered",
            "this credential is already registered",
        );
    }
    let method = Method {
        id: b64(&random(16)),
        display_name: name.to_string(),
        credential_id: v.credential_id.clone(),
        created: now,
    };
    g.methods.entry(oid).or_default().push(method.clone());
    g.registrations += 1;
    (
        StatusCode::CREATED,
        Json(json!({"@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
            "id": method.id, "displayName": method.display_name, "createdDateTime": now.to_rfc3339(),
            "aaGuid": uuid::Uuid::from_bytes(v.aaguid).to_string(), "model": "fido-connector simulated key",
            "attestationCertificates": [], "attestationLevel": "notAttested"})),
    )
        .into_response()
}

fn method_json(m: &Method) -> Value {
    json!({"id": m.id, "displayName": m.display_name, "createdDateTime": m.created.to_rfc3339()})
}

async fn list_methods(
    State(st): State<St>,
    headers: HeaderMap,
    Path((_ver, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let list: Vec<Value> = g
        .methods
        .get(&oid)
        .into_iter()
        .flatten()
        .map(method_json)
        .collect();
    Json(json!({"value": list})).into_response()
}

async fn delete_method(
    State(st): State<St>,
    headers: HeaderMap,
    Path((_ver, id, method)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let mut g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let list = g.methods.entry(oid).or_default();
    let before = list.len();
    list.retain(|m| m.id != method);
    if list.len() == before {
        not_found(&method)
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn openid_configuration(State(st): State<St>, Path(tenant): Path<String>) -> Response {
    let base = st.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Json(json!({
        "issuer": format!("{base}/{tenant}/v2.0"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn keys(State(st): State<St>) -> Json<Value> {
    let k = crate::crypto::public_of(&st.signing_key())
        .map(|k| Value::Object(k.as_ref().clone()))
        .unwrap_or(Value::Null);
    Json(json!({"keys": [k]}))
}

async fn ctl_caller_token(State(st): State<St>, Json(c): Json<CallerClaims>) -> Response {
    match mint(&st, &c) {
        Ok(t) => Json(json!({"access_token": t, "token_type": "Bearer"})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// `{"id": UPN or object id, "account_enabled": bool, "user_type": "Member"|"Guest"}`.
async fn ctl_user_state(State(st): State<St>, Json(v): Json<Value>) -> StatusCode {
    let mut g = st.lock();
    let Some((_, oid)) = v["id"].as_str().and_then(|id| find_user(&g, id)) else {
        return StatusCode::NOT_FOUND;
    };
    let enabled = v["account_enabled"].as_bool().unwrap_or(true);
    let user_type = v["user_type"].as_str().unwrap_or("Member").to_string();
    g.user_state.insert(oid, (enabled, user_type));
    StatusCode::NO_CONTENT
}

/// The passkey policy in Graph's shape; `{}` restores the default.
async fn ctl_fido2_policy(State(st): State<St>, Json(v): Json<Value>) -> StatusCode {
    st.lock().policy = v.as_object().filter(|o| !o.is_empty()).map(|_| v.clone());
    StatusCode::NO_CONTENT
}

async fn ctl_add_user(State(st): State<St>, Json(v): Json<Value>) -> StatusCode {
    match (v["upn"].as_str(), v["id"].as_str()) {
        (Some(upn), Some(id)) => {
            st.lock().users.push((upn.into(), id.into()));
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn ctl_methods(State(st): State<St>) -> Json<Value> {
    let g = st.lock();
    Json(json!(g
        .methods
        .iter()
        .map(|(u, ms)| (u.clone(), ms.iter().map(method_json).collect::<Vec<_>>()))
        .collect::<HashMap<_, _>>()))
}
