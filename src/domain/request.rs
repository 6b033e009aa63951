//! `POST /v1/fpr/shipments` bodies, parsed into domain types before anything else happens.
//! Every rule answers with a [`ValidationError`] naming the field (JSON path).
//! Field limits count characters, not bytes.

use serde::Serialize;
use serde_json::Value;

/// A rule broken by the request; `field` is the JSON path, e.g.
/// `yubico_shipment_request.recipient.recipient_lastname`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The Entra user: a UPN (`name@domain`) or an object id (GUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserId {
    Upn(String),
    ObjectId(String),
}

impl UserId {
    pub fn as_str(&self) -> &str {
        match self {
            UserId::Upn(s) | UserId::ObjectId(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    pub recipient_company: String,
    pub recipient_email: String,
    pub recipient_firstname: String,
    pub recipient_lastname: String,
    pub recipient_telephone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailingAddress {
    pub street_line1: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub street_line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country_code_2: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentItem {
    pub product_id: i64,
    pub inventory_product_id: i64,
    /// Always 1: one key per FPR shipment.
    pub product_quantity: u32,
    pub customization_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YubicoShipmentRequest {
    pub reseller_organization_id: Option<String>,
    /// 1 normal, 2 expedited.
    pub delivery_type: u8,
    pub address_validation_bypass: bool,
    pub recipient: Recipient,
    pub mailing_address: MailingAddress,
    pub item: ShipmentItem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentRequest {
    pub user_id: UserId,
    /// PIN length, 4..=63 (`pin_request.type` must be `generate`).
    pub pin_length: usize,
    /// `enrollment_contacts.emails_to`; may be empty.
    pub emails_to: Vec<String>,
    pub yubico: YubicoShipmentRequest,
    /// `fc_additional_data.yubikey_name`: ASCII, at most 18 characters.
    pub yubikey_name: Option<String>,
}

impl ShipmentRequest {
    /// Parses and validates a request body. See docs/api.md for every rule.
    pub fn parse(body: &Value) -> Result<Self, ValidationError> {
        let _ = body;
        Err(ValidationError::new(
            "",
            "request parsing is not implemented yet",
        ))
    }

    /// Where the PIN mail goes: `enrollment_contacts.emails_to` when given, else the
    /// recipient's email.
    pub fn mail_recipients(&self) -> Vec<String> {
        if self.emails_to.is_empty() {
            vec![self.yubico.recipient.recipient_email.clone()]
        } else {
            self.emails_to.clone()
        }
    }

    /// The body of YubiEnterprise's `POST /fpr/shipments`, with the two JWEs in place.
    pub fn ye_body(&self, fido_pin_request: &str, fido_credential_request: &str) -> Value {
        let y = &self.yubico;
        let mut v = serde_json::json!({
            "delivery_type": y.delivery_type,
            "address_validation_bypass": y.address_validation_bypass,
            "recipient": y.recipient,
            "mailing_address": y.mailing_address,
            "shipment_items": [{
                "product_id": y.item.product_id,
                "inventory_product_id": y.item.inventory_product_id,
                "product_quantity": y.item.product_quantity,
                "customization_id": y.item.customization_id,
                "product_customizations": [{
                    "fido_pin_request": fido_pin_request,
                    "fido_credential_requests": [fido_credential_request],
                }],
            }],
        });
        if let (Some(id), Some(obj)) = (&y.reseller_organization_id, v.as_object_mut()) {
            obj.insert("reseller_organization_id".into(), Value::String(id.clone()));
        }
        v
    }
}
