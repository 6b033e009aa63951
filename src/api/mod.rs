//! The HTTP API: the vendor's paths, status codes and error bodies, exactly.
//!
//! The routes are listed once, in [`routes`]; the OpenAPI document (`GET /v1/openapi.json`)
//! is generated from that list and names each route's permission.
//!
//! Handlers authenticate first (the [`auth::Caller`] extractor runs before the body is
//! read), validate second, and only then reach the lifecycle and its upstreams.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::{Resolution, ShipmentRequest};
use crate::lifecycle::Idempotency;

pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;

use auth::{Caller, Permission};
pub use error::ApiError;
use extract::JsonBody;

/// Shared by every handler.
/// What every handler shares: one `Arc`, so that handing it to a request is one count,
/// not one per part.
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub deps: std::sync::Arc<crate::lifecycle::Deps>,
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
    pub jobs: std::sync::Arc<crate::jobs::Jobs>,
    pub readiness: std::sync::Arc<Readiness>,
    /// CSV exports streaming at once (each walks the index for as long as it is read).
    pub exports: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Every route, listed once: this list is the router, and the OpenAPI document's paths are
/// generated from it ([`openapi::document`]), so no route can be served undocumented.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(status))
        .routes(routes!(create_shipment, list_shipments))
        .routes(routes!(get_shipment))
        .routes(routes!(shipment_events))
        .routes(routes!(resend_pin))
        .routes(routes!(process_shipments))
        .routes(routes!(retry_shipment))
        .routes(routes!(openapi::serve))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

pub fn router(state: AppState) -> Router {
    let config = state.deps.config.clone();
    let (routes, _) = routes().split_for_parts();
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Every body, the retry's raw one included, has the one size cap.
        .layer(axum::extract::DefaultBodyLimit::max(
            config.server.max_body_bytes,
        ));
    limits::apply(routes, &config.server)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /v1/status`: the 16 keys of the reference, in order, secrets masked.
#[utoipa::path(get, path = "/v1/status", tag = "status",
    responses((status = 200, description = "Deployment settings (secrets masked)", body = openapi::StatusBody)))]
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let mut m = Map::new();
    for (k, v) in state.deps.config.status_entries() {
        m.insert(k.to_string(), Value::String(v));
    }
    Json(Value::Object(m))
}

/// `POST /v1/fpr/shipments`.
#[utoipa::path(post, path = "/v1/fpr/shipments", tag = "shipments",
    request_body = openapi::CreateShipmentRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Makes retries safe: the same key and body return the same shipment (1..255 visible ASCII characters)"),
        ("dry_run" = Option<bool>, Query, description = "`true`: validate and run every pre-flight check, store and send nothing, answer 200 with the checks")),
    responses(
        (status = 200, description = "Dry run: each pre-flight check's result", body = crate::lifecycle::DryRun),
        (status = 201, description = "Shipment created at YubiEnterprise", body = openapi::CreatedBody),
        (status = 400, description = "Validation (`api_error`), YubiEnterprise (`ye_error`) or identity provider (`idp_error`) error", body = openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials, or YubiEnterprise refused the connector's token", body = openapi::ErrorBody),
        (status = 403, description = "Caller lacks Shipments.Create", body = openapi::ErrorBody),
        (status = 409, description = "The same Idempotency-Key is still being processed", body = openapi::ErrorBody),
        (status = 413, description = "Body too large", body = openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = openapi::ErrorBody),
        (status = 422, description = "Idempotency-Key reused with another body", body = openapi::ErrorBody),
        (status = 503, description = "An upstream is unavailable", body = openapi::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_shipment(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    caller.require(Permission::ShipmentsCreate)?;
    let dry_run = match params.get("dry_run").map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" || v.is_empty() => false,
        Some(_) => return Err(ApiError::validation("`dry_run` must be true or false")),
    };
    let idempotency = idempotency_key(&headers)?.map(|key| Idempotency {
        key,
        body_sha256: crate::hex::hex(&Sha256::digest(&body.raw)),
    });
    let req = ShipmentRequest::parse(&body.value)
        .map_err(|e| ApiError::Validation { message: e.message })?;
    check_mail_domains(
        &state.deps.config.mail.allowed_domains,
        &req.mail_recipients(),
    )?;
    if dry_run {
        auth::audit(&caller, "shipment.dry_run", None);
        let report = crate::lifecycle::dry_run(&state.deps, &req).await?;
        return Ok((StatusCode::OK, Json(report)).into_response());
    }
    auth::audit(&caller, "shipment.create", None);
    // The create runs to its end in its own task: a client that disconnects (or the
    // request timeout) must not cut it between the record and YubiEnterprise's answer, which
    // would leave the request's outcome unknown. The client retries with its key and gets
    // the finished shipment.
    let deps = state.deps.clone();
    let subject = caller.subject.clone();
    let id = tokio::spawn(async move {
        crate::lifecycle::create_shipment(&deps, req, idempotency, &subject).await
    })
    .await
    .map_err(|e| ApiError::internal(format!("the create task failed: {e}")))??;
    auth::audit(&caller, "shipment.created", Some(&id));
    Ok((
        StatusCode::CREATED,
        Json(json!({"data": {"shipment_id": id}})),
    )
        .into_response())
}

/// Query parameters of `GET /v1/fpr/shipments`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// UPN or object id of the user (either finds both).
    user_id: Option<String>,
    /// `ongoing`, `complete`, `failed` or `needs_attention`.
    #[param(pattern = "^(ongoing|complete|failed|needs_attention)$")]
    state: Option<String>,
    /// RFC 3339; shipments created at or after.
    #[param(format = DateTime)]
    created_after: Option<String>,
    /// RFC 3339; shipments created before.
    #[param(format = DateTime)]
    created_before: Option<String>,
    /// Page size, 1..1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn parse_time(
    name: &str,
    v: &Option<String>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    match v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                ApiError::validation(format!(
                    "`{name}` must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"
                ))
            }),
    }
}

/// `GET /v1/fpr/shipments`: shipments newest first, as JSON or (`Accept: text/csv`) CSV.
#[utoipa::path(get, path = "/v1/fpr/shipments", tag = "shipments",
    params(ListParams),
    responses(
        (status = 200, description = "A page of shipments (JSON: `items`, `next_cursor`), or with `Accept: text/csv` every matching shipment as RFC 4180 CSV", body = crate::lifecycle::list::ListPage),
        (status = 400, description = "A bad parameter, named", body = openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = openapi::ErrorBody),
        (status = 403, description = "Caller lacks Shipments.Read (one user's shipments) or Shipments.Export (every user's, or CSV)", body = openapi::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_shipments(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    axum::extract::Query(p): axum::extract::Query<ListParams>,
) -> Result<Response, ApiError> {
    use crate::lifecycle::list::{self, ListFilter, StateFilter};
    caller.require(Permission::ShipmentsRead)?;
    let filter = ListFilter {
        user: p
            .user_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        state: match p.state.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(StateFilter::parse(s).ok_or_else(|| {
                ApiError::validation("`state` must be ongoing, complete, failed or needs_attention")
            })?),
        },
        created_after: parse_time("created_after", &p.created_after)?,
        created_before: parse_time("created_before", &p.created_before)?,
    };
    let limit = match p.limit.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::validation("`limit` must be an integer from 1 to 1000"))?,
    };
    let cursor = match p.cursor.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(c) => Some(
            list::decode_cursor(c)
                .ok_or_else(|| ApiError::validation("`cursor` is not a cursor this API issued"))?,
        ),
    };
    let wants_csv = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    // One user's shipments are a helpdesk lookup; every user's, or the CSV export, are
    // bulk personal data and need their own role.
    if wants_csv || filter.user.is_none() {
        caller.require(Permission::ShipmentsExport)?;
    }
    tracing::info!(
        target: "fido_connector::audit",
        subject = %caller.subject,
        action = "shipment.list",
        format = if wants_csv { "csv" } else { "json" },
        user_filter = filter.user.is_some(),
        state = p.state.as_deref().unwrap_or(""),
        created_after = p.created_after.as_deref().unwrap_or(""),
        created_before = p.created_before.as_deref().unwrap_or(""),
        "authorised call"
    );
    if wants_csv {
        // A small permit of its own (FIDO_CONNECTOR_EXPORTS_AT_ONCE): exports cannot crowd
        // out the API's other calls.
        let limits = &state.deps.config.server;
        let (at_once, max_rows, export_deadline) = (
            limits.exports_at_once,
            limits.export_max_rows,
            limits.export_deadline,
        );
        let permit =
            state
                .exports
                .clone()
                .try_acquire_owned()
                .map_err(|_| ApiError::Unavailable {
                    message: format!("{at_once} exports are running; retry when one has finished"),
                    retry_after: 10,
                })?;
        // Every matching shipment (paging does not apply), read and sent page by page,
        // bounded in rows and time. A store failure mid-stream ends the body early (the
        // client sees a broken transfer, never a silently short report). The permit goes
        // with the stream.
        use futures::StreamExt;
        let rows = list::csv_export(
            list::stream_shipments((*state.deps).clone(), filter),
            max_rows,
            export_deadline,
        )
        .map(move |r| {
            let _held = &permit;
            r.map(axum::body::Bytes::from).map_err(|e| {
                tracing::warn!(error = %e, "CSV export ended early");
                std::io::Error::other(e.to_string())
            })
        });
        let body = axum::body::Body::from_stream(rows);
        return Ok((
            StatusCode::OK,
            [
                (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    "attachment; filename=\"shipments.csv\"",
                ),
            ],
            body,
        )
            .into_response());
    }
    let page = list::list_shipments(&state.deps, &filter, cursor.as_ref(), limit).await?;
    Ok(Json(page).into_response())
}

/// `GET /v1/fpr/shipments/{shipment_id}/events`: the shipment's history.
#[utoipa::path(get, path = "/v1/fpr/shipments/{shipment_id}/events", tag = "shipments",
    params(("shipment_id" = inline(crate::domain::fields::ShipmentId), Path, description = "YubiEnterprise shipment id, or the request id of a create that never got one")),
    responses(
        (status = 200, description = "Events, oldest first", body = crate::lifecycle::list::History),
        (status = 400, description = "Malformed id", body = openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = openapi::ErrorBody),
        (status = 403, description = "Caller lacks Shipments.Read", body = openapi::ErrorBody),
        (status = 404, description = "Unknown shipment", body = openapi::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn shipment_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(shipment_id): Path<String>,
) -> Result<Json<crate::lifecycle::list::History>, ApiError> {
    caller.require(Permission::ShipmentsRead)?;
    check_shipment_id(&shipment_id)?;
    auth::audit(&caller, "shipment.events", Some(&shipment_id));
    Ok(Json(
        crate::lifecycle::list::history(&state.deps, &shipment_id).await?,
    ))
}

/// `GET /v1/fpr/shipments/{shipment_id}`.
#[utoipa::path(get, path = "/v1/fpr/shipments/{shipment_id}", tag = "shipments",
    params(("shipment_id" = inline(crate::domain::fields::ShipmentId), Path, description = "YubiEnterprise shipment id")),
    responses(
        (status = 200, description = "Processing state", body = openapi::ShipmentStatusBody),
        (status = 400, description = "Malformed id", body = openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = openapi::ErrorBody),
        (status = 403, description = "Caller lacks Shipments.Read", body = openapi::ErrorBody),
        (status = 404, description = "Unknown shipment", body = openapi::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_shipment(
    State(state): State<AppState>,
    caller: Caller,
    Path(shipment_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ShipmentsRead)?;
    check_shipment_id(&shipment_id)?;
    auth::audit(&caller, "shipment.read", Some(&shipment_id));
    // The view is kept ready to serve beside the record (see ShipmentStore::public_view).
    let view = state
        .deps
        .store
        .public_view(&shipment_id)
        .await
        .map_err(crate::lifecycle::LifecycleError::from)?
        .ok_or_else(|| ApiError::not_found(format!("Shipment not found: {shipment_id}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        view,
    )
        .into_response())
}

/// `GET /v1/operations/resend-pin/{shipment_id}`.
#[utoipa::path(get, path = "/v1/operations/resend-pin/{shipment_id}", tag = "operations",
    params(("shipment_id" = inline(crate::domain::fields::ShipmentId), Path, description = "YubiEnterprise shipment id")),
    responses(
        (status = 204, description = "PIN mail sent again"),
        (status = 400, description = "Malformed id", body = openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = openapi::ErrorBody),
        (status = 403, description = "Caller lacks Pin.Resend", body = openapi::ErrorBody),
        (status = 404, description = "Unknown shipment", body = openapi::ErrorBody),
        (status = 409, description = "Shipment not complete", body = openapi::ErrorBody),
        (status = 503, description = "An upstream is unavailable", body = openapi::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn resend_pin(
    State(state): State<AppState>,
    caller: Caller,
    Path(shipment_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::PinResend)?;
    check_shipment_id(&shipment_id)?;
    auth::audit(&caller, "pin.resend", Some(&shipment_id));
    crate::lifecycle::resend_pin(&state.deps, &shipment_id, &caller.subject).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/operations/process-shipments`.
#[utoipa::path(get, path = "/v1/operations/process-shipments", tag = "operations",
    responses(
        (status = 204, description = "A processing run (started or joined) finished"),
        (status = 401, description = "Missing or invalid credentials", body = openapi::ErrorBody),
        (status = 403, description = "Caller lacks Operations.Run", body = openapi::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn process_shipments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::OperationsRun)?;
    auth::audit(&caller, "shipments.process", None);
    state.jobs.run_processing_now(state.deps.clone()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /v1/operations/retry/{id}` (optional for failed shipments).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// For a create whose outcome is unknown: `created` (with `ye_shipment_id`) or
    /// `not_created`.
    pub resolution: Option<String>,
    /// The YubiEnterprise shipment id the operator found (with `created`).
    pub ye_shipment_id: Option<String>,
}

/// `POST /v1/operations/retry/{id}`: puts a failed shipment back into processing, or
/// resolves a create whose outcome at YubiEnterprise is unknown.
#[utoipa::path(post, path = "/v1/operations/retry/{id}", tag = "operations",
    params(("id" = String, Path, description = "YubiEnterprise shipment id, or the request id of an unresolved create")),
    request_body(content = Option<RetryRequest>, description = "Only for an unresolved create"),
    responses(
        (status = 204, description = "Back in processing (or resolved)"),
        (status = 400, description = "Malformed id or body", body = openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = openapi::ErrorBody),
        (status = 403, description = "Caller lacks Shipments.Manage", body = openapi::ErrorBody),
        (status = 404, description = "Unknown shipment", body = openapi::ErrorBody),
        (status = 409, description = "Not failed and not unresolved", body = openapi::ErrorBody)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn retry_shipment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::ShipmentsManage)?;
    check_shipment_id(&id)?;
    let resolution = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let r: RetryRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::validation(format!("retry body: {e}")))?;
        match (r.resolution.as_deref(), r.ye_shipment_id) {
            (None, None) => None,
            (Some("created"), Some(ye)) => {
                check_shipment_id(&ye).map_err(|_| {
                    ApiError::validation(
                        "`ye_shipment_id` must be 1..128 letters, digits, '-' or '_'",
                    )
                })?;
                Some(Resolution::Created { ye_shipment_id: ye })
            }
            (Some("created"), None) => {
                return Err(ApiError::validation(
                    "`ye_shipment_id` is required with resolution `created`",
                ))
            }
            (Some("not_created"), None) => Some(Resolution::NotCreated),
            (Some("not_created"), Some(_)) => {
                return Err(ApiError::validation(
                    "`ye_shipment_id` must not be given with resolution `not_created`",
                ))
            }
            _ => {
                return Err(ApiError::validation(
                    "`resolution` must be `created` or `not_created`",
                ))
            }
        }
    };
    auth::audit(&caller, "shipment.retry", Some(&id));
    crate::lifecycle::retry_shipment(&state.deps, &id, resolution, &caller.subject).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `emails_to` restricted to configured domains (when any are configured).
pub fn check_mail_domains(allowed: &[String], recipients: &[String]) -> Result<(), ApiError> {
    if allowed.is_empty() {
        return Ok(());
    }
    for r in recipients {
        let domain = r.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        if !domain.is_some_and(|d| allowed.contains(&d)) {
            return Err(ApiError::validation(format!(
                "`emails_to`: {r} is not in an allowed mail domain ({})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// `GET /healthz`: the process is alive. No I/O.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store and the secret store answer.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "A dependency is not reachable")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (store, secrets) = state.readiness.check(&state.deps).await;
    let body = json!({
        "status": if store && secrets { "ready" } else { "unavailable" },
        "store": if store { "ok" } else { "unreachable" },
        "secrets": if secrets { "ok" } else { "unreachable" },
    });
    let code = if store && secrets {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `/readyz` answers from a result at most [`Readiness::TTL`] old, with one check in flight
/// at a time: a flood of probes costs a handful of store and vault calls, not one each.
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(std::time::Instant, bool, bool)>>,
    checks: std::sync::atomic::AtomicU64,
}

impl Readiness {
    pub const TTL: Duration = Duration::from_secs(2);

    /// How many real checks were made (tests, metrics).
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn check(&self, deps: &crate::lifecycle::Deps) -> (bool, bool) {
        let mut last = self.last.lock().await;
        if let Some((at, store, secrets)) = *last {
            if at.elapsed() < Self::TTL {
                return (store, secrets);
            }
        }
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Duration::from_secs(3);
        let (store, secrets) = tokio::join!(
            tokio::time::timeout(t, deps.store.ping()),
            tokio::time::timeout(t, deps.secrets.ping())
        );
        let r = (matches!(store, Ok(Ok(()))), matches!(secrets, Ok(Ok(()))));
        *last = Some((std::time::Instant::now(), r.0, r.1));
        r
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> Response {
    let body = json!({"error_code": "api_error", "error_message": "method not allowed",
                      "error_data": {"error_type": "method_not_allowed"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// Shipment ids are YubiEnterprise's: letters, digits, `-` and `_`, at most 128.
fn check_shipment_id(id: &str) -> Result<(), ApiError> {
    crate::domain::fields::ShipmentId::try_from(id.to_string())
        .map(|_| ())
        .map_err(ApiError::validation)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("");
    if (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Some(s.to_string()))
    } else {
        Err(ApiError::validation(
            "`Idempotency-Key` must be 1..255 visible ASCII characters",
        ))
    }
}
