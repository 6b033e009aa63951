//! `POST /v1/fpr/shipments` bodies: the one request tree, used from the HTTP edge (and the
//! CSV import) to the YubiEnterprise body. Its leaves are the validating newtypes of
//! [`super::fields`]; the rules that span fields (street lines together, US and Canadian
//! regions and postal codes, exactly one item, at most ten PIN mail addresses) are checked
//! by [`ShipmentRequest::parse`]. The OpenAPI document is generated from these types, so its
//! patterns, lengths, enums and required fields are the server's own rules. Field limits
//! count characters, not bytes.

use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::codes;
use super::fields::{
    blank_is_none, Base58Id, CountryCode, DeliveryType, Email, IdpInstanceName, One, PinLength,
    PinType, PositiveId, Telephone, Text, UserId, ValidationError, YubiKeyName, NO_CONTROLS,
};

/// At most this many addresses in `enrollment_contacts.emails_to`.
pub const MAX_EMAILS_TO: usize = 10;

// Parsed: past the HTTP edge an invalid request cannot be represented. Built only by
// `ShipmentRequest::parse`, which also checks the rules that span fields. (The doc line
// below is the document's description.)
/// `POST /v1/fpr/shipments` body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[schema(as = CreateShipmentRequest)]
pub struct ShipmentRequest {
    #[schema(inline)]
    pub user_id: UserId,
    #[serde(default)]
    pub pin_request: Option<PinRequest>,
    #[serde(default)]
    pub enrollment_contacts: Option<EnrollmentContacts>,
    pub yubico_shipment_request: YubicoShipmentRequest,
    /// The identity-provider instance serving the user (multi-IdP deployments; additive to
    /// the vendor's API). Omitted: the deployment's default instance.
    #[serde(default, deserialize_with = "blank_is_none")]
    #[schema(inline)]
    pub idp_instance: Option<IdpInstanceName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct PinRequest {
    #[serde(default)]
    pub r#type: Option<PinType>,
    /// Number of digits (default 8).
    #[serde(default)]
    #[schema(inline)]
    pub length: Option<PinLength>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct EnrollmentContacts {
    /// Where the PIN mail goes instead of the recipient's email.
    #[serde(default)]
    #[schema(inline, max_items = 10)]
    pub emails_to: Option<Vec<Email<254>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct YubicoShipmentRequest {
    #[serde(default, deserialize_with = "blank_is_none")]
    #[schema(inline)]
    pub reseller_organization_id: Option<Base58Id>,
    #[serde(default)]
    #[schema(inline)]
    pub delivery_type: Option<DeliveryType>,
    #[serde(default)]
    pub address_validation_bypass: Option<bool>,
    pub recipient: Recipient,
    pub mailing_address: MailingAddress,
    /// Exactly one item: one key per pre-registration shipment.
    #[schema(min_items = 1, max_items = 1)]
    pub shipment_items: Vec<ShipmentItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct Recipient {
    #[serde(default, deserialize_with = "blank_is_none")]
    #[schema(inline)]
    pub recipient_company: Option<Text<20>>,
    #[schema(inline)]
    pub recipient_email: Email<80>,
    #[schema(inline)]
    pub recipient_firstname: Text<15>,
    #[schema(inline)]
    pub recipient_lastname: Text<20>,
    #[schema(inline)]
    pub recipient_telephone: Telephone,
}

/// The address. Its schema is one of three shapes, so that the rules that depend on the
/// country are in the document too: US (state code, ZIP), CA (province code, postal code),
/// and every other country.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MailingAddress {
    pub street_line1: Text<60>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub street_line2: Option<Text<60>>,
    pub city: Text<60>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub region: Option<Text<50>>,
    #[serde(default, deserialize_with = "blank_is_none")]
    pub postal_code: Option<Text<50>>,
    pub country_code_2: CountryCode,
}

impl PartialSchema for MailingAddress {
    fn schema() -> RefOr<Schema> {
        use utoipa::openapi::schema::OneOfBuilder;
        let enum_of = |values: Vec<&'static str>| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(values))
        };
        let shape = |country: ObjectBuilder,
                     region: Option<ObjectBuilder>,
                     postal: Option<ObjectBuilder>,
                     title: &str| {
            let optional_text = |max| {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(max))
                    .pattern(Some(format!("^[^{NO_CONTROLS}]*$")))
            };
            let mut b = ObjectBuilder::new()
                .title(Some(title))
                .property("street_line1", Text::<60>::schema())
                .required("street_line1")
                .property("street_line2", optional_text(60))
                .property("city", Text::<60>::schema())
                .required("city")
                .property("country_code_2", country)
                .required("country_code_2");
            b = match region {
                Some(r) => b.property("region", r).required("region"),
                None => b.property("region", optional_text(50)),
            };
            b = match postal {
                Some(p) => b.property("postal_code", p).required("postal_code"),
                None => b.property("postal_code", optional_text(50)),
            };
            b
        };
        // One shape per country with region rules, from the same table the check uses.
        let mut one_of = OneOfBuilder::new();
        for country in codes::COUNTRIES_WITH_REGION_RULES {
            if let Some(rules) = codes::region_rules(country) {
                one_of = one_of.item(shape(
                    enum_of(vec![country]),
                    Some(enum_of(rules.regions.to_vec())),
                    Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(rules.postal_pattern)),
                    ),
                    rules.title,
                ));
            }
        }
        let others: Vec<&'static str> = codes::ISO_3166_ALPHA2
            .iter()
            .copied()
            .filter(|c| !codes::COUNTRIES_WITH_REGION_RULES.contains(c))
            .collect();
        one_of
            .item(shape(enum_of(others), None, None, "Address elsewhere"))
            .into()
    }
}

impl ToSchema for MailingAddress {}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct ShipmentItem {
    #[schema(inline)]
    pub product_id: PositiveId,
    #[schema(inline)]
    pub inventory_product_id: PositiveId,
    #[serde(default)]
    #[schema(inline)]
    pub product_quantity: Option<One>,
    #[schema(inline)]
    pub customization_id: Text<50>,
    #[serde(default)]
    pub fc_additional_data: Option<AdditionalData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct AdditionalData {
    #[serde(default, deserialize_with = "blank_is_none")]
    #[schema(inline)]
    pub yubikey_name: Option<YubiKeyName>,
}

impl ShipmentRequest {
    /// Parses and validates a request body, naming the field of the first broken rule.
    /// See docs/api.md for every rule.
    pub fn parse(body: &Value) -> Result<Self, ValidationError> {
        let mut r: Self = super::fields::from_value(body)?;
        r.check_across_fields()?;
        Ok(r)
    }

    /// The rules that span fields, on a request whose every field is already valid; US and
    /// Canadian region codes are stored upper case.
    fn check_across_fields(&mut self) -> Result<(), ValidationError> {
        let emails = self
            .enrollment_contacts
            .as_ref()
            .and_then(|c| c.emails_to.as_ref())
            .map_or(0, Vec::len);
        if emails > MAX_EMAILS_TO {
            let field = "enrollment_contacts.emails_to";
            return Err(ValidationError::new(
                field,
                format!("`{field}` may list at most {MAX_EMAILS_TO} addresses"),
            ));
        }

        let yp = "yubico_shipment_request";
        let ap = format!("{yp}.mailing_address");
        let a = &mut self.yubico_shipment_request.mailing_address;
        let line2 = a
            .street_line2
            .as_ref()
            .map_or(0, |t| t.as_str().chars().count());
        if a.street_line1.as_str().chars().count() + line2 > 120 {
            let f = format!("{ap}.street_line2");
            return Err(ValidationError::new(
                &f,
                format!("`{ap}.street_line1` and `{f}` together exceed 120 characters"),
            ));
        }
        let rf = format!("{ap}.region");
        let pf = format!("{ap}.postal_code");
        let region = a
            .region
            .as_ref()
            .map_or("", |t| t.as_str())
            .to_ascii_uppercase();
        let postal = a.postal_code.as_ref().map_or("", |t| t.as_str());
        if let Some(rules) = codes::region_rules(a.country_code_2.as_str()) {
            if !rules.regions.contains(&region.as_str()) {
                let rule = rules.region_rule;
                return Err(ValidationError::new(&rf, format!("`{rf}` must be {rule}")));
            }
            if !(rules.postal_ok)(postal) {
                let rule = rules.postal_rule;
                return Err(ValidationError::new(&pf, format!("`{pf}` must be {rule}")));
            }
            // A code from the table: valid text, stored upper case.
            a.region = Text::try_from(region).ok();
        }

        let f = format!("{yp}.shipment_items");
        if self.yubico_shipment_request.shipment_items.len() != 1 {
            return Err(ValidationError::new(
                &f,
                format!("`{f}` must hold exactly one item (one key per pre-registration shipment)"),
            ));
        }
        Ok(())
    }

    /// The one item (exactly one, checked by [`Self::parse`]).
    fn item(&self) -> Option<&ShipmentItem> {
        self.yubico_shipment_request.shipment_items.first()
    }

    /// `pin_request.length`, or the default.
    pub fn pin_length(&self) -> usize {
        self.pin_request
            .as_ref()
            .and_then(|p| p.length)
            .map_or(super::pin::DEFAULT_LEN, |l| l.0)
    }

    /// `enrollment_contacts.emails_to`; may be empty.
    pub fn emails_to(&self) -> Vec<String> {
        self.enrollment_contacts
            .as_ref()
            .and_then(|c| c.emails_to.as_ref())
            .map(|l| l.iter().map(|e| e.as_str().to_string()).collect())
            .unwrap_or_default()
    }

    /// Where the PIN mail goes: `enrollment_contacts.emails_to` when given, else the
    /// recipient's email.
    pub fn mail_recipients(&self) -> Vec<String> {
        let to = self.emails_to();
        if to.is_empty() {
            vec![self
                .yubico_shipment_request
                .recipient
                .recipient_email
                .as_str()
                .to_string()]
        } else {
            to
        }
    }

    /// `fc_additional_data.yubikey_name`, when given.
    pub fn yubikey_name(&self) -> Option<&str> {
        self.item()
            .and_then(|i| i.fc_additional_data.as_ref())
            .and_then(|d| d.yubikey_name.as_ref())
            .map(|n| n.as_str())
            .filter(|n| !n.is_empty())
    }

    /// The item's `product_id`.
    pub fn product_id(&self) -> i64 {
        self.item().map_or(0, |i| i.product_id.0)
    }

    /// The body of YubiEnterprise's `POST /fpr/shipments`, with the two JWEs in place.
    pub fn ye_body(&self, fido_pin_request: &str, fido_credential_request: &str) -> Value {
        self.ye_body_with(fido_pin_request, &[fido_credential_request.to_string()])
    }

    /// As [`Self::ye_body`], with one credential request per relying party (Okta's enroll
    /// makes one per `enrollmentRpIds` entry).
    pub fn ye_body_with(
        &self,
        fido_pin_request: &str,
        fido_credential_requests: &[String],
    ) -> Value {
        let y = &self.yubico_shipment_request;
        let r = &y.recipient;
        let a = &y.mailing_address;
        let text = |t: &Option<Text<50>>| t.as_ref().map_or("", |t| t.as_str()).to_string();
        let mut address = serde_json::json!({
            "street_line1": a.street_line1.as_str(),
            "city": a.city.as_str(),
            "region": text(&a.region),
            "postal_code": text(&a.postal_code),
            "country_code_2": a.country_code_2.as_str(),
        });
        if let (Some(l2), Some(obj)) = (&a.street_line2, address.as_object_mut()) {
            obj.insert("street_line2".into(), Value::from(l2.as_str()));
        }
        let items: Vec<Value> = y
            .shipment_items
            .iter()
            .map(|it| {
                serde_json::json!({
                    "product_id": it.product_id.0,
                    "inventory_product_id": it.inventory_product_id.0,
                    "product_quantity": 1,
                    "customization_id": it.customization_id.as_str(),
                    "product_customizations": [{
                        "fido_pin_request": fido_pin_request,
                        "fido_credential_requests": fido_credential_requests,
                    }],
                })
            })
            .collect();
        let mut v = serde_json::json!({
            "delivery_type": y.delivery_type.map_or(1, |d| d.0),
            "address_validation_bypass": y.address_validation_bypass.unwrap_or(false),
            "recipient": {
                "recipient_company": r.recipient_company.as_ref().map_or("", |t| t.as_str()),
                "recipient_email": r.recipient_email.as_str(),
                "recipient_firstname": r.recipient_firstname.as_str(),
                "recipient_lastname": r.recipient_lastname.as_str(),
                "recipient_telephone": r.recipient_telephone.as_str(),
            },
            "mailing_address": address,
            "shipment_items": items,
        });
        if let (Some(id), Some(obj)) = (&y.reseller_organization_id, v.as_object_mut()) {
            obj.insert("reseller_organization_id".into(), Value::from(id.as_str()));
        }
        v
    }
}

// ------------------------------------------------------------------ the flat (CSV) form

/// How a column's cell becomes a value of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Text; an empty cell is `null` (so a required field is named as missing).
    Text,
    /// A number where it parses as one (else the text, which the rule then names).
    Number,
    /// Optional text: an empty cell leaves the field out.
    OptionalText,
    /// An optional number: an empty cell leaves the field out.
    OptionalNumber,
    /// A list separated by `;` or spaces; an empty cell leaves the field out.
    List,
}

/// One column of the flat form: its header, the tree's JSON path it fills, how, whether
/// the header must be there, and a fixed value set beside it when the cell is filled.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub path: &'static str,
    pub cell: Cell,
    pub header_required: bool,
    pub with: Option<(&'static str, &'static str)>,
}

const fn col(name: &'static str, path: &'static str, cell: Cell) -> Column {
    Column {
        name,
        path,
        cell,
        header_required: false,
        with: None,
    }
}

const fn required(c: Column) -> Column {
    Column {
        header_required: true,
        ..c
    }
}

/// The columns of the flat form (an import file), in the order of the example file.
pub const COLUMNS: [Column; 21] = [
    required(col("user_id", "user_id", Cell::Text)),
    Column {
        with: Some(("pin_request.type", "generate")),
        ..col("pin_length", "pin_request.length", Cell::OptionalNumber)
    },
    col("emails_to", "enrollment_contacts.emails_to", Cell::List),
    col(
        "recipient_company",
        concat!("yubico_shipment_request", ".recipient.recipient_company"),
        Cell::Text,
    ),
    required(col(
        "recipient_email",
        concat!("yubico_shipment_request", ".recipient.recipient_email"),
        Cell::Text,
    )),
    col(
        "recipient_firstname",
        concat!("yubico_shipment_request", ".recipient.recipient_firstname"),
        Cell::Text,
    ),
    col(
        "recipient_lastname",
        concat!("yubico_shipment_request", ".recipient.recipient_lastname"),
        Cell::Text,
    ),
    col(
        "recipient_telephone",
        concat!("yubico_shipment_request", ".recipient.recipient_telephone"),
        Cell::Text,
    ),
    required(col(
        "street_line1",
        concat!("yubico_shipment_request", ".mailing_address.street_line1"),
        Cell::Text,
    )),
    col(
        "street_line2",
        concat!("yubico_shipment_request", ".mailing_address.street_line2"),
        Cell::Text,
    ),
    col(
        "city",
        concat!("yubico_shipment_request", ".mailing_address.city"),
        Cell::Text,
    ),
    col(
        "region",
        concat!("yubico_shipment_request", ".mailing_address.region"),
        Cell::Text,
    ),
    col(
        "postal_code",
        concat!("yubico_shipment_request", ".mailing_address.postal_code"),
        Cell::Text,
    ),
    required(col(
        "country_code_2",
        concat!("yubico_shipment_request", ".mailing_address.country_code_2"),
        Cell::Text,
    )),
    col(
        "product_id",
        concat!("yubico_shipment_request", ".shipment_items[0].product_id"),
        Cell::Number,
    ),
    col(
        "inventory_product_id",
        concat!(
            "yubico_shipment_request",
            ".shipment_items[0].inventory_product_id"
        ),
        Cell::Number,
    ),
    col(
        "customization_id",
        concat!(
            "yubico_shipment_request",
            ".shipment_items[0].customization_id"
        ),
        Cell::Text,
    ),
    col(
        "yubikey_name",
        concat!(
            "yubico_shipment_request",
            ".shipment_items[0].fc_additional_data.yubikey_name"
        ),
        Cell::Text,
    ),
    col(
        "delivery_type",
        concat!("yubico_shipment_request", ".delivery_type"),
        Cell::OptionalNumber,
    ),
    col(
        "reseller_organization_id",
        concat!("yubico_shipment_request", ".reseller_organization_id"),
        Cell::OptionalText,
    ),
    // Multi-IdP deployments: the instance serving the row's user (empty: the default).
    col("idp_instance", "idp_instance", Cell::OptionalText),
];

/// Fields of the tree that the flat form fixes rather than reads: one key per row.
pub const FLAT_FIXED: [(&str, i64); 1] = [(
    "yubico_shipment_request.shipment_items[0].product_quantity",
    1,
)];

/// Fields of the tree the flat form leaves to their defaults (no column).
pub const FLAT_DEFAULTED: [&str; 1] = ["yubico_shipment_request.address_validation_bypass"];

/// The create body of one flat record; `cell` gives a column's trimmed cell, if any. The
/// body is then checked by [`ShipmentRequest::parse`] like any other.
pub fn body_of_columns<'a>(cell: impl Fn(&str) -> Option<&'a str>) -> Value {
    let mut body = Value::Object(Default::default());
    for (path, v) in FLAT_FIXED {
        set_path(&mut body, path, Value::from(v));
    }
    for c in COLUMNS {
        let got = cell(c.name).map(str::trim).filter(|s| !s.is_empty());
        let number = |v: &str| {
            v.parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(v))
        };
        let value = match (c.cell, got) {
            (Cell::Text, v) => v.map_or(Value::Null, Value::from),
            (Cell::Number, v) => v.map_or(Value::Null, number),
            (Cell::OptionalText, Some(v)) => Value::from(v),
            (Cell::OptionalNumber, Some(v)) => number(v),
            (Cell::List, Some(v)) => Value::from(
                v.split([';', ' '])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>(),
            ),
            (_, None) => continue,
        };
        set_path(&mut body, c.path, value);
        if let (Some((p, v)), Some(_)) = (c.with, got) {
            set_path(&mut body, p, Value::from(v));
        }
    }
    body
}

/// Sets a value at a dotted path (`[n]` indexes a list), making objects and lists on the way.
fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        let last = i + 1 == parts.len();
        let slot = obj.entry(key.to_string()).or_insert(Value::Null);
        cur = match index {
            None if last => {
                *slot = value;
                return;
            }
            None => slot,
            Some(n) => {
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let Some(list) = slot.as_array_mut() else {
                    return;
                };
                while list.len() <= n {
                    list.push(Value::Object(Default::default()));
                }
                if last {
                    list[n] = value;
                    return;
                }
                &mut list[n]
            }
        };
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::{json, Value};

    /// A valid create body (the tests' base).
    pub(crate) fn valid() -> Value {
        json!({
            "user_id": "alice@contoso.example",
            "pin_request": {"type": "generate", "length": 8},
            "enrollment_contacts": {"emails_to": ["a@example.org", "b@example.org"]},
            "yubico_shipment_request": {
                "delivery_type": 1,
                "address_validation_bypass": false,
                "recipient": {
                    "recipient_company": "Contoso",
                    "recipient_email": "alice@contoso.example",
                    "recipient_firstname": "Alice",
                    "recipient_lastname": "Liddell",
                    "recipient_telephone": "5555555555"
                },
                "mailing_address": {
                    "street_line1": "1 Main Street",
                    "street_line2": "Apt 2",
                    "city": "Seattle",
                    "region": "WA",
                    "postal_code": "98101",
                    "country_code_2": "US"
                },
                "shipment_items": [{
                    "product_id": 1, "inventory_product_id": 106, "product_quantity": 1,
                    "customization_id": "CUSTID",
                    "fc_additional_data": {"yubikey_name": "Primary"}
                }]
            }
        })
    }

    /// Sets a value at a dotted path (array index `[0]` supported for shipment_items).
    pub(crate) fn with(mut v: Value, path: &str, val: Value) -> Value {
        let mut cur = &mut v;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let (key, idx) = match p.split_once('[') {
                Some((k, rest)) => (
                    k,
                    Some(rest.trim_end_matches(']').parse::<usize>().unwrap()),
                ),
                None => (*p, None),
            };
            if i == parts.len() - 1 && idx.is_none() {
                cur[key] = val;
                return v;
            }
            cur = &mut cur[key];
            if let Some(n) = idx {
                cur = &mut cur[n];
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{valid, with};
    use super::*;
    use serde_json::json;

    fn field_of(v: Value) -> String {
        ShipmentRequest::parse(&v).unwrap_err().field
    }

    #[test]
    fn a_valid_request_parses() {
        let r = ShipmentRequest::parse(&valid()).unwrap();
        assert_eq!(r.user_id, UserId::Upn("alice@contoso.example".into()));
        assert_eq!(r.pin_length(), 8);
        assert_eq!(r.emails_to().len(), 2);
        assert_eq!(r.yubikey_name(), Some("Primary"));
        assert_eq!(r.mail_recipients(), ["a@example.org", "b@example.org"]);
        let body = r.ye_body("jwe1", "jwe2");
        assert_eq!(
            body["shipment_items"][0]["product_customizations"][0]["fido_pin_request"],
            "jwe1"
        );
        assert!(body.get("reseller_organization_id").is_none());
    }

    #[test]
    fn object_ids_are_accepted_and_garbage_user_ids_refused() {
        let v = with(
            valid(),
            "user_id",
            json!("7DC95E2F-53AB-4C2A-9E61-0A7B2D4C8E11"),
        );
        assert_eq!(
            ShipmentRequest::parse(&v).unwrap().user_id,
            UserId::ObjectId("7dc95e2f-53ab-4c2a-9e61-0a7b2d4c8e11".into())
        );
        for bad in ["", "alice", "alice@", "a b@c.d", "7dc95e2f-53-..."] {
            assert_eq!(
                field_of(with(valid(), "user_id", json!(bad))),
                "user_id",
                "{bad}"
            );
        }
        assert_eq!(field_of(with(valid(), "user_id", json!(42))), "user_id");
    }

    #[test]
    fn pin_length_boundaries() {
        for (len, ok) in [(3, false), (4, true), (63, true), (64, false)] {
            let v = with(valid(), "pin_request.length", json!(len));
            match ShipmentRequest::parse(&v) {
                Ok(r) => assert!(ok && r.pin_length() == len as usize),
                Err(e) => {
                    assert!(!ok, "{len}");
                    assert_eq!(e.field, "pin_request.length");
                    assert_eq!(e.message, "PIN `length` must be between 4 and 63");
                }
            }
        }
        assert_eq!(
            field_of(with(valid(), "pin_request.type", json!("static"))),
            "pin_request.type"
        );
        assert_eq!(
            field_of(with(valid(), "pin_request.length", json!("8"))),
            "pin_request.length"
        );
    }

    #[test]
    fn character_limits_pass_at_the_limit_and_fail_one_past_it_counting_characters() {
        let y = "yubico_shipment_request";
        let cases = [
            (format!("{y}.recipient.recipient_company"), 20),
            (format!("{y}.recipient.recipient_firstname"), 15),
            (format!("{y}.recipient.recipient_lastname"), 20),
            (format!("{y}.recipient.recipient_telephone"), 40),
            (format!("{y}.mailing_address.street_line1"), 60),
            (format!("{y}.mailing_address.street_line2"), 60),
            (format!("{y}.mailing_address.city"), 60),
            (format!("{y}.shipment_items[0].customization_id"), 50),
        ];
        for (path, max) in cases {
            // Non-ASCII letters: 2 bytes each in UTF-8, 1 character each.
            let unit = if path.ends_with("telephone") {
                "5"
            } else {
                "é"
            };
            let at = with(valid(), &path, json!(unit.repeat(max)));
            // keep line1+line2 under 120 when testing one line at its limit
            assert!(ShipmentRequest::parse(&at).is_ok(), "{path} at {max}");
            let over = with(valid(), &path, json!(unit.repeat(max + 1)));
            let e = ShipmentRequest::parse(&over).unwrap_err();
            assert_eq!(e.field, path);
            assert!(
                e.message.contains(&format!("exceeds {max} characters")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn email_limit_and_syntax() {
        let f = "yubico_shipment_request.recipient.recipient_email";
        let at = format!("{}@{}.org", "a".repeat(60), "b".repeat(15));
        assert_eq!(at.chars().count(), 80);
        assert!(ShipmentRequest::parse(&with(valid(), f, json!(at))).is_ok());
        let over = format!("{}@{}.org", "a".repeat(60), "b".repeat(16));
        assert_eq!(field_of(with(valid(), f, json!(over))), f);
        for bad in ["no-at", "a@b", "a @b.c", "a@.b.c", "a@b.c."] {
            assert_eq!(field_of(with(valid(), f, json!(bad))), f, "{bad}");
        }
        let e = field_of(with(
            valid(),
            "enrollment_contacts.emails_to",
            json!(["ok@example.org", "bad"]),
        ));
        assert_eq!(e, "enrollment_contacts.emails_to[1]");
        let many: Vec<String> = (0..11).map(|i| format!("u{i}@example.org")).collect();
        assert_eq!(
            field_of(with(valid(), "enrollment_contacts.emails_to", json!(many))),
            "enrollment_contacts.emails_to"
        );
    }

    #[test]
    fn street_lines_together_at_most_120() {
        let a = "yubico_shipment_request.mailing_address";
        let v = with(valid(), &format!("{a}.street_line1"), json!("x".repeat(60)));
        let ok = with(
            v.clone(),
            &format!("{a}.street_line2"),
            json!("y".repeat(60)),
        );
        assert!(ShipmentRequest::parse(&ok).is_ok());
        // 60 + 60 is the most either line allows, so the sum rule is reached only through
        // the per-line limits; check the sum rule directly with 61 on line 2 failing first.
        let over = with(v, &format!("{a}.street_line2"), json!("y".repeat(61)));
        assert_eq!(field_of(over), format!("{a}.street_line2"));
    }

    #[test]
    fn us_and_ca_regions_and_postal_codes() {
        let a = "yubico_shipment_request.mailing_address";
        let region = format!("{a}.region");
        let postal = format!("{a}.postal_code");
        for bad in ["", "Washington", "ZZ", "W"] {
            assert_eq!(
                field_of(with(valid(), &region, json!(bad))),
                region,
                "{bad}"
            );
        }
        for (zip, ok) in [
            ("98101", true),
            ("98101-1234", true),
            ("9810", false),
            ("98101-12", false),
            ("ABCDE", false),
        ] {
            assert_eq!(
                ShipmentRequest::parse(&with(valid(), &postal, json!(zip))).is_ok(),
                ok,
                "{zip}"
            );
        }
        let ca = with(
            with(
                with(valid(), &format!("{a}.country_code_2"), json!("CA")),
                &region,
                json!("ON"),
            ),
            &postal,
            json!("K1A 0B1"),
        );
        assert!(ShipmentRequest::parse(&ca).is_ok());
        assert!(ShipmentRequest::parse(&with(ca.clone(), &postal, json!("K1A0B1"))).is_ok());
        assert_eq!(field_of(with(ca.clone(), &postal, json!("12345"))), postal);
        assert_eq!(field_of(with(ca, &region, json!("WA"))), region);
        // Elsewhere region and postal code are free-form (up to 50 characters).
        let de = with(
            with(valid(), &format!("{a}.country_code_2"), json!("DE")),
            &region,
            json!(""),
        );
        assert!(ShipmentRequest::parse(&with(de.clone(), &postal, json!("10115"))).is_ok());
        assert!(ShipmentRequest::parse(&with(de.clone(), &region, json!("é".repeat(50)))).is_ok());
        assert_eq!(field_of(with(de, &region, json!("é".repeat(51)))), region);
    }

    #[test]
    fn country_codes_must_be_iso_alpha2() {
        let f = "yubico_shipment_request.mailing_address.country_code_2";
        for bad in ["USA", "U", "XX", "1A", ""] {
            assert_eq!(field_of(with(valid(), f, json!(bad))), f, "{bad}");
        }
    }

    #[test]
    fn delivery_type_quantity_and_items() {
        let y = "yubico_shipment_request";
        for (d, ok) in [(0, false), (1, true), (2, true), (3, false)] {
            let v = with(valid(), &format!("{y}.delivery_type"), json!(d));
            assert_eq!(ShipmentRequest::parse(&v).is_ok(), ok, "{d}");
        }
        let q = format!("{y}.shipment_items[0].product_quantity");
        assert_eq!(field_of(with(valid(), &q, json!(2))), q);
        let items = format!("{y}.shipment_items");
        assert_eq!(field_of(with(valid(), &items, json!([]))), items);
        let p = format!("{y}.shipment_items[0].product_id");
        assert_eq!(field_of(with(valid(), &p, json!(0))), p);
        assert_eq!(field_of(with(valid(), &p, json!("1"))), p);
    }

    #[test]
    fn yubikey_name_is_ascii_and_at_most_18() {
        let f = "yubico_shipment_request.shipment_items[0].fc_additional_data.yubikey_name";
        assert!(ShipmentRequest::parse(&with(valid(), f, json!("a".repeat(18)))).is_ok());
        assert_eq!(field_of(with(valid(), f, json!("a".repeat(19)))), f);
        assert_eq!(field_of(with(valid(), f, json!("Clé"))), f);
    }

    #[test]
    fn reseller_id_is_base58_or_empty() {
        let f = "yubico_shipment_request.reseller_organization_id";
        let r = ShipmentRequest::parse(&with(valid(), f, json!(""))).unwrap();
        assert_eq!(r.yubico_shipment_request.reseller_organization_id, None);
        let r = ShipmentRequest::parse(&with(valid(), f, json!("3yQ9fZ"))).unwrap();
        assert_eq!(r.ye_body("a", "b")["reseller_organization_id"], "3yQ9fZ");
        assert_eq!(field_of(with(valid(), f, json!("0OIl"))), f);
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut v = valid();
        v["yubico_shipment_request"]["recipient"]
            .as_object_mut()
            .unwrap()
            .remove("recipient_lastname");
        assert_eq!(
            field_of(v),
            "yubico_shipment_request.recipient.recipient_lastname"
        );
        let mut v = valid();
        v.as_object_mut().unwrap().remove("yubico_shipment_request");
        assert_eq!(field_of(v), "yubico_shipment_request");
        assert_eq!(field_of(json!([1, 2])), "");
    }

    fn validator() -> jsonschema::Validator {
        let mut doc = serde_json::to_value(crate::api::openapi::document()).unwrap();
        doc["$ref"] = json!("#/components/schemas/CreateShipmentRequest");
        jsonschema::draft202012::new(&doc).unwrap()
    }

    fn strings(max: usize) -> Vec<Value> {
        let mut v = vec![
            json!(""),
            json!(" "),
            json!("a"),
            json!(" padded "),
            json!("a".repeat(max)),
            json!("a".repeat(max + 1)),
            json!("é".repeat(max)),
            json!("é".repeat(max + 1)),
            json!("x\u{0001}y"),
            json!("x\u{0085}"),
            json!("tab\there"),
            json!(5),
            json!(null),
            json!(true),
        ];
        v.push(json!(format!(" {}", "b".repeat(max))));
        v
    }

    fn emails(max: usize) -> Vec<Value> {
        let mut v = vec![
            json!("a@b.co"),
            json!("first.last+tag@sub.example.org"),
            json!("a@b"),
            json!("a@@b.co"),
            json!("a b@c.de"),
            json!("a@.b.co"),
            json!("a@b..co"),
            json!("a@b.co."),
            json!("<a>@b.co"),
            json!("é@b.co"),
            json!("a@bé.co"),
            json!(format!("{}@b.co", "a".repeat(64))),
            json!(format!("{}@b.co", "a".repeat(65))),
            json!(""),
            json!(7),
        ];
        let long = format!("a@{}.co", "b".repeat(max.saturating_sub(5)));
        v.push(json!(long.clone()));
        v.push(json!(format!("a{long}")));
        v
    }

    /// Every request the document admits, the server accepts: the document never lets a
    /// generated client send a request that gets a 400.
    #[test]
    fn schema_and_server_agree() {
        let validator = validator();
        let base = valid();
        assert!(
            validator.is_valid(&base),
            "the example request fits the document"
        );
        assert!(ShipmentRequest::parse(&base).is_ok());

        let y = "yubico_shipment_request";
        let r = format!("{y}.recipient");
        let a = format!("{y}.mailing_address");
        let i = format!("{y}.shipment_items[0]");
        let mut cases: Vec<(String, Value)> = Vec::new();
        let mut add = |path: &str, values: Vec<Value>| {
            for v in values {
                cases.push((path.to_string(), v));
            }
        };
        add(
            "user_id",
            [
                emails(113),
                vec![
                    json!("7DC95E2F-53AB-4C2A-9E61-0A7B2D4C8E11"),
                    json!("7dc95e2f-53-..."),
                    json!("guest_contoso.com#EXT#@tenant.onmicrosoft.com"),
                    json!(format!("{}@x.co", "a".repeat(64))),
                    json!(format!("a@{}.co", "b".repeat(108))),
                    json!(format!("a@{}.co", "b".repeat(109))),
                ],
            ]
            .concat(),
        );
        add(
            "pin_request.length",
            vec![
                json!(3),
                json!(4),
                json!(63),
                json!(64),
                json!("8"),
                json!(8.5),
                json!(null),
            ],
        );
        add(
            "pin_request.type",
            vec![json!("generate"), json!("static"), json!(null), json!(1)],
        );
        add(
            "enrollment_contacts.emails_to",
            vec![
                json!([]),
                json!(vec!["a@b.co"; 10]),
                json!(vec!["a@b.co"; 11]),
                json!(["a@b.co", "bad"]),
                json!("a@b.co"),
                json!(null),
            ],
        );
        for (f, max) in [
            ("recipient_company", 20),
            ("recipient_firstname", 15),
            ("recipient_lastname", 20),
        ] {
            add(&format!("{r}.{f}"), strings(max));
        }
        add(&format!("{r}.recipient_email"), emails(80));
        add(
            &format!("{r}.recipient_telephone"),
            [
                strings(40),
                vec![
                    json!("+"),
                    json!("+1 (555) 555-5555 x12"),
                    json!("555.555"),
                    json!("abc"),
                    json!("1".repeat(40)),
                    json!("1".repeat(41)),
                ],
            ]
            .concat(),
        );
        for (f, max) in [("street_line1", 60), ("street_line2", 60), ("city", 60)] {
            add(&format!("{a}.{f}"), strings(max));
        }
        let mut whole: Vec<(String, Value)> = Vec::new();
        for country in ["US", "us", "CA", "DE", "XX", "USA", ""] {
            for region in ["WA", "wa", "ON", "Bavaria", "", "é"] {
                for postal in [
                    "98101",
                    "98101-1234",
                    "9810",
                    "K1A 0B1",
                    "k1a0b1",
                    "K1A  0B1",
                    "80331",
                    "",
                ] {
                    let v = with(base.clone(), &format!("{a}.country_code_2"), json!(country));
                    let v = with(v, &format!("{a}.region"), json!(region));
                    let v = with(v, &format!("{a}.postal_code"), json!(postal));
                    whole.push(("<whole>".into(), v));
                }
            }
        }
        add(
            &format!("{y}.delivery_type"),
            vec![
                json!(0),
                json!(1),
                json!(2),
                json!(3),
                json!("1"),
                json!(null),
            ],
        );
        add(
            &format!("{y}.reseller_organization_id"),
            vec![
                json!(""),
                json!("abc"),
                json!("0OIl"),
                json!("1".repeat(64)),
                json!("1".repeat(65)),
                json!(3),
            ],
        );
        add(
            &format!("{y}.address_validation_bypass"),
            vec![json!(true), json!("true"), json!(null)],
        );
        add(
            &format!("{y}.shipment_items"),
            vec![json!([]), json!(null), json!({})],
        );
        for f in ["product_id", "inventory_product_id"] {
            add(
                &format!("{i}.{f}"),
                vec![
                    json!(0),
                    json!(1),
                    json!(-1),
                    json!("1"),
                    json!(i64::MAX),
                    json!(1.5),
                ],
            );
        }
        add(
            &format!("{i}.product_quantity"),
            vec![json!(1), json!(2), json!(0), json!(null)],
        );
        add(&format!("{i}.customization_id"), strings(50));
        add(
            &format!("{i}.fc_additional_data.yubikey_name"),
            vec![
                json!("Primary"),
                json!("a".repeat(18)),
                json!("a".repeat(19)),
                json!("Clé"),
                json!(""),
                json!("tab\t"),
                json!(null),
            ],
        );

        let (mut admitted, mut total) = (0, 0);
        for (path, value) in cases.into_iter().chain(whole) {
            let doc = if path == "<whole>" {
                value.clone()
            } else {
                with(base.clone(), &path, value.clone())
            };
            total += 1;
            if validator.is_valid(&doc) {
                admitted += 1;
                let parsed = ShipmentRequest::parse(&doc);
                assert!(
                    parsed.is_ok(),
                    "the document admits {path} = {value} but the server refuses it: {:?}",
                    parsed.err()
                );
            }
        }
        // Not vacuous: a good share of the cases is admitted, and many are refused.
        assert!(
            admitted > 60 && admitted < total - 60,
            "{admitted} of {total}"
        );
        // Two items: the document refuses what the server refuses.
        let mut two = base.clone();
        let item = two[y]["shipment_items"][0].clone();
        two[y]["shipment_items"] = json!([item.clone(), item]);
        assert!(!validator.is_valid(&two));
        assert!(ShipmentRequest::parse(&two).is_err());
    }

    /// The paths of every leaf of the request's schema (the tree as the document shows it).
    fn schema_leaves(doc: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                &doc["components"]["schemas"][name]
            }
            None => schema,
        };
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
            for alt in alts.iter().filter(|a| a["type"] != "null") {
                schema_leaves(doc, alt, path, out);
            }
        } else if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                schema_leaves(doc, v, &join(k), out);
            }
        } else if schema
            .get("items")
            .is_some_and(|i| i.get("$ref").is_some() || i.get("properties").is_some())
        {
            schema_leaves(doc, &schema["items"], &format!("{path}[0]"), out);
        } else if !out.contains(&path.to_string()) {
            out.push(path.to_string());
        }
    }

    /// A field added to the tree cannot be forgotten by the import: every leaf is a column,
    /// a fixed value, or a documented default.
    #[test]
    fn the_flat_form_covers_every_field_of_the_tree() {
        let doc = serde_json::to_value(crate::api::openapi::document()).unwrap();
        let root = json!({"$ref": "#/components/schemas/CreateShipmentRequest"});
        let mut leaves = Vec::new();
        schema_leaves(&doc, &root, "", &mut leaves);
        assert!(leaves.len() >= 20, "{leaves:?}");
        for leaf in &leaves {
            let covered = COLUMNS
                .iter()
                .any(|c| c.path == leaf || c.with.is_some_and(|(p, _)| p == leaf))
                || FLAT_FIXED.iter().any(|(p, _)| p == leaf)
                || FLAT_DEFAULTED.contains(&leaf.as_str());
            assert!(covered, "`{leaf}` has no column in the flat form");
        }
        for c in COLUMNS {
            assert!(
                leaves.iter().any(|l| l == c.path),
                "column {} names no field",
                c.name
            );
        }
    }

    /// The flat form makes the very body it made before the tree was one (an import's
    /// Idempotency-Keys are derived from it: a rerun after an upgrade creates nothing).
    #[test]
    fn the_flat_form_makes_the_same_bodies() {
        let full: std::collections::HashMap<&str, &str> = [
            ("user_id", "alice@contoso.example"),
            ("pin_length", "8"),
            ("emails_to", "a@example.org; b@example.org"),
            ("recipient_company", "Contoso"),
            ("recipient_email", "alice@contoso.example"),
            ("recipient_firstname", "Alice"),
            ("recipient_lastname", "Liddell"),
            ("recipient_telephone", "5555555555"),
            ("street_line1", "1 Main Street"),
            ("street_line2", ""),
            ("city", "Seattle"),
            ("region", "WA"),
            ("postal_code", "98101"),
            ("country_code_2", "US"),
            ("product_id", "1"),
            ("inventory_product_id", "x106"),
            ("customization_id", "CUSTID"),
            ("yubikey_name", "Primary"),
            ("delivery_type", "2"),
            ("reseller_organization_id", "3yQ9fZ"),
        ]
        .into_iter()
        .collect();
        let body = body_of_columns(|k| full.get(k).copied());
        assert_eq!(
            body,
            json!({
                "user_id": "alice@contoso.example",
                "pin_request": {"type": "generate", "length": 8},
                "enrollment_contacts": {"emails_to": ["a@example.org", "b@example.org"]},
                "yubico_shipment_request": {
                    "delivery_type": 2,
                    "reseller_organization_id": "3yQ9fZ",
                    "recipient": {
                        "recipient_company": "Contoso",
                        "recipient_email": "alice@contoso.example",
                        "recipient_firstname": "Alice",
                        "recipient_lastname": "Liddell",
                        "recipient_telephone": "5555555555",
                    },
                    "mailing_address": {
                        "street_line1": "1 Main Street",
                        "street_line2": null,
                        "city": "Seattle",
                        "region": "WA",
                        "postal_code": "98101",
                        "country_code_2": "US",
                    },
                    "shipment_items": [{
                        "product_id": 1,
                        "inventory_product_id": "x106",
                        "product_quantity": 1,
                        "customization_id": "CUSTID",
                        "fc_additional_data": {"yubikey_name": "Primary"},
                    }],
                },
            })
        );
        let sparse = body_of_columns(|k| (k == "user_id").then_some("bob@contoso.example"));
        assert_eq!(
            sparse,
            json!({
                "user_id": "bob@contoso.example",
                "yubico_shipment_request": {
                    "recipient": {
                        "recipient_company": null, "recipient_email": null,
                        "recipient_firstname": null, "recipient_lastname": null,
                        "recipient_telephone": null,
                    },
                    "mailing_address": {
                        "street_line1": null, "street_line2": null, "city": null,
                        "region": null, "postal_code": null, "country_code_2": null,
                    },
                    "shipment_items": [{
                        "product_id": null, "inventory_product_id": null,
                        "product_quantity": 1, "customization_id": null,
                        "fc_additional_data": {"yubikey_name": null},
                    }],
                },
            })
        );
    }
}
