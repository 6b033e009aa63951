//! The helpdesk console, under `/console` on the API's listener: find a user, see their
//! keys, resend a PIN, retry or resolve a shipment, order keys one by one or from a CSV.
//! Server-rendered HTML that works without script; every action goes through the same
//! lifecycle functions as the API and is audited with the person's object id.
//!
//! Sign-in is Entra ID's authorization code flow with PKCE ([`oidc`]); what a person may do
//! follows the app roles in their ID token, as for the API. The session is one encrypted
//! cookie ([`session`]). Off unless `FIDO_CONNECTOR_CONSOLE_REDIRECT_URI` is set.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::Key;
use base64::Engine;
use maud::Markup;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::auth::Permission;
use crate::config::ConsoleConfig;
use crate::lifecycle::list::{self, ListFilter};

pub mod oidc;
pub mod pages;
pub mod session;

use pages::Frame;
use session::{NoSession, Session};

/// The console, built when configured.
pub struct Console {
    app: AppState,
    cfg: ConsoleConfig,
    key: Key,
    oidc: oidc::Oidc,
    origin: String,
    /// The front page's counts and attention list, read at most every
    /// [`OVERVIEW_TTL`] by this process (its cost follows the open shipments).
    overview: tokio::sync::Mutex<Option<(std::time::Instant, Arc<list::Overview>)>>,
}

/// How old the front page's overview may be.
pub const OVERVIEW_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConsoleError(pub String);

impl Console {
    /// Reads the client secret and the cookie key from the secret store.
    pub async fn build(app: AppState, cfg: ConsoleConfig) -> Result<Arc<Self>, ConsoleError> {
        let deps = app.deps.clone();
        let read = |name: String| {
            let secrets = deps.secrets.clone();
            async move {
                secrets
                    .get(&name)
                    .await
                    .map_err(|e| ConsoleError(format!("console: secret `{name}`: {e}")))?
                    .ok_or_else(|| {
                        ConsoleError(format!(
                            "console: secret `{name}` is missing from the secret store (FIDO_CONNECTOR_CONSOLE_REDIRECT_URI turns the console on; it needs it)"
                        ))
                    })
            }
        };
        let secret = read(cfg.client_secret_name.clone()).await?;
        let key_b64 = read(cfg.cookie_key_name.clone()).await?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key_b64.expose_secret().trim())
            .map_err(|_| {
                ConsoleError(format!(
                    "console: secret `{}` must be base64 (at least 64 random bytes)",
                    cfg.cookie_key_name
                ))
            })?;
        let key = Key::try_from(raw.as_slice()).map_err(|_| {
            ConsoleError(format!(
                "console: secret `{}` must hold at least 64 random bytes",
                cfg.cookie_key_name
            ))
        })?;
        let entra = &deps.config.entra;
        let issuer = format!(
            "{}/{}/v2.0",
            entra.login_endpoint.as_str().trim_end_matches('/'),
            entra.tenant_id
        );
        let oidc = oidc::Oidc::new(
            issuer,
            cfg.client_id
                .clone()
                .unwrap_or_else(|| entra.client_id.clone()),
            SecretString::from(secret.expose_secret().to_string()),
            cfg.redirect_uri.to_string(),
            deps.http.clone(),
        );
        Ok(Arc::new(Self {
            origin: cfg.origin(),
            app,
            cfg,
            key,
            oidc,
            overview: tokio::sync::Mutex::new(None),
        }))
    }

    async fn overview(&self) -> Result<Arc<list::Overview>, crate::lifecycle::LifecycleError> {
        let mut slot = self.overview.lock().await;
        if let Some((at, o)) = slot.as_ref() {
            if at.elapsed() < OVERVIEW_TTL {
                return Ok(o.clone());
            }
        }
        let o = Arc::new(list::overview(&self.app.deps, 50).await?);
        *slot = Some((std::time::Instant::now(), o.clone()));
        Ok(o)
    }

    fn now(&self) -> i64 {
        self.app.deps.clock.now().timestamp()
    }

    /// The session of a request, checked against the store's sign-out marks; refreshed
    /// (a new cookie) when last seen more than a minute ago.
    async fn session(&self, headers: &HeaderMap) -> Result<(Session, Option<Response>), Page> {
        let now = self.now();
        let (max, idle) = (
            self.cfg.session_max.as_secs() as i64,
            self.cfg.session_idle.as_secs() as i64,
        );
        let mut s = session::read(headers, &self.key, now, max, idle).map_err(|why| {
            Page::SignIn(match why {
                NoSession::Missing => "Sign in to use the console.",
                NoSession::Expired => "Your session has ended. Sign in again.",
            })
        })?;
        match self.app.deps.store.lease_holder(&s.signout_mark()).await {
            Ok(None) => {}
            Ok(Some(_)) => return Err(Page::SignIn("You signed out. Sign in again.")),
            Err(e) => return Err(Page::Unavailable(e.to_string())),
        }
        let refresh = if now - s.seen > (idle / 4).clamp(1, 60) {
            s.seen = now;
            Some(session::store(&self.key, &s, max, now).into_response())
        } else {
            None
        };
        Ok((s, refresh))
    }

    /// The session of a form post that changes something: its Origin and CSRF token
    /// checked first, then the permission, if one is needed.
    async fn posted(
        &self,
        headers: &HeaderMap,
        csrf: Option<&str>,
        needs: Option<Permission>,
    ) -> Result<Session, Page> {
        let (s, _) = self.session(headers).await?;
        session::check_post(headers, &self.origin, &s, csrf).map_err(Page::Forged)?;
        if let Some(p) = needs {
            require(&s, p)?;
        }
        Ok(s)
    }

    fn frame<'a>(&self, s: &'a Session) -> Frame<'a> {
        let idps = &self.app.deps.idps;
        let instances = if idps.multi() {
            let default = idps.config().default.clone();
            let mut all = vec![default.clone()];
            all.extend(idps.names().into_iter().filter(|n| *n != default));
            all
        } else {
            Vec::new()
        };
        Frame {
            session: Some(s),
            tz: s.tz.as_deref().and_then(|z| z.parse().ok()),
            instances,
        }
    }
}

/// What a handler answers besides its page.
enum Page {
    SignIn(&'static str),
    Forbidden(Permission),
    Forged(session::Forged),
    NotFound(String),
    Unavailable(String),
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let f = Frame {
            session: None,
            tz: None,
            instances: Vec::new(),
        };
        match self {
            Page::SignIn(why) => (StatusCode::UNAUTHORIZED, html(pages::signin_needed(why))).into_response(),
            Page::Forbidden(p) => (
                StatusCode::FORBIDDEN,
                html(pages::message(
                    &f,
                    "Not allowed",
                    &format!("This needs the app role {}, which you do not hold.", p.as_str()),
                )),
            )
                .into_response(),
            Page::Forged(why) => (
                StatusCode::FORBIDDEN,
                html(pages::message(
                    &f,
                    "Refused",
                    match why {
                        session::Forged::Origin => "The form came from another site. Nothing was done.",
                        session::Forged::Token => "The form has expired or was not sent by this console. Reload the page and try again.",
                    },
                )),
            )
                .into_response(),
            Page::NotFound(what) => {
                (StatusCode::NOT_FOUND, html(pages::message(&f, "Not found", &what))).into_response()
            }
            Page::Unavailable(why) => {
                tracing::warn!(error = %why, "console: a dependency is unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    html(pages::message(
                        &f,
                        "Unavailable",
                        "The connector cannot reach its store or an upstream right now. Try again in a minute.",
                    )),
                )
                    .into_response()
            }
        }
    }
}

fn html(m: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// A page, with the refreshed session cookie when there is one.
fn with_cookie(page: Response, refresh: Option<Response>) -> Response {
    match refresh {
        None => page,
        Some(r) => {
            let mut page = page;
            for v in r.headers().get_all(header::SET_COOKIE) {
                page.headers_mut().append(header::SET_COOKIE, v.clone());
            }
            page
        }
    }
}

fn require(s: &Session, p: Permission) -> Result<(), Page> {
    if s.may(p) {
        Ok(())
    } else {
        Err(Page::Forbidden(p))
    }
}

fn lifecycle_page(e: crate::lifecycle::LifecycleError) -> Page {
    use crate::lifecycle::LifecycleError as L;
    match e {
        L::NotFound(id) => Page::NotFound(format!("No shipment {id}.")),
        other => Page::Unavailable(other.to_string()),
    }
}

type C = Arc<Console>;

/// The console's routes, with their security headers.
pub fn router(console: C) -> Router {
    let csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
               frame-ancestors 'none'; base-uri 'none'";
    let config = console.app.deps.config.clone();
    let routes = Router::new()
        .route("/console", get(find))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/users/{user}", get(user))
        .route("/console/shipments/{id}", get(shipment))
        .route(
            "/console/shipments/{id}/resend",
            get(confirm_resend).post(resend),
        )
        .route("/console/shipments/{id}/retry", post(retry))
        .route("/console/order", get(order_form).post(order))
        .route("/console/bulk", get(bulk_form).post(bulk))
        .route("/console/bulk/result.csv", post(bulk_result))
        .route("/console/settings", get(settings_form).post(settings))
        .route("/console/signin", get(signin))
        .route("/console/auth/callback", get(callback))
        .route("/console/signout", post(signout))
        .route("/console/signed-out", get(signed_out))
        .route("/console/static/console.css", get(css));
    // The API's bounds: a time limit per request, shedding past the concurrency limit
    // (the console's own), the panic guard.
    let routes = crate::api::limits::apply(routes, &config.server)
        .with_state(console)
        .layer(axum::middleware::from_fn(to_signin))
        // A bulk file of 1,000 rows fits.
        .layer(axum::extract::DefaultBodyLimit::max(
            config.server.max_body_bytes.max(1024 * 1024),
        ))
        .layer(axum::middleware::map_response(
            move |mut r: Response| async move {
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(csp),
                );
                h.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                // Same-origin: form posts carry the console's Origin; nothing leaks elsewhere.
                h.insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                );
                h.entry(header::CACHE_CONTROL)
                    .or_insert(HeaderValue::from_static("no-store"));
                r
            },
        ));
    routes
}

/// A page asked for without a usable session leads to sign-in, and back to the page after.
async fn to_signin(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let get = req.method() == axum::http::Method::GET;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let r = next.run(req).await;
    if get && r.status() == StatusCode::UNAUTHORIZED {
        let back = percent_encoding::utf8_percent_encode(&path, percent_encoding::NON_ALPHANUMERIC);
        return Redirect::to(&format!("/console/signin?return={back}")).into_response();
    }
    r
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

// ------------------------------------------------------------------ sign-in

#[derive(serde::Deserialize)]
struct SignInQuery {
    #[serde(default)]
    r#return: Option<String>,
}

/// Only a path of the console itself (no open redirect).
fn safe_return(r: Option<&str>) -> String {
    match r {
        Some(p) if p.starts_with("/console") && !p.starts_with("//") && !p.contains('\\') => {
            p.to_string()
        }
        _ => "/console".into(),
    }
}

async fn signin(State(c): State<C>, Query(q): Query<SignInQuery>) -> Response {
    match c
        .oidc
        .begin(&safe_return(q.r#return.as_deref()), c.now())
        .await
    {
        Ok((url, pending)) => {
            let jar = session::store_pending(&c.key, &pending);
            (jar, Redirect::to(url.as_str())).into_response()
        }
        Err(e) => Page::Unavailable(format!("sign-in: {e}")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(State(c): State<C>, headers: HeaderMap, Query(q): Query<Callback>) -> Response {
    let f = Frame {
        session: None,
        tz: None,
        instances: Vec::new(),
    };
    let refuse = |text: String| {
        (
            StatusCode::BAD_REQUEST,
            session::clear(&c.key),
            html(pages::message(&f, "Sign-in failed", &text)),
        )
            .into_response()
    };
    if let Some(e) = q.error {
        return refuse(format!(
            "Entra ID answered {e}: {}",
            q.error_description.unwrap_or_default()
        ));
    }
    let Some(pending) = session::read_pending(&headers, &c.key) else {
        return refuse("The sign-in took too long or began elsewhere. Sign in again.".into());
    };
    let state_ok = q.state.as_deref().is_some_and(|s| {
        use subtle::ConstantTimeEq;
        bool::from(s.as_bytes().ct_eq(pending.state.as_bytes()))
    });
    if !state_ok || c.now() - pending.started > 600 {
        return refuse(
            "The sign-in does not match the one this browser began. Sign in again.".into(),
        );
    }
    let Some(code) = q.code else {
        return refuse("Entra ID sent no authorization code.".into());
    };
    let return_to = pending.return_to.clone();
    match c.oidc.finish(code, pending).await {
        Ok(who) => {
            let now = c.now();
            let s = Session {
                sid: session::random_token(),
                oid: who.object_id,
                name: who.name,
                username: who.username,
                roles: who.roles,
                issued: now,
                seen: now,
                csrf: session::random_token(),
                tz: None,
            };
            crate::auth::audit(&s.caller(), "console.signin", None);
            let jar = session::store(&c.key, &s, c.cfg.session_max.as_secs() as i64, now);
            // The pending cookie is done with.
            let mut r = (jar, Redirect::to(&return_to)).into_response();
            r.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_static(
                    "__Host-fc-signin=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
                ),
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in failed");
            refuse(format!("The sign-in could not be completed: {e}"))
        }
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn signout(
    State(c): State<C>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    let s = c.posted(&headers, form.csrf.as_deref(), None).await?;
    let now = c.app.deps.clock.now();
    let until = chrono::DateTime::from_timestamp(s.issued, 0).unwrap_or(now)
        + chrono::Duration::seconds(c.cfg.session_max.as_secs() as i64 + 60);
    c.app
        .deps
        .store
        .try_acquire_lease(&s.signout_mark(), "signed-out", now, until)
        .await
        .map_err(|e| Page::Unavailable(e.to_string()))?;
    crate::auth::audit(&s.caller(), "console.signout", None);
    Ok((session::clear(&c.key), Redirect::to("/console/signed-out")).into_response())
}

async fn signed_out() -> Response {
    html(pages::signed_out())
}

// ------------------------------------------------------------------ pages

#[derive(serde::Deserialize)]
struct FindQuery {
    #[serde(default)]
    q: String,
}

fn looks_like_user(q: &str) -> bool {
    q.contains('@') || uuid::Uuid::parse_str(q).is_ok()
}

async fn find(
    State(c): State<C>,
    headers: HeaderMap,
    Query(fq): Query<FindQuery>,
) -> Result<Response, Page> {
    let (s, refresh) = c.session(&headers).await?;
    let f = c.frame(&s);
    if s.roles.is_empty() || !s.may(Permission::ShipmentsRead) {
        return Ok(with_cookie(html(pages::no_roles(&f)), refresh));
    }
    let deps = &c.app.deps;
    let q = fq.q.trim();
    let mut notice = None;
    if !q.is_empty() {
        crate::auth::audit(&s.caller(), "console.find", None);
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        if looks_like_user(q) {
            return Ok(Redirect::to(&format!("/console/users/{}", enc(q))).into_response());
        }
        if let Ok(serial) = q.parse::<u64>() {
            match list::find_serial(deps, serial, 20_000)
                .await
                .map_err(lifecycle_page)?
            {
                Some(it) => {
                    let id = it.shipment_id.unwrap_or(it.request_id);
                    return Ok(
                        Redirect::to(&format!("/console/shipments/{}", enc(&id))).into_response()
                    );
                }
                None => {
                    notice = Some(format!(
                        "No key with serial number {serial} among the newest 20,000 shipments."
                    ))
                }
            }
        } else if crate::domain::fields::ShipmentId::try_from(q.to_string()).is_ok() {
            match crate::lifecycle::list::history(deps, q).await {
                Ok(h) => {
                    let id = h.shipment_id.unwrap_or(h.request_id);
                    return Ok(
                        Redirect::to(&format!("/console/shipments/{}", enc(&id))).into_response()
                    );
                }
                Err(crate::lifecycle::LifecycleError::NotFound(_)) => {
                    notice = Some(format!("No shipment, request or user matches “{q}”."))
                }
                Err(e) => return Err(lifecycle_page(e)),
            }
        } else {
            notice = Some(format!(
                "“{q}” is not a UPN, object id, shipment id or serial number."
            ));
        }
    }
    let overview = c.overview().await.map_err(lifecycle_page)?;
    Ok(with_cookie(
        html(pages::find(&f, q, notice.as_deref(), &overview)),
        refresh,
    ))
}

async fn user(
    State(c): State<C>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Result<Response, Page> {
    let (s, refresh) = c.session(&headers).await?;
    require(&s, Permission::ShipmentsRead)?;
    crate::auth::audit(&s.caller(), "console.user", None);
    let filter = ListFilter {
        user: Some(user.trim().to_string()),
        ..Default::default()
    };
    let page = list::list_shipments(&c.app.deps, &filter, None, 100)
        .await
        .map_err(lifecycle_page)?;
    let more = page.next_cursor.is_some();
    Ok(with_cookie(
        html(pages::user(&c.frame(&s), user.trim(), &page.items, more)),
        refresh,
    ))
}

fn resends_left(c: &Console, rec: &crate::domain::ShipmentRecord) -> usize {
    let mail = &c.app.deps.config.mail;
    let now = c.app.deps.clock.now();
    let window =
        chrono::Duration::from_std(mail.resend_window).unwrap_or(chrono::Duration::hours(1));
    let used = rec.resends.iter().filter(|t| **t > now - window).count();
    (mail.resend_limit as usize).saturating_sub(used)
}

async fn record(c: &Console, id: &str) -> Result<crate::domain::ShipmentRecord, Page> {
    if crate::domain::fields::ShipmentId::try_from(id.to_string()).is_err() {
        return Err(Page::NotFound(format!("“{id}” is not a shipment id.")));
    }
    crate::lifecycle::find_record(&c.app.deps, id)
        .await
        .map_err(lifecycle_page)
}

#[derive(serde::Deserialize)]
struct NoticeQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn shipment(
    State(c): State<C>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(nq): Query<NoticeQuery>,
) -> Result<Response, Page> {
    let (s, refresh) = c.session(&headers).await?;
    require(&s, Permission::ShipmentsRead)?;
    let rec = record(&c, &id).await?;
    crate::auth::audit(&s.caller(), "console.shipment", Some(&id));
    let notice = match nq.done.as_deref() {
        Some("resent") => Some("The PIN was sent again."),
        Some("retried") => Some("The shipment is back in processing."),
        Some("resolved") => Some("The create is resolved."),
        Some("ordered") => Some("The key is ordered."),
        _ => None,
    };
    let view = pages::ShipmentView {
        idp: c.app.deps.idps.name_of(&rec),
        rec: &rec,
        resends_left: resends_left(&c, &rec),
        notice,
    };
    Ok(with_cookie(
        html(pages::shipment(&c.frame(&s), &view)),
        refresh,
    ))
}

async fn confirm_resend(
    State(c): State<C>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Page> {
    let (s, refresh) = c.session(&headers).await?;
    require(&s, Permission::PinResend)?;
    let rec = record(&c, &id).await?;
    let f = c.frame(&s);
    if !rec.is_registered() {
        return Ok(html(pages::message(
            &f,
            "The PIN cannot be resent yet",
            "The PIN can be resent once the key is registered with Entra ID.",
        )));
    }
    let left = resends_left(&c, &rec);
    let limit = c.app.deps.config.mail.resend_limit as usize;
    Ok(with_cookie(
        html(pages::confirm_resend(&f, &rec, left, limit)),
        refresh,
    ))
}

async fn resend(
    State(c): State<C>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    let s = c
        .posted(&headers, form.csrf.as_deref(), Some(Permission::PinResend))
        .await?;
    let rec = record(&c, &id).await?;
    let ye_id = rec.ye_shipment_id.clone().unwrap_or_else(|| id.clone());
    let caller = s.caller();
    crate::auth::audit(&caller, "pin.resend", Some(&ye_id));
    match crate::lifecycle::resend_pin(&c.app.deps, &ye_id, &caller.subject).await {
        Ok(()) => {
            Ok(Redirect::to(&format!("/console/shipments/{ye_id}?done=resent")).into_response())
        }
        Err(
            e @ (crate::lifecycle::LifecycleError::WrongState(_)
            | crate::lifecycle::LifecycleError::RateLimited { .. }),
        ) => Ok((
            StatusCode::CONFLICT,
            html(pages::message(
                &c.frame(&s),
                "The PIN was not resent",
                &e.to_string(),
            )),
        )
            .into_response()),
        Err(e) => Err(lifecycle_page(e)),
    }
}

#[derive(serde::Deserialize)]
struct RetryForm {
    csrf: Option<String>,
    resolution: Option<String>,
    ye_shipment_id: Option<String>,
}

async fn retry(
    State(c): State<C>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RetryForm>,
) -> Result<Response, Page> {
    let s = c
        .posted(
            &headers,
            form.csrf.as_deref(),
            Some(Permission::ShipmentsManage),
        )
        .await?;
    let f = c.frame(&s);
    let bad = |m: &str| {
        Ok((
            StatusCode::BAD_REQUEST,
            html(pages::message(&f, "Not done", m)),
        )
            .into_response())
    };
    let ye = form
        .ye_shipment_id
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let resolution = match (form.resolution.as_deref(), ye) {
        (None, _) => None,
        (Some("created"), Some(ye)) => {
            if crate::domain::fields::ShipmentId::try_from(ye.to_string()).is_err() {
                return bad("`ye_shipment_id` must be 1..128 letters, digits, '-' or '_'");
            }
            Some(crate::domain::Resolution::Created {
                ye_shipment_id: ye.to_string(),
            })
        }
        (Some("created"), None) => {
            return bad("`ye_shipment_id` is required with resolution `created`")
        }
        (Some("not_created"), _) => Some(crate::domain::Resolution::NotCreated),
        _ => return bad("`resolution` must be `created` or `not_created`"),
    };
    let done = if resolution.is_some() {
        "resolved"
    } else {
        "retried"
    };
    let caller = s.caller();
    crate::auth::audit(&caller, "shipment.retry", Some(&id));
    match crate::lifecycle::retry_shipment(&c.app.deps, &id, resolution, &caller.subject).await {
        Ok(()) => Ok(Redirect::to(&format!("/console/shipments/{id}?done={done}")).into_response()),
        Err(e @ crate::lifecycle::LifecycleError::WrongState(_)) => Ok((
            StatusCode::CONFLICT,
            html(pages::message(&f, "Not done", &e.to_string())),
        )
            .into_response()),
        Err(e) => Err(lifecycle_page(e)),
    }
}

// ------------------------------------------------------------------ ordering

async fn order_form(State(c): State<C>, headers: HeaderMap) -> Result<Response, Page> {
    let (s, refresh) = c.session(&headers).await?;
    require(&s, Permission::ShipmentsCreate)?;
    let values = HashMap::new();
    let form = pages::OrderForm {
        values: &values,
        error: None,
        general: None,
        checks: None,
    };
    Ok(with_cookie(
        html(pages::order(&c.frame(&s), &form)),
        refresh,
    ))
}

/// The column a validation error's field belongs to.
fn column_of(field: &str) -> Option<&'static str> {
    crate::domain::request::COLUMNS
        .iter()
        .filter(|c| {
            field == c.path
                || field.starts_with(&format!("{}.", c.path))
                || field.starts_with(&format!("{}[", c.path))
        })
        .map(|c| c.name)
        .next()
        .or_else(|| {
            // A rule that spans fields names their parent: the first column under it.
            crate::domain::request::COLUMNS
                .iter()
                .find(|c| !field.is_empty() && c.path.starts_with(field))
                .map(|c| c.name)
        })
}

async fn order(
    State(c): State<C>,
    headers: HeaderMap,
    Form(values): Form<HashMap<String, String>>,
) -> Result<Response, Page> {
    let s = c
        .posted(
            &headers,
            values.get("csrf").map(String::as_str),
            Some(Permission::ShipmentsCreate),
        )
        .await?;
    let f = c.frame(&s);
    let deps = c.app.deps.clone();
    let body = crate::domain::request::body_of_columns(|k| values.get(k).map(String::as_str));
    let render = |code: StatusCode, form: pages::OrderForm| {
        Ok((code, html(pages::order(&f, &form))).into_response())
    };
    let req = match crate::domain::ShipmentRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            let col = column_of(&e.field);
            let message = e.message.clone();
            return render(
                StatusCode::BAD_REQUEST,
                pages::OrderForm {
                    values: &values,
                    error: col.map(|c| (c, message.as_str())),
                    general: if col.is_none() {
                        Some(message.as_str())
                    } else {
                        None
                    },
                    checks: None,
                },
            );
        }
    };
    if let Err(e) =
        crate::api::check_mail_domains(&deps.config.mail.allowed_domains, &req.mail_recipients())
    {
        let m = e.to_string();
        return render(
            StatusCode::BAD_REQUEST,
            pages::OrderForm {
                values: &values,
                error: Some(("emails_to", m.as_str())),
                general: None,
                checks: None,
            },
        );
    }
    let caller = s.caller();
    if values.get("action").map(String::as_str) != Some("order") {
        crate::auth::audit(&caller, "shipment.dry_run", None);
        let checks = match crate::lifecycle::dry_run(&deps, &req).await {
            Ok(d) => d,
            Err(e) => {
                let m = e.to_string();
                return render(
                    StatusCode::OK,
                    pages::OrderForm {
                        values: &values,
                        error: None,
                        general: Some(m.as_str()),
                        checks: None,
                    },
                );
            }
        };
        return render(
            StatusCode::OK,
            pages::OrderForm {
                values: &values,
                error: None,
                general: None,
                checks: Some(&checks),
            },
        );
    }
    // The same form sent twice (a double click, a reload) orders one key.
    let raw = serde_json::to_vec(&body).unwrap_or_default();
    let digest = crate::hex::hex(&Sha256::digest(&raw));
    let idem = crate::lifecycle::Idempotency {
        key: format!("console-{}", &digest[..32]),
        body_sha256: digest,
    };
    crate::auth::audit(&caller, "shipment.create", None);
    let subject = caller.subject.clone();
    let r = tokio::spawn(async move {
        crate::lifecycle::create_shipment(&deps, req, Some(idem), &subject).await
    })
    .await
    .map_err(|e| Page::Unavailable(format!("the create task failed: {e}")))?;
    match r {
        Ok(id) => {
            crate::auth::audit(&caller, "shipment.created", Some(&id));
            Ok(Redirect::to(&format!("/console/shipments/{id}?done=ordered")).into_response())
        }
        Err(e) => {
            let m = crate::api::ApiError::from(e).to_string();
            render(
                StatusCode::BAD_REQUEST,
                pages::OrderForm {
                    values: &values,
                    error: None,
                    general: Some(m.as_str()),
                    checks: None,
                },
            )
        }
    }
}

async fn bulk_form(State(c): State<C>, headers: HeaderMap) -> Result<Response, Page> {
    let (s, refresh) = c.session(&headers).await?;
    require(&s, Permission::ShipmentsCreate)?;
    Ok(with_cookie(
        html(pages::bulk(&c.frame(&s), None, &[], None, None)),
        refresh,
    ))
}

/// At most this many rows per file from the console (the CLI has no such bound).
const BULK_MAX_ROWS: usize = 1000;

async fn bulk(State(c): State<C>, headers: HeaderMap, mut mp: Multipart) -> Result<Response, Page> {
    let (s, _) = c.session(&headers).await?;
    let mut fields: HashMap<String, Vec<u8>> = HashMap::new();
    while let Ok(Some(field)) = mp.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| Page::Unavailable(e.to_string()))?;
        fields.insert(name, bytes.to_vec());
    }
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    session::check_post(&headers, &c.origin, &s, text("csrf").as_deref()).map_err(Page::Forged)?;
    require(&s, Permission::ShipmentsCreate)?;
    let f = c.frame(&s);
    let b64 = base64::engine::general_purpose::STANDARD;
    let ordering = text("action").as_deref() == Some("order");
    let file = if ordering {
        text("csv").and_then(|v| b64.decode(v.trim()).ok())
    } else {
        fields.get("file").cloned()
    };
    let refuse = |m: &str| {
        Ok((
            StatusCode::BAD_REQUEST,
            html(pages::bulk(&f, Some(m), &[], None, None)),
        )
            .into_response())
    };
    let Some(file) = file.filter(|v| !v.is_empty()) else {
        return refuse("Choose a CSV file first.");
    };
    let rows = match crate::bulk::parse_rows(&file) {
        Ok(r) => r,
        Err(e) => return refuse(&e),
    };
    if rows.len() > BULK_MAX_ROWS {
        return refuse(&format!("The file has {} rows; the console takes at most {BULK_MAX_ROWS} (use `fido-connector import` for more).", rows.len()));
    }
    let user_of = |r: &crate::bulk::Row| r.body["user_id"].as_str().unwrap_or("").to_string();
    let caller = s.caller();
    if !ordering {
        let out: Vec<pages::BulkRow> = rows
            .iter()
            .map(|r| pages::BulkRow {
                line: r.line,
                user: user_of(r),
                outcome: r.verdict.clone().map(|_| None),
            })
            .collect();
        crate::auth::audit(&caller, "bulk.check", None);
        let csv = b64.encode(&file);
        return Ok(html(pages::bulk(&f, None, &out, Some(&csv), None)));
    }
    crate::auth::audit(&caller, "bulk.order", None);
    use futures::StreamExt;
    let deps = c.app.deps.clone();
    let allowed = deps.config.mail.allowed_domains.clone();
    let work: Vec<(usize, serde_json::Value, String)> = rows
        .iter()
        .filter(|r| r.verdict.is_ok())
        .map(|r| (r.line, r.body.clone(), r.idempotency_key.clone()))
        .collect();
    let results: Vec<(usize, Result<String, String>)> = futures::stream::iter(work)
        .map(|(line, body, key)| {
            let (deps, subject, allowed) = (deps.clone(), caller.subject.clone(), allowed.clone());
            async move { (line, order_row(deps, subject, allowed, body, key).await) }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut by_line: HashMap<usize, Result<String, String>> = results.into_iter().collect();
    let mut csv = crate::csv_safe::record(&["line", "shipment_id", "error"]);
    let mut out = Vec::new();
    for r in &rows {
        let outcome = match (&r.verdict, by_line.remove(&r.line)) {
            (Err(e), _) => Err(e.clone()),
            (Ok(()), Some(Ok(id))) => Ok(Some(id)),
            (Ok(()), Some(Err(e))) => Err(e),
            (Ok(()), None) => Err("not submitted".into()),
        };
        let (id, err) = match &outcome {
            Ok(Some(id)) => (id.clone(), String::new()),
            Ok(None) => (String::new(), String::new()),
            Err(e) => (String::new(), e.clone()),
        };
        csv.push_str(&crate::csv_safe::record(&[r.line.to_string(), id, err]));
        out.push(pages::BulkRow {
            line: r.line,
            user: user_of(r),
            outcome,
        });
    }
    let result = b64.encode(csv.as_bytes());
    Ok(html(pages::bulk(&f, None, &out, None, Some(&result))))
}

/// One row of a bulk order: the same checks and create as the API's, with the row's key.
async fn order_row(
    deps: Arc<crate::lifecycle::Deps>,
    subject: String,
    allowed: Vec<String>,
    body: serde_json::Value,
    key: String,
) -> Result<String, String> {
    let req = crate::domain::ShipmentRequest::parse(&body)
        .map_err(|e| format!("{}: {}", e.field, e.message))?;
    crate::api::check_mail_domains(&allowed, &req.mail_recipients()).map_err(|e| e.to_string())?;
    let raw = serde_json::to_vec(&body).unwrap_or_default();
    let idem = crate::lifecycle::Idempotency {
        key,
        body_sha256: crate::hex::hex(&Sha256::digest(&raw)),
    };
    tokio::spawn(async move {
        crate::lifecycle::create_shipment(&deps, req, Some(idem), &subject).await
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| crate::api::ApiError::from(e).to_string())
}

#[derive(serde::Deserialize)]
struct ResultForm {
    csrf: Option<String>,
    result: Option<String>,
}

/// The result file of a bulk order, as the page that showed it holds it.
async fn bulk_result(
    State(c): State<C>,
    headers: HeaderMap,
    Form(form): Form<ResultForm>,
) -> Result<Response, Page> {
    c.posted(
        &headers,
        form.csrf.as_deref(),
        Some(Permission::ShipmentsCreate),
    )
    .await?;
    let csv = form
        .result
        .and_then(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(r.trim())
                .ok()
        })
        .unwrap_or_default();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"import-result.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

// ------------------------------------------------------------------ settings

async fn settings_form(State(c): State<C>, headers: HeaderMap) -> Result<Response, Page> {
    let (s, refresh) = c.session(&headers).await?;
    Ok(with_cookie(html(pages::settings(&c.frame(&s))), refresh))
}

#[derive(serde::Deserialize)]
struct ZoneForm {
    csrf: Option<String>,
    tz: Option<String>,
}

async fn settings(
    State(c): State<C>,
    headers: HeaderMap,
    Form(form): Form<ZoneForm>,
) -> Result<Response, Page> {
    let mut s = c.posted(&headers, form.csrf.as_deref(), None).await?;
    s.tz = form
        .tz
        .filter(|z| z.parse::<chrono_tz::Tz>().is_ok())
        .filter(|z| z != "UTC");
    let now = c.now();
    s.seen = now;
    let jar = session::store(&c.key, &s, c.cfg.session_max.as_secs() as i64, now);
    Ok((jar, Redirect::to("/console")).into_response())
}
