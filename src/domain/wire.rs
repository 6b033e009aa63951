//! The create request as it travels: serde wire types whose leaves are newtypes that
//! validate themselves on deserialization and describe themselves to OpenAPI from the same
//! constants ([`utoipa::PartialSchema`]). The OpenAPI document is generated from these types,
//! so its patterns, lengths, enums and required fields are the server's own rules; the few
//! rules that span fields (street lines together, US/Canadian regions and postal codes,
//! exactly one item) are checked in [`super::request`] and described in the schema.
//!
//! Every newtype's pattern is at least as strict as its check: a value that matches the
//! document is accepted by the server (`tests::schema_and_server_agree`).

use std::borrow::Cow;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

// ------------------------------------------------------------------ leaf newtypes

/// Characters no text field may contain (C0 and C1 controls, DEL), as a regex class body.
const NO_CONTROLS: &str = r"\u0000-\u001F\u007F-\u009F";

fn text_pattern() -> String {
    // At least one non-space character, no control characters.
    format!(r"^[^{NO_CONTROLS}]*[^\s{NO_CONTROLS}][^{NO_CONTROLS}]*$")
}

fn string_schema(min: Option<usize>, max: usize, pattern: Option<String>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(min)
        .max_length(Some(max))
        .pattern(pattern)
}

macro_rules! schema_via {
    ($t:ty, $name:literal) => {
        impl ToSchema for $t {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

macro_rules! deserialize_via_try_from {
    ($t:ty, $from:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <$from>::deserialize(d)?;
                <$t>::try_from(raw).map_err(D::Error::custom)
            }
        }
    };
}

/// Free text of at most `MAX` characters (counted as characters, after trimming), without
/// control characters, never blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<const MAX: usize> TryFrom<String> for Text<MAX> {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(REQUIRED.into());
        }
        if s.chars().count() > MAX {
            return Err(format!("exceeds {MAX} characters"));
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(s.to_string()))
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl<const MAX: usize> PartialSchema for Text<MAX> {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(1), MAX, Some(text_pattern())).into()
    }
}

impl<const MAX: usize> ToSchema for Text<MAX> {}

/// An email address (`local@domain.tld`, no spaces or specials) of at most `MAX` characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email<const MAX: usize>(String);

/// Local part characters the pattern allows (a subset of what the check allows).
const EMAIL_LOCAL: &str = r"A-Za-z0-9._%+'!#$&*=?^`{|}~/-";

impl<const MAX: usize> Email<MAX> {
    pub fn into_inner(self) -> String {
        self.0
    }
    fn pattern() -> String {
        format!(r"^[{EMAIL_LOCAL}]{{1,64}}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
    }
}

impl<const MAX: usize> TryFrom<String> for Email<MAX> {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let e = s.trim();
        if e.is_empty() {
            return Err(REQUIRED.into());
        }
        if e.chars().count() > MAX {
            return Err(format!("exceeds {MAX} characters"));
        }
        let ok = match e.rsplit_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.chars().count() <= 64
                    && !local.contains('@')
                    && !e
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || "<>(),;:\"[]\\".contains(c))
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
                    && domain
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
            }
            None => false,
        };
        if ok {
            Ok(Self(e.to_string()))
        } else {
            Err("is not a valid email address".into())
        }
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Email<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(String::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl<const MAX: usize> PartialSchema for Email<MAX> {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(3), MAX, Some(Self::pattern()))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
            .into()
    }
}

impl<const MAX: usize> ToSchema for Email<MAX> {}

/// `user_id`: a user principal name (`name@domain`, at most 113 characters) or an object id
/// (GUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdField(pub super::UserId);

const GUID_PATTERN: &str =
    "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

impl TryFrom<String> for UserIdField {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(REQUIRED.into());
        }
        super::request::parse_user_id(s)
            .map(Self)
            .map_err(|e| e.message)
    }
}
deserialize_via_try_from!(UserIdField, String);

impl PartialSchema for UserIdField {
    fn schema() -> RefOr<Schema> {
        let upn = format!(r"[{EMAIL_LOCAL}]{{1,64}}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+");
        string_schema(Some(1), 113, Some(format!("^({GUID_PATTERN}|{upn})$")))
            .description(Some(
                "User principal name (name@domain) or object id (GUID) of the Entra user",
            ))
            .examples([json!("alice@contoso.example")])
            .into()
    }
}
schema_via!(UserIdField, "UserId");

/// `recipient_telephone`: digits, spaces, `+ - ( ) . x`; at most 40 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telephone(String);

impl Telephone {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Telephone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = Text::<40>::try_from(s)?.into_inner();
        let ok = t
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().x".contains(c))
            && t.chars().any(|c| c.is_ascii_digit());
        if ok {
            Ok(Self(t))
        } else {
            Err("must be a telephone number (digits, spaces, + - ( ) . x)".into())
        }
    }
}
deserialize_via_try_from!(Telephone, String);

impl PartialSchema for Telephone {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(1), 40, Some(r"^[ +().x-]*[0-9][0-9 +().x-]*$".into()))
            .description(Some("Digits, spaces and + - ( ) . x; at least one digit"))
            .into()
    }
}
schema_via!(Telephone, "Telephone");

/// `country_code_2`: an ISO 3166-1 alpha-2 code (case-insensitive; stored upper case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryCode(String);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CountryCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let c = s.trim().to_ascii_uppercase();
        if c.is_empty() {
            return Err(REQUIRED.into());
        }
        if c.chars().count() == 2 && super::request::ISO_3166_ALPHA2.contains(&c.as_str()) {
            Ok(Self(c))
        } else {
            Err("must be an ISO 3166-1 alpha-2 country code".into())
        }
    }
}
deserialize_via_try_from!(CountryCode, String);

impl PartialSchema for CountryCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(super::request::ISO_3166_ALPHA2.iter().copied()))
            .description(Some("ISO 3166-1 alpha-2"))
            .into()
    }
}
schema_via!(CountryCode, "CountryCode");

/// `reseller_organization_id`: a Base58 id of at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base58Id(String);

impl Base58Id {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Base58Id {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim();
        let base58 = |c: char| c.is_ascii_alphanumeric() && !matches!(c, '0' | 'O' | 'I' | 'l');
        if !s.is_empty() && s.chars().count() <= 64 && s.chars().all(base58) {
            Ok(Self(s.to_string()))
        } else {
            Err("must be a Base58 organization id".into())
        }
    }
}
deserialize_via_try_from!(Base58Id, String);

impl PartialSchema for Base58Id {
    fn schema() -> RefOr<Schema> {
        string_schema(None, 64, Some("^[1-9A-HJ-NP-Za-km-z]*$".into()))
            .description(Some(
                "Base58 id of the reseller; omitted or empty when none",
            ))
            .into()
    }
}
schema_via!(Base58Id, "Base58Id");

/// `fc_additional_data.yubikey_name`: printable ASCII, at most 18 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YubiKeyName(String);

impl YubiKeyName {
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for YubiKeyName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim();
        if !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err("must contain only printable ASCII characters".into());
        }
        if s.chars().count() > 18 {
            return Err("exceeds 18 characters".into());
        }
        Ok(Self(s.to_string()))
    }
}
deserialize_via_try_from!(YubiKeyName, String);

impl PartialSchema for YubiKeyName {
    fn schema() -> RefOr<Schema> {
        string_schema(None, 18, Some("^[ -~]*$".into()))
            .description(Some(
                "Passkey name shown as `<name>: <serial>`; printable ASCII",
            ))
            .into()
    }
}
schema_via!(YubiKeyName, "YubiKeyName");

/// A positive integer id (`product_id`, `inventory_product_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveId(pub i64);

impl TryFrom<i64> for PositiveId {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        if n > 0 {
            Ok(Self(n))
        } else {
            Err("must be a positive integer".into())
        }
    }
}
deserialize_via_try_from!(PositiveId, i64);

impl PartialSchema for PositiveId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .into()
    }
}
schema_via!(PositiveId, "PositiveId");

/// `pin_request.length`: 4..=63 digits. The message is the vendor's, word for word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLength(pub usize);

pub const PIN_LENGTH_MESSAGE: &str = "PIN `length` must be between 4 and 63";

impl TryFrom<i64> for PinLength {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        let range = super::pin::MIN_LEN as i64..=super::pin::MAX_LEN as i64;
        if range.contains(&n) {
            Ok(Self(n as usize))
        } else {
            Err(PIN_LENGTH_MESSAGE.into())
        }
    }
}
deserialize_via_try_from!(PinLength, i64);

impl PartialSchema for PinLength {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(super::pin::MIN_LEN as u64))
            .maximum(Some(super::pin::MAX_LEN as u64))
            .default(Some(json!(super::request::DEFAULT_PIN_LENGTH)))
            .into()
    }
}
schema_via!(PinLength, "PinLength");

/// `pin_request.type`: only `generate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PinType {
    Generate,
}

/// `delivery_type`: 1 normal, 2 expedited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryType(pub u8);

impl TryFrom<i64> for DeliveryType {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match n {
            1 | 2 => Ok(Self(n as u8)),
            _ => Err("must be 1 (normal) or 2 (expedited)".into()),
        }
    }
}
deserialize_via_try_from!(DeliveryType, i64);

impl PartialSchema for DeliveryType {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some([1, 2]))
            .default(Some(json!(1)))
            .description(Some("1 normal, 2 expedited"))
            .into()
    }
}
schema_via!(DeliveryType, "DeliveryType");

/// `product_quantity`: always 1 (one key per pre-registration shipment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct One;

impl TryFrom<i64> for One {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        if n == 1 {
            Ok(One)
        } else {
            Err("must be 1".into())
        }
    }
}
deserialize_via_try_from!(One, i64);

impl PartialSchema for One {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some([1]))
            .default(Some(json!(1)))
            .into()
    }
}
schema_via!(One, "ProductQuantity");

/// A YubiEnterprise shipment id in a path: 1..128 letters, digits, `-` or `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentId(String);

impl ShipmentId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl TryFrom<String> for ShipmentId {
    type Error = String;
    fn try_from(id: String) -> Result<Self, String> {
        let ok = (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(id))
        } else {
            Err("`shipment_id` must be 1..128 letters, digits, '-' or '_'".into())
        }
    }
}
deserialize_via_try_from!(ShipmentId, String);

impl PartialSchema for ShipmentId {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(1), 128, Some("^[A-Za-z0-9_-]+$".into())).into()
    }
}
schema_via!(ShipmentId, "ShipmentId");

const REQUIRED: &str = "is required";

/// Optional text where `null`, absent and blank all mean "not given".
fn blank_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String, Error = String>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => T::try_from(s).map(Some).map_err(D::Error::custom),
    }
}

// ------------------------------------------------------------------ the request

/// `POST /v1/fpr/shipments` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CreateShipmentRequest)]
pub struct CreateShipmentRequest {
    #[schema(inline)]
    pub user_id: UserIdField,
    #[serde(default)]
    pub pin_request: Option<PinRequest>,
    #[serde(default)]
    pub enrollment_contacts: Option<EnrollmentContacts>,
    pub yubico_shipment_request: YubicoShipmentRequest,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PinRequest {
    #[serde(default)]
    pub r#type: Option<PinType>,
    /// Number of digits (default 8).
    #[serde(default)]
    #[schema(inline)]
    pub length: Option<PinLength>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EnrollmentContacts {
    /// Where the PIN mail goes instead of the recipient's email.
    #[serde(default)]
    #[schema(inline, max_items = 10)]
    pub emails_to: Option<Vec<Email<254>>>,
}

#[derive(Debug, Deserialize, ToSchema)]
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

#[derive(Debug, Deserialize, ToSchema)]
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
#[derive(Debug, Deserialize)]
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
        let others: Vec<&'static str> = super::request::ISO_3166_ALPHA2
            .iter()
            .copied()
            .filter(|c| *c != "US" && *c != "CA")
            .collect();
        OneOfBuilder::new()
            .item(shape(
                enum_of(vec!["US"]),
                Some(enum_of(super::request::US_STATES.to_vec())),
                Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(r"^[0-9]{5}(-[0-9]{4})?$")),
                ),
                "US address",
            ))
            .item(shape(
                enum_of(vec!["CA"]),
                Some(enum_of(super::request::CA_PROVINCES.to_vec())),
                Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(r"^[A-Za-z][0-9][A-Za-z] ?[0-9][A-Za-z][0-9]$")),
                ),
                "Canadian address",
            ))
            .item(shape(enum_of(others), None, None, "Address elsewhere"))
            .into()
    }
}

impl ToSchema for MailingAddress {}

#[derive(Debug, Deserialize, ToSchema)]
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct AdditionalData {
    #[serde(default, deserialize_with = "blank_is_none")]
    #[schema(inline)]
    pub yubikey_name: Option<YubiKeyName>,
}

/// Deserializes the body, naming the field of the first broken rule.
pub fn from_value(
    body: &serde_json::Value,
) -> Result<CreateShipmentRequest, super::ValidationError> {
    if !body.is_object() {
        return Err(super::ValidationError::new(
            "",
            "request body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = path_of(e.path());
        let message = e.inner().to_string();
        explain(path, &message)
    })
}

fn path_of(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for s in p.iter() {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Turns serde's message into the API's: "`<field>` <rule>".
fn explain(path: String, message: &str) -> super::ValidationError {
    let join = |p: &str, k: &str| {
        if p.is_empty() {
            k.to_string()
        } else {
            format!("{p}.{k}")
        }
    };
    let e = |field: String, rule: &str| {
        let message = format!("`{field}` {rule}");
        super::ValidationError::new(field, message)
    };
    // serde: "missing field `x`" (at the parent's path).
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return e(join(&path, name), REQUIRED);
    }
    if message.starts_with("invalid type: null") {
        return e(path, REQUIRED);
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.split(", expected ").nth(1).unwrap_or("");
        let rule = if expected.contains("string") {
            "must be a string"
        } else if expected.contains("i64") || expected.contains("integer") {
            "must be an integer"
        } else if expected.contains("bool") {
            "must be true or false"
        } else if expected.contains("sequence") {
            "must be a list"
        } else if expected.contains("struct") || expected.contains("map") {
            "must be an object"
        } else {
            "has the wrong type"
        };
        return e(path, rule);
    }
    if message.starts_with("unknown variant") {
        return e(path, "must be `generate`");
    }
    if message.starts_with("invalid value") {
        return e(path, "is out of range");
    }
    // Messages that name the field themselves (the vendor's PIN length message, the
    // shipment id) are used as they are.
    if message.contains('`') {
        return super::ValidationError::new(path, message);
    }
    e(path, message)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::domain::request::test_support::{valid, with};
    use crate::domain::ShipmentRequest;

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
}
