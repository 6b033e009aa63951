//! The request's leaves: newtypes that validate themselves on deserialization and describe
//! themselves to OpenAPI from the same constants ([`utoipa::PartialSchema`]), and the
//! mapping of serde's errors to the API's ("`<field>` <rule>", naming the JSON path). The
//! tree they make up is [`super::request`].
//!
//! Every newtype's pattern is at least as strict as its check: a value that matches the
//! document is accepted by the server (`request::tests::schema_and_server_agree`).

use std::borrow::Cow;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

// ------------------------------------------------------------------ leaf newtypes

/// Characters no text field may contain (C0 and C1 controls, DEL), as a regex class body.
pub(super) const NO_CONTROLS: &str = r"\u0000-\u001F\u007F-\u009F";

pub(super) fn text_pattern() -> String {
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
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
    pub fn as_str(&self) -> &str {
        &self.0
    }
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

/// `user_id`: the Entra user, by user principal name (`name@domain`, at most 113
/// characters) or object id (GUID, stored lower case).
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

const GUID_PATTERN: &str =
    "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

impl TryFrom<String> for UserId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(REQUIRED.into());
        }
        parse_user_id(s).map_err(|e| e.message)
    }
}
deserialize_via_try_from!(UserId, String);

impl PartialSchema for UserId {
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
schema_via!(UserId, "UserId");

/// `recipient_telephone`: digits, spaces, `+ - ( ) . x`; at most 40 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telephone(String);

impl Telephone {
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
        if c.chars().count() == 2 && super::codes::ISO_3166_ALPHA2.contains(&c.as_str()) {
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
            .enum_values(Some(super::codes::ISO_3166_ALPHA2.iter().copied()))
            .description(Some("ISO 3166-1 alpha-2"))
            .into()
    }
}
schema_via!(CountryCode, "CountryCode");

/// `reseller_organization_id`: a Base58 id of at most 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base58Id(String);

impl Base58Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
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

/// Instance names: lower-case letters, digits and `-`, 1 to 32, starting with a letter or
/// digit (they are kept on every record and shown in metrics).
pub fn valid_instance_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
}

/// `idp_instance`: the identity-provider instance of a multi-IdP deployment (lower-case
/// letters, digits and `-`, at most 32). Whether the deployment has it is checked by the
/// create, before any upstream call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpInstanceName(String);

impl IdpInstanceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdpInstanceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let s = s.trim();
        if valid_instance_name(s) {
            Ok(Self(s.to_string()))
        } else {
            Err("must be an instance name: 1 to 32 lower-case letters, digits or `-`".into())
        }
    }
}
deserialize_via_try_from!(IdpInstanceName, String);

impl PartialSchema for IdpInstanceName {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(1), 32, Some("^[a-z0-9][a-z0-9-]*$".into()))
            .description(Some(
                "The identity-provider instance (multi-IdP mode); omitted: the default instance",
            ))
            .into()
    }
}
schema_via!(IdpInstanceName, "IdpInstanceName");

/// `fc_additional_data.yubikey_name`: printable ASCII, at most 18 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YubiKeyName(String);

impl YubiKeyName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
            .default(Some(json!(super::pin::DEFAULT_LEN)))
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

pub(super) const REQUIRED: &str = "is required";

/// Optional text where `null`, absent and blank all mean "not given".
pub fn blank_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
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

fn parse_user_id(s: &str) -> Result<UserId, ValidationError> {
    let f = "user_id";
    if is_guid(s) {
        return Ok(UserId::ObjectId(s.to_ascii_lowercase()));
    }
    // A UPN: local@domain, no spaces or control characters, at most 113 characters
    // (Entra's limit: 64 for the local part, 48 for the domain).
    let ok = s.chars().count() <= 113
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && match s.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.chars().count() <= 64
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && domain
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
            }
            None => false,
        };
    if ok {
        Ok(UserId::Upn(s.to_string()))
    } else {
        Err(ValidationError::new(
            f,
            "`user_id` must be a user principal name (name@domain) or an object id (GUID)",
        ))
    }
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Deserializes the body, naming the field of the first broken rule.
pub fn from_value<T: serde::de::DeserializeOwned>(
    body: &serde_json::Value,
) -> Result<T, ValidationError> {
    if !body.is_object() {
        return Err(ValidationError::new(
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
fn explain(path: String, message: &str) -> ValidationError {
    let join = |p: &str, k: &str| {
        if p.is_empty() {
            k.to_string()
        } else {
            format!("{p}.{k}")
        }
    };
    let e = |field: String, rule: &str| {
        let message = format!("`{field}` {rule}");
        ValidationError::new(field, message)
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
        return ValidationError::new(path, message);
    }
    e(path, message)
}
