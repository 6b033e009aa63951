//! Sign-in for people (the console): the authorization endpoint of the OpenID Connect code
//! flow, with a page to pick a sandbox person instead of a password, and the
//! `authorization_code` grant of the token endpoint (PKCE S256 required, client secret
//! checked, one use per code, redirect URI compared exactly), issuing an RS256 ID token
//! with the person's app roles in `roles`, as Entra does.

#[allow(unused_imports)]
use super::*;

/// A person of the sandbox tenant who may sign in to the console.
#[derive(Debug, Clone)]
pub struct Person {
    /// Short name on the picker (`helpdesk`).
    pub key: String,
    pub name: String,
    pub upn: String,
    pub object_id: String,
    /// App roles assigned to the person on the connector's enterprise application.
    pub roles: Vec<String>,
}

impl Person {
    fn new(key: &str, name: &str, object_id: &str, roles: &[&str]) -> Self {
        Self {
            key: key.into(),
            name: name.into(),
            upn: format!("{key}@contoso.example"),
            object_id: object_id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }
}

/// The sandbox's people: a helpdesk agent, an operator, an administrator, and someone the
/// application knows but who holds no role.
pub fn default_people() -> Vec<Person> {
    vec![
        Person::new(
            "helpdesk",
            "Hana Helpdesk",
            "0b7c1d9e-1111-4a55-9c1e-000000000001",
            &["Shipments.Read", "Pin.Resend"],
        ),
        Person::new(
            "operator",
            "Omar Operator",
            "0b7c1d9e-2222-4a55-9c1e-000000000002",
            &[
                "Shipments.Read",
                "Pin.Resend",
                "Shipments.Manage",
                "Operations.Run",
                "Shipments.Export",
            ],
        ),
        Person::new(
            "admin",
            "Ada Admin",
            "0b7c1d9e-3333-4a55-9c1e-000000000003",
            &[
                "Shipments.Create",
                "Shipments.Read",
                "Pin.Resend",
                "Shipments.Manage",
                "Operations.Run",
                "Shipments.Export",
            ],
        ),
        Person::new(
            "noroles",
            "Nico Noroles",
            "0b7c1d9e-4444-4a55-9c1e-000000000004",
            &[],
        ),
    ]
}

/// An issued authorization code, until redeemed (once) or expired.
#[derive(Debug, Clone)]
pub(super) struct Code {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    person: String,
    expires: DateTime<Utc>,
}

const AUTHORIZE_PARAMS: [&str; 7] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
];

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn aad_error(code: &str, desc: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html lang=\"en\"><head><title>Sign-in error</title></head><body><main><h1>Sign-in error</h1><p>{}: {}</p></main></body></html>",
            html_escape(code),
            html_escape(desc)
        ),
    )
        .into_response()
}

/// Checks an authorization request as Entra does before showing its sign-in page.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn check_request(st: &St, tenant: &str, q: &HashMap<String, String>) -> Result<(), Response> {
    if tenant != st.cfg.tenant {
        return Err(aad_error("AADSTS90002", "Tenant not found."));
    }
    if q.get("client_id") != Some(&st.cfg.client_id) {
        return Err(aad_error(
            "AADSTS700016",
            "Application with the identifier was not found in the directory.",
        ));
    }
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    if !st.lock().redirect_uris.contains(&redirect) {
        return Err(aad_error(
            "AADSTS50011",
            "The redirect URI specified in the request does not match the redirect URIs configured for the application.",
        ));
    }
    if q.get("response_type").map(String::as_str) != Some("code") {
        return Err(aad_error(
            "AADSTS700054",
            "response_type 'code' is required.",
        ));
    }
    if q.get("code_challenge").is_none_or(|c| c.len() < 43)
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return Err(aad_error(
            "AADSTS9002325",
            "Proof Key for Code Exchange is required for this request (S256).",
        ));
    }
    if !q
        .get("scope")
        .is_some_and(|s| s.split_whitespace().any(|x| x == "openid"))
    {
        return Err(aad_error(
            "AADSTS900144",
            "The scope must include 'openid'.",
        ));
    }
    Ok(())
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: the person picker.
pub(super) async fn authorize(
    State(st): State<St>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_request(&st, &tenant, &q) {
        return r;
    }
    let mut hidden = String::new();
    for k in AUTHORIZE_PARAMS
        .iter()
        .chain(["code_challenge_method"].iter())
    {
        if let Some(v) = q.get(*k) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                html_escape(v)
            ));
        }
    }
    let people: String = st
        .cfg
        .people
        .iter()
        .map(|p| {
            let roles = if p.roles.is_empty() {
                "no roles".to_string()
            } else {
                p.roles.join(", ")
            };
            format!(
                "<li><button type=\"submit\" name=\"person\" value=\"{}\">{} <small>({}; {})</small></button></li>",
                html_escape(&p.key),
                html_escape(&p.name),
                html_escape(&p.upn),
                html_escape(&roles)
            )
        })
        .collect();
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sandbox sign-in</title></head>\
         <body><main><h1>Sign in to the sandbox tenant</h1><p>Pick who you are. (Entra ID asks for a password or a passkey here.)</p>\
         <form method=\"post\">{hidden}<ul>{people}</ul></form></main></body></html>"
    );
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            (
                "content-security-policy",
                "default-src 'none'; form-action *; frame-ancestors 'none'",
            ),
        ],
        page,
    )
        .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: the person picked; back to the client with a
/// code.
pub(super) async fn authorize_pick(
    State(st): State<St>,
    Path(tenant): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_request(&st, &tenant, &f) {
        return r;
    }
    let Some(person) = f
        .get("person")
        .and_then(|k| st.cfg.people.iter().find(|p| &p.key == k))
    else {
        return aad_error("AADSTS50034", "The user account does not exist.");
    };
    let code = b64(&random(32));
    let redirect_uri = f.get("redirect_uri").cloned().unwrap_or_default();
    st.lock().codes.insert(
        code.clone(),
        Code {
            client_id: st.cfg.client_id.clone(),
            redirect_uri: redirect_uri.clone(),
            nonce: f.get("nonce").cloned(),
            challenge: f.get("code_challenge").cloned().unwrap_or_default(),
            person: person.key.clone(),
            expires: Utc::now() + Duration::minutes(10),
        },
    );
    let mut to = match url::Url::parse(&redirect_uri) {
        Ok(u) => u,
        Err(_) => return aad_error("AADSTS50011", "Bad redirect URI."),
    };
    {
        let mut qp = to.query_pairs_mut();
        qp.append_pair("code", &code);
        if let Some(s) = f.get("state") {
            qp.append_pair("state", s);
        }
    }
    (StatusCode::FOUND, [("location", to.to_string())]).into_response()
}

/// The client's credential on a token request: `client_secret_post` or
/// `client_secret_basic`.
fn client_credential(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) {
        return Some((id.clone(), secret.clone()));
    }
    let basic = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(basic)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((dec(id), dec(secret)))
}

/// The `authorization_code` grant of the token endpoint.
pub(super) fn redeem_code(
    st: &St,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Response {
    let bad = |status: StatusCode, code: &str, desc: &str| {
        (
            status,
            Json(json!({"error": code, "error_description": desc})),
        )
            .into_response()
    };
    let Some((client_id, secret)) = client_credential(headers, form) else {
        return bad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    if client_id != st.cfg.client_id || secret != st.cfg.client_secret {
        return bad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let code = form.get("code").cloned().unwrap_or_default();
    // One use: taken out whatever follows.
    let Some(c) = st.lock().codes.remove(&code) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS54005: OAuth2 Authorization code was already redeemed or is not valid.",
        );
    };
    if c.expires < Utc::now() {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS70008: The provided authorization code or refresh token has expired.",
        );
    }
    if c.client_id != client_id || form.get("redirect_uri") != Some(&c.redirect_uri) {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS500112: The reply address does not match the reply address provided when requesting the authorization code.",
        );
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let computed = b64(&sha2::Sha256::digest(verifier.as_bytes()));
    if verifier.len() < 43 || computed != c.challenge {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        );
    }
    let Some(person) = st.cfg.people.iter().find(|p| p.key == c.person) else {
        return bad(StatusCode::BAD_REQUEST, "invalid_grant", "unknown person");
    };
    let id_token = match id_token(st, person, c.nonce.as_deref()) {
        Ok(t) => t,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    // The access token is for Graph (`openid profile` alone yields one); the console does
    // not use it.
    let (access, lifetime) = new_token(st, GRAPH_AUDIENCE);
    Json(json!({
        "token_type": "Bearer",
        "scope": "openid profile",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
        "id_token": id_token,
    }))
    .into_response()
}

/// An ID token as Entra's v2 endpoint issues it to the app.
fn id_token(st: &St, p: &Person, nonce: Option<&str>) -> Result<String, String> {
    let base = st.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = Utc::now().timestamp();
    let mut claims = JwtPayload::new();
    let mut set = |k: &str, v: Value| claims.set_claim(k, Some(v)).map_err(|e| e.to_string());
    set("iss", json!(format!("{base}/{}/v2.0", st.cfg.tenant)))?;
    set("aud", json!(st.cfg.client_id))?;
    set("sub", json!(format!("pairwise-{}", p.object_id)))?;
    set("oid", json!(p.object_id))?;
    set("tid", json!(st.cfg.tenant))?;
    set("name", json!(p.name))?;
    set("preferred_username", json!(p.upn))?;
    set("iat", json!(now))?;
    set("nbf", json!(now))?;
    set("exp", json!(now + 3600))?;
    set("ver", json!("2.0"))?;
    if let Some(n) = nonce {
        set("nonce", json!(n))?;
    }
    if !p.roles.is_empty() {
        set("roles", json!(p.roles))?;
    }
    sign(st, &claims)
}
