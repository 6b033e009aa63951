//! Who may call what: the matrix of every protected endpoint × every kind of credential,
//! with tokens minted by the Entra simulator and validated by the production code.

use base64::Engine;
use fido_connector::auth::{generate_api_key, hash_api_key};
use fido_connector::sandbox::entra::CallerClaims;
use fido_connector::sandbox::run::SANDBOX_AUDIENCE;
use reqwest::Method;

use crate::support::{alice, shipment_body, Backend, World};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Unauthenticated,
    Forbidden,
    Passes,
}

/// Every protected route (and the variants of one route that need more): method, path,
/// whether it asks for CSV, the body, and the grants it needs (all of them).
struct Endpoint {
    method: &'static str,
    path: &'static str,
    csv: bool,
    body: Option<&'static str>,
    needs: &'static [&'static str],
}

const fn ep(method: &'static str, path: &'static str, needs: &'static [&'static str]) -> Endpoint {
    Endpoint {
        method,
        path,
        csv: false,
        body: None,
        needs,
    }
}

/// An invalid create body on purpose: a caller that passes authentication gets 400, never
/// a shipment.
const BAD_CREATE: &str = "bad-create";

const ENDPOINTS: [Endpoint; 11] = [
    Endpoint {
        body: Some(BAD_CREATE),
        ..ep("POST", "/v1/fpr/shipments", &["Shipments.Create"])
    },
    Endpoint {
        body: Some(BAD_CREATE),
        ..ep(
            "POST",
            "/v1/fpr/shipments?dry_run=true",
            &["Shipments.Create"],
        )
    },
    ep("GET", "/v1/fpr/shipments/unknown1", &["Shipments.Read"]),
    ep(
        "GET",
        "/v1/fpr/shipments?user_id=alice%40contoso.example",
        &["Shipments.Read"],
    ),
    ep(
        "GET",
        "/v1/fpr/shipments",
        &["Shipments.Read", "Shipments.Export"],
    ),
    Endpoint {
        csv: true,
        ..ep(
            "GET",
            "/v1/fpr/shipments?user_id=alice%40contoso.example",
            &["Shipments.Read", "Shipments.Export"],
        )
    },
    ep(
        "GET",
        "/v1/fpr/shipments/unknown1/events",
        &["Shipments.Read"],
    ),
    ep("GET", "/v1/operations/resend-pin/unknown1", &["Pin.Resend"]),
    ep(
        "GET",
        "/v1/operations/process-shipments",
        &["Operations.Run"],
    ),
    ep(
        "POST",
        "/v1/operations/retry/unknown1",
        &["Shipments.Manage"],
    ),
    Endpoint {
        body: Some(r#"{"resolution":"not_created"}"#),
        ..ep(
            "POST",
            "/v1/operations/retry/unknown1",
            &["Shipments.Manage"],
        )
    },
];

/// Every grant a route needs, once each.
const GRANTS: [&str; 6] = [
    "Shipments.Create",
    "Shipments.Read",
    "Pin.Resend",
    "Operations.Run",
    "Shipments.Export",
    "Shipments.Manage",
];

/// What a credential holds: nothing the service accepts, or these grants.
#[derive(Clone, Debug)]
enum Holds {
    Unauthenticated,
    Grants(Vec<&'static str>),
}

impl Holds {
    fn expect(&self, e: &Endpoint) -> Expect {
        match self {
            Holds::Unauthenticated => Expect::Unauthenticated,
            Holds::Grants(g) if e.needs.iter().all(|n| g.contains(n)) => Expect::Passes,
            Holds::Grants(_) => Expect::Forbidden,
        }
    }
}

/// (what, credential header, what it holds)
type Case<'a> = (String, Option<(&'a str, String)>, Holds);

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn claims(scp: Option<&str>) -> CallerClaims {
    let mut c = CallerClaims::for_audience(SANDBOX_AUDIENCE, &[]);
    c.scp = scp.map(str::to_string);
    c
}

fn with_roles(mut c: CallerClaims, roles: &[&str]) -> CallerClaims {
    c.roles = roles.iter().map(|r| r.to_string()).collect();
    c
}

/// The vendor's behaviour, for existing deployments that require assignment: a delegated
/// `create_request` alone grants everything. Off by default (see the matrix).
#[tokio::test]
async fn the_vendor_setting_lets_create_request_grant_everything() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert(
            "FIDO_CONNECTOR_VENDOR_SCOPE_GRANTS_ALL".into(),
            "true".into(),
        );
    })
    .await;
    let t =
        w.sb.entra
            .issue_caller_token(claims(Some("create_request")));
    let r = w
        .http
        .post(format!("{}/v1/fpr/shipments", w.base))
        .header("authorization", format!("Bearer {t}"))
        .json(&shipment_body(alice()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A scope naming one action still grants only that action without roles.
    let t =
        w.sb.entra
            .issue_caller_token(claims(Some("Shipments.Read")));
    let r = call(
        &w,
        &ep("GET", "/v1/operations/process-shipments", &[]),
        Some(("authorization", format!("Bearer {t}"))),
    )
    .await;
    assert_eq!(r.status(), 403);
    w.stop().await;
}

async fn call(w: &World, e: &Endpoint, auth: Option<(&str, String)>) -> reqwest::Response {
    let m = Method::from_bytes(e.method.as_bytes()).unwrap();
    let mut rb = w.http.request(m, format!("{}{}", w.base, e.path));
    match e.body {
        Some(BAD_CREATE) => {
            let mut body = shipment_body(alice());
            body["pin_request"]["length"] = serde_json::json!(2);
            rb = rb.json(&body);
        }
        Some(b) => rb = rb.header("content-type", "application/json").body(b),
        None => {}
    }
    if e.csv {
        rb = rb.header("accept", "text/csv");
    }
    if let Some((h, v)) = auth {
        rb = rb.header(h, v);
    }
    rb.send().await.unwrap()
}

fn verdict(status: u16) -> Expect {
    match status {
        401 => Expect::Unauthenticated,
        403 => Expect::Forbidden,
        _ => Expect::Passes,
    }
}

#[tokio::test]
async fn the_authorisation_matrix_holds_for_every_endpoint() {
    let reader_key = generate_api_key();
    let ops_key = generate_api_key();
    let (rk, ok) = (reader_key.clone(), ops_key.clone());
    let w = World::start_with(Backend::Embedded, move |env| {
        let admin = env["FIDO_CONNECTOR_API_KEYS"].clone();
        env.insert(
            "FIDO_CONNECTOR_API_KEYS".into(),
            format!(
                "{admin};reader:{}:Shipments.Read;ops:{}:Operations.Run+Pin.Resend",
                hash_api_key(&rk),
                hash_api_key(&ok)
            ),
        );
    })
    .await;
    let e = &w.sb.entra;
    let bearer = |t: String| Some(("authorization", format!("Bearer {t}")));
    let valid = e.issue_caller_token(claims(Some("create_request")));

    // Forged and invalid tokens.
    let mut expired = claims(Some("create_request"));
    expired.lifetime_secs = Some(-120);
    let mut early = claims(Some("create_request"));
    early.not_before_offset_secs = Some(600);
    let mut wrong_iss = claims(Some("create_request"));
    wrong_iss.iss = Some("https://login.microsoftonline.com/another-tenant/v2.0".into());
    let mut wrong_aud = claims(Some("create_request"));
    wrong_aud.aud = "api://someone-else".into();
    let parts: Vec<&str> = valid.split('.').collect();
    let mut header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    header["kid"] = "no-such-kid".into();
    let unknown_kid = format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        parts[1],
        parts[2]
    );
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    sig[10] ^= 0x55;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let public = e.signing_public_jwk().to_string();
    let hs = josekit::jws::HS256
        .signer_from_bytes(public.as_bytes())
        .unwrap();
    let mut h = josekit::jws::JwsHeader::new();
    h.set_key_id(header["kid"].as_str().unwrap());
    let payload = josekit::jwt::JwtPayload::from_map(
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let hs256 = josekit::jwt::encode_with_signer(&payload, &h, &hs).unwrap();

    let mut cases: Vec<Case> = vec![
        ("no credentials".into(), None, Holds::Unauthenticated),
        (
            "expired".into(),
            bearer(e.issue_caller_token(expired)),
            Holds::Unauthenticated,
        ),
        (
            "not yet valid".into(),
            bearer(e.issue_caller_token(early)),
            Holds::Unauthenticated,
        ),
        (
            "wrong issuer".into(),
            bearer(e.issue_caller_token(wrong_iss)),
            Holds::Unauthenticated,
        ),
        (
            "wrong audience".into(),
            bearer(e.issue_caller_token(wrong_aud)),
            Holds::Unauthenticated,
        ),
        (
            "unknown kid".into(),
            bearer(unknown_kid),
            Holds::Unauthenticated,
        ),
        (
            "tampered signature".into(),
            bearer(tampered),
            Holds::Unauthenticated,
        ),
        ("alg none".into(), bearer(none), Holds::Unauthenticated),
        (
            "oversized token".into(),
            bearer("e".repeat(20_000)),
            Holds::Unauthenticated,
        ),
        (
            "HS256 keyed with the public key".into(),
            bearer(hs256),
            Holds::Unauthenticated,
        ),
        (
            // A delegated scope says what the client may do for the user, not what the
            // user may do: without the user's app roles it grants nothing.
            "create_request scope without user roles".into(),
            bearer(valid.clone()),
            Holds::Grants(vec![]),
        ),
        (
            "create_request scope with every user role".into(),
            bearer(e.issue_caller_token(with_roles(claims(Some("create_request")), &GRANTS))),
            Holds::Grants(GRANTS.to_vec()),
        ),
        (
            "no scope and no role (not an access token for this API)".into(),
            bearer(e.issue_caller_token(claims(None))),
            Holds::Unauthenticated,
        ),
        (
            "an ID token (nonce), even with roles".into(),
            bearer(e.issue_caller_token({
                let mut c = with_roles(claims(None), &GRANTS);
                c.nonce = Some("n-0S6_WzA2Mj".into());
                c
            })),
            Holds::Unauthenticated,
        ),
        (
            "a token without azp or appid (an ID token for the API's app id, no nonce)".into(),
            bearer(e.issue_caller_token({
                let mut c = with_roles(claims(None), &GRANTS);
                c.azp = None;
                c
            })),
            Holds::Unauthenticated,
        ),
        (
            "an app-only token (idtyp app) with a stray create_request scope and no roles".into(),
            bearer(e.issue_caller_token({
                let mut c = claims(Some("create_request"));
                c.idtyp = Some("app".into());
                c
            })),
            Holds::Unauthenticated,
        ),
        (
            "admin API key".into(),
            Some(("x-api-key", w.sb.api_key.clone())),
            Holds::Grants(GRANTS.to_vec()),
        ),
        (
            "reader API key".into(),
            Some(("authorization", format!("Bearer {reader_key}"))),
            Holds::Grants(vec!["Shipments.Read"]),
        ),
        (
            "ops API key".into(),
            Some(("x-api-key", ops_key.clone())),
            Holds::Grants(vec!["Pin.Resend", "Operations.Run"]),
        ),
        (
            "unknown API key".into(),
            Some(("x-api-key", generate_api_key())),
            Holds::Unauthenticated,
        ),
    ];
    // Each fine-grained grant: as a delegated scope alone (nothing), as a scope with the
    // user's matching role, as create_request with that one user role, and as an
    // application role (app-only token).
    for (i, grant) in GRANTS.iter().copied().enumerate() {
        let expect = Holds::Grants(vec![grant]);
        cases.push((
            format!("scope {grant} without the user role"),
            bearer(e.issue_caller_token(claims(Some(grant)))),
            Holds::Grants(vec![]),
        ));
        cases.push((
            format!("scope {grant} with the user role"),
            bearer(e.issue_caller_token(with_roles(claims(Some(grant)), &[grant]))),
            expect.clone(),
        ));
        cases.push((
            format!("create_request with the user role {grant}"),
            bearer(e.issue_caller_token(with_roles(claims(Some("create_request")), &[grant]))),
            expect.clone(),
        ));
        let other = GRANTS[(i + 1) % GRANTS.len()];
        cases.push((
            format!("scope {other} with the user role {grant}: they must agree"),
            bearer(e.issue_caller_token(with_roles(claims(Some(other)), &[grant]))),
            Holds::Grants(vec![]),
        ));
        let mut role = claims(None);
        role.roles = vec![grant.to_string()];
        cases.push((
            format!("role {grant}"),
            bearer(e.issue_caller_token(role)),
            expect,
        ));
    }

    // The matrix covers every protected operation of the OpenAPI document (which lists
    // every route the router serves).
    let doc: serde_json::Value = w
        .http
        .get(format!("{}/v1/openapi.json", w.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut protected = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
            });
            if !secured {
                continue;
            }
            protected += 1;
            let template = |p: &str| {
                let p = p.split('?').next().unwrap().to_string();
                p.replace("unknown1", "{}")
            };
            let want = path.replace("{shipment_id}", "{}").replace("{id}", "{}");
            assert!(
                ENDPOINTS
                    .iter()
                    .any(|e| e.method.eq_ignore_ascii_case(method) && template(e.path) == want),
                "{method} {path} is protected but not in the matrix"
            );
        }
    }
    assert_eq!(protected, 7, "the document's protected operations");

    // An auditor's pair: the export needs both roles.
    cases.push((
        "roles Shipments.Read and Shipments.Export".into(),
        bearer(e.issue_caller_token(with_roles(
            claims(None),
            &["Shipments.Read", "Shipments.Export"],
        ))),
        Holds::Grants(vec!["Shipments.Read", "Shipments.Export"]),
    ));
    for (name, auth, holds) in &cases {
        for ep in &ENDPOINTS {
            let resp = call(&w, ep, auth.clone()).await;
            let status = resp.status().as_u16();
            let (method, path) = (ep.method, ep.path);
            assert_eq!(
                verdict(status),
                holds.expect(ep),
                "{name}: {method} {path} (csv {}) → {status}",
                ep.csv
            );
            if status == 401 {
                let www = resp.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .to_string();
                assert!(www.starts_with("Bearer error="), "{www}");
            }
            if status == 401 || status == 403 {
                let v: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(v["error_code"], "api_error");
            }
        }
    }
    // Nothing was created by any of these calls.
    assert_eq!(w.sb.ye.created_count(), 0);
    w.stop().await;
}

#[tokio::test]
async fn unknown_kids_refresh_the_signing_keys_at_most_once_per_cooldown() {
    let w = World::start(Backend::Embedded).await;
    let v = w.state.auth.token_validator().unwrap();
    let good =
        w.sb.entra
            .issue_caller_token(claims(Some("create_request")));
    assert!(v.validate(&good).await.is_ok());
    let after_first = v.key_fetches().await;
    assert_eq!(after_first, 1);
    let parts: Vec<&str> = good.split('.').collect();
    for i in 0..20 {
        let h = b64(format!(r#"{{"alg":"RS256","kid":"bogus-{i}"}}"#).as_bytes());
        assert!(v
            .validate(&format!("{h}.{}.{}", parts[1], parts[2]))
            .await
            .is_err());
    }
    assert_eq!(v.key_fetches().await, after_first, "no refresh storm");
    w.stop().await;
}

#[tokio::test]
async fn expiry_honours_exactly_one_leeway() {
    let w = World::start(Backend::Embedded).await;
    let v = w.state.auth.token_validator().unwrap();
    let leeway = fido_connector::auth::LEEWAY_SECS;
    let mut inside = claims(Some("create_request"));
    inside.lifetime_secs = Some(-(leeway - 10));
    assert!(v
        .validate(&w.sb.entra.issue_caller_token(inside))
        .await
        .is_ok());
    let mut outside = claims(Some("create_request"));
    outside.lifetime_secs = Some(-(leeway + 10));
    assert_eq!(
        v.validate(&w.sb.entra.issue_caller_token(outside))
            .await
            .unwrap_err(),
        "token expired"
    );
    w.stop().await;
}

/// The validated-token cache: a hit never outlives `exp` (plus the one leeway), the cache
/// stays within its bound however many tokens arrive, and a token whose signing key was
/// withdrawn is refused even though it was validated before.
#[tokio::test]
async fn the_validated_token_cache_honours_expiry_its_bound_and_withdrawn_keys() {
    use fido_connector::auth::{Authenticator, LEEWAY_SECS, TOKEN_CACHE_ENTRIES};
    use fido_connector::clock::ManualClock;
    use std::sync::Arc;

    let w = World::start(Backend::Embedded).await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let ca = std::fs::read(w.sb.config.outbound.extra_root_ca_pem.as_ref().unwrap()).unwrap();
    let http =
        fido_connector::upstream::http::build_client(std::time::Duration::from_secs(10), Some(&ca))
            .unwrap();
    let auth = Authenticator::new(
        &w.sb.config.caller_auth,
        clock.clone(),
        http,
        std::time::Duration::ZERO,
    )
    .unwrap();
    let v = auth.token_validator().unwrap();
    let daemon = |sub: &str, lifetime: i64| {
        let mut c = with_roles(claims(None), &["Shipments.Read"]);
        c.sub = sub.into();
        c.lifetime_secs = Some(lifetime);
        w.sb.entra.issue_caller_token(c)
    };

    // Expiry: cached, then refused once exp + leeway has passed on the service's clock.
    let t = daemon("short-lived", 120);
    assert!(v.validate(&t).await.is_ok());
    assert_eq!(v.cached_tokens(), 1);
    assert!(v.validate(&t).await.is_ok(), "a hit");
    clock.advance(chrono::Duration::seconds(120 + LEEWAY_SECS - 5));
    assert!(v.validate(&t).await.is_ok(), "inside the leeway");
    clock.advance(chrono::Duration::seconds(10));
    assert_eq!(v.validate(&t).await.unwrap_err(), "token expired");
    clock.set(chrono::Utc::now());

    // Withdrawn key: a token validated (and cached) under the old key is refused after the
    // key set no longer holds that key.
    let old = daemon("before-rotation", 3600);
    assert!(v.validate(&old).await.is_ok());
    assert!(v.validate(&old).await.is_ok());
    w.sb.entra.rotate_caller_signing_key();
    let new = daemon("after-rotation", 3600);
    assert!(v.validate(&new).await.is_ok(), "the new key is fetched");
    assert!(
        v.validate(&old).await.is_err(),
        "a token of a withdrawn key is refused, cached or not"
    );

    // Bound: many distinct tokens never hold more than the cache's capacity.
    for i in 0..TOKEN_CACHE_ENTRIES + 300 {
        assert!(v.validate(&daemon(&format!("d{i}"), 3600)).await.is_ok());
        assert!(v.cached_tokens() <= TOKEN_CACHE_ENTRIES);
    }
    w.stop().await;
}

/// Least privilege for bulk data and operator decisions: `Shipments.Read` looks up one
/// user's shipments but lists no one else's and exports nothing (`Shipments.Export`);
/// retry and resolve need `Shipments.Manage`, which the scheduler's `Operations.Run`
/// does not give.
#[tokio::test]
async fn bulk_listings_and_operator_decisions_need_their_own_roles() {
    let w = World::start(Backend::Embedded).await;
    let id = w.create_ok(alice()).await;
    let e = &w.sb.entra;
    let token = |roles: &[&str]| {
        let t = e.issue_caller_token(with_roles(claims(None), roles));
        ("authorization", format!("Bearer {t}"))
    };
    let get = |path: String, auth: (&'static str, String), csv: bool| {
        let mut rb = w
            .http
            .get(format!("{}{path}", w.base))
            .header(auth.0, auth.1);
        if csv {
            rb = rb.header("accept", "text/csv");
        }
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    let helpdesk = token(&["Shipments.Read"]);
    let upn = alice().replace('@', "%40");
    assert_eq!(
        get(
            format!("/v1/fpr/shipments?user_id={upn}"),
            helpdesk.clone(),
            false
        )
        .await,
        200,
        "one user's shipments"
    );
    assert_eq!(
        get("/v1/fpr/shipments".into(), helpdesk.clone(), false).await,
        403
    );
    assert_eq!(
        get(
            format!("/v1/fpr/shipments?user_id={upn}"),
            helpdesk.clone(),
            true
        )
        .await,
        403,
        "the CSV export"
    );
    let auditor = token(&["Shipments.Read", "Shipments.Export"]);
    assert_eq!(
        get("/v1/fpr/shipments".into(), auditor.clone(), false).await,
        200
    );
    assert_eq!(get("/v1/fpr/shipments".into(), auditor, true).await, 200);

    let retry = |auth: (&'static str, String)| {
        let rb = w
            .http
            .post(format!("{}/v1/operations/retry/{id}", w.base))
            .header(auth.0, auth.1);
        async move { rb.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        retry(token(&["Operations.Run"])).await,
        403,
        "the scheduler's role"
    );
    // Allowed to decide: the shipment is not failed, so the answer is 409, not 403.
    assert_eq!(retry(token(&["Shipments.Manage"])).await, 409);
    w.stop().await;
}
