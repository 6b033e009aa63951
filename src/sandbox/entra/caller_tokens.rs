//! Tokens for callers of the connector's own API: minting, the OpenID configuration and the
//! JWKS they are verified with.

#[allow(unused_imports)]
use super::*;

pub(super) fn default_sub() -> String {
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
            azp: default_azp(),
            idtyp: None,
        }
    }
}

pub(super) fn mint(st: &St, c: &CallerClaims) -> Result<String, String> {
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
    if let Some(a) = &c.azp {
        set(&mut p, "azp", json!(a))?;
    }
    if let Some(t) = &c.idtyp {
        set(&mut p, "idtyp", json!(t))?;
    }
    sign(st, &p)
}

/// Signs claims as the tenant does (RS256 with the published key, its `kid` named): caller
/// tokens and the ID tokens of people's sign-ins.
pub(super) fn sign(st: &St, p: &JwtPayload) -> Result<String, String> {
    let mut h = JwsHeader::new();
    h.set_token_type("JWT");
    let signing = st.signing_key();
    if let Some(kid) = signing.key_id() {
        h.set_key_id(kid);
    }
    let signer = RS256.signer_from_jwk(&signing).map_err(|e| e.to_string())?;
    josekit::jwt::encode_with_signer(p, &h, &signer).map_err(|e| e.to_string())
}

pub(super) async fn openid_configuration(
    State(st): State<St>,
    Path(tenant): Path<String>,
) -> Response {
    let base = st.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let http_base = st
        .http_base
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(json!({
        "issuer": format!("{base}/{tenant}/v2.0"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{http_base}/{tenant}/oauth2/v2.0/authorize"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "preferred_username", "oid", "tid", "roles"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

pub(super) async fn keys(State(st): State<St>) -> Json<Value> {
    let k = crate::crypto::public_of(&st.signing_key())
        .map(|k| Value::Object(k.as_ref().clone()))
        .unwrap_or(Value::Null);
    Json(json!({"keys": [k]}))
}

pub(super) async fn ctl_caller_token(
    State(st): State<St>,
    Json(c): Json<CallerClaims>,
) -> Response {
    match mint(&st, &c) {
        Ok(t) => Json(json!({"access_token": t, "token_type": "Bearer"})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
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
    /// The client the token was issued to (`azp`, as in Entra's v2 access tokens); `None`
    /// mints a token without it, as an ID token is.
    #[serde(default = "default_azp")]
    pub azp: Option<String>,
    /// `idtyp` (Entra's optional claim: `app` for app-only tokens, `user` otherwise).
    #[serde(default)]
    pub idtyp: Option<String>,
}

fn default_azp() -> Option<String> {
    Some("sandbox-client-app".into())
}
