//! The token endpoints: client credentials (secret or federated assertion) and managed
//! identity; Graph tokens checked on every Graph call.

#[allow(unused_imports)]
use super::*;

pub(super) async fn token(
    State(st): State<St>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
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
    if form.get("grant_type").map(String::as_str) == Some("authorization_code") {
        let r = redeem_code(&st, &headers, &form);
        if r.status().is_success() {
            st.lock().sign_ins += 1;
        }
        return r;
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

/// Records a new opaque access token for `audience`; returns it with its lifetime.
pub(super) fn new_token(st: &St, audience: &str) -> (String, i64) {
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
pub(super) fn audience_of_scope(scope: &str) -> Option<String> {
    let s = scope.split_whitespace().next()?;
    Some(s.strip_suffix("/.default").unwrap_or(s).to_string())
}

/// The App Service / Container Apps managed-identity protocol (api-version 2019-08-01):
/// `GET {IDENTITY_ENDPOINT}?api-version=…&resource=…` with `X-IDENTITY-HEADER`.
pub(super) async fn msi_token(
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
pub(super) fn check_token(st: &St, headers: &HeaderMap) -> Result<(), Response> {
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
