//! The OpenAPI 3.1 document, generated from the handlers' annotations, the request's wire
//! types (`domain::wire`: the very types the server deserializes, whose newtypes carry
//! their own patterns, lengths and enums) and the answer types below.

#![allow(dead_code)] // fields exist for the schema only

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use crate::domain::fields::PinType;
pub use crate::domain::request::{
    AdditionalData, EnrollmentContacts, MailingAddress, PinRequest, Recipient, ShipmentItem,
    ShipmentRequest as CreateShipmentRequest, YubicoShipmentRequest,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "fido-connector", description = "FIDO pre-registration connector: ship YubiKeys pre-registered in Microsoft Entra ID."),
    components(schemas(
        StatusBody, CreateShipmentRequest, PinRequest, PinType, EnrollmentContacts,
        YubicoShipmentRequest, Recipient, MailingAddress, ShipmentItem, AdditionalData,
        CreatedBody, crate::lifecycle::list::ListPage, crate::lifecycle::list::ListItem,
        crate::lifecycle::list::YeState, crate::lifecycle::list::History,
        crate::domain::shipment::Event, CreatedData, ShipmentStatusBody, ErrorBody, ErrorData,
        crate::lifecycle::DryRun, crate::lifecycle::preflight::Check,
        crate::lifecycle::preflight::CheckResult
    )),
    modifiers(&Security),
    tags((name = "shipments"), (name = "operations"), (name = "status"), (name = "health"))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT (Entra ID access token) or fcak_ API key")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document without paths: info, schemas, security schemes, tags. The paths come from
/// the router's list ([`super::routes`]).
pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole document, paths included, built once.
pub fn document() -> utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(|| super::routes().into_openapi()).clone()
}

/// `GET /v1/openapi.json`.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "status",
    responses((status = 200, description = "This document (OpenAPI 3.1)")))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// `GET /v1/status` (every value a string; secrets masked).
#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    #[serde(rename = "AZURE_TABLES_ENDPOINT")]
    pub azure_tables_endpoint: String,
    #[serde(rename = "AZURE_TABLES_SHIPMENTS_TABLE_NAME")]
    pub azure_tables_shipments_table_name: String,
    #[serde(rename = "AZURE_KEY_VAULT_ENDPOINT")]
    pub azure_key_vault_endpoint: String,
    #[serde(rename = "AZURE_TENANT_ID")]
    pub azure_tenant_id: String,
    #[serde(rename = "CRON_PROCESS_SHIPMENT_SCHEDULE")]
    pub cron_process_shipment_schedule: String,
    #[serde(rename = "CRON_DATA_CLEANUP_SCHEDULE")]
    pub cron_data_cleanup_schedule: String,
    #[serde(rename = "CRON_DATA_CLEANUP_COMPLETED_DAYS")]
    pub cron_data_cleanup_completed_days: String,
    #[serde(rename = "EMAIL_API_SEND_ENDPOINT")]
    pub email_api_send_endpoint: String,
    #[serde(rename = "ENTRA_FIDO_API_CLIENT_ID")]
    pub entra_fido_api_client_id: String,
    #[serde(rename = "ENTRA_FIDO_API_VERSION")]
    pub entra_fido_api_version: String,
    #[serde(rename = "ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES")]
    pub entra_fido_api_challenge_timeout_minutes: String,
    #[serde(rename = "FIDO_CONNECTOR_VERSION")]
    pub fido_connector_version: String,
    #[serde(rename = "LOGGING_LEVEL_COM_YUBICO")]
    pub logging_level_com_yubico: String,
    #[serde(rename = "YE_API_BASE_URL")]
    pub ye_api_base_url: String,
    #[serde(rename = "YE_JWKS_SIGN_ENDPOINT")]
    pub ye_jwks_sign_endpoint: String,
    #[serde(rename = "YE_JWKS_TRANSPORT_ENDPOINT")]
    pub ye_jwks_transport_endpoint: String,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedBody {
    pub data: CreatedData,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedData {
    pub shipment_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ShipmentStatusBody {
    pub shipment_id: String,
    /// `ongoing` or `complete`.
    pub shipment_state: String,
    /// `GENERAL` when processing hit an error.
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
}

/// Every error: `error_code` is `api_error`, `ye_error` or `idp_error`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error_code: String,
    pub error_message: String,
    pub error_data: Option<ErrorData>,
}

/// `error_type` for `api_error`; `code`/`message` for `ye_error`.
#[derive(Serialize, ToSchema)]
pub struct ErrorData {
    pub error_type: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
}
