//! The Entra section (the tenant, Graph, the service's own credential, and the pre-flight
//! checks against the tenant's policy) and the caller-auth section (who may call the API).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::env::{parse_url, require_https, required, Env};
use super::{ConfigError, DEFAULT_CHALLENGE_TIMEOUT_MINUTES};

/// How the service obtains Entra tokens (Graph, and Azure resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraCredentialKind {
    /// Client secret read from the secret store (`entra-client-secret`).
    ClientSecret,
    /// Managed identity (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`).
    ManagedIdentity,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
}

/// `FIDO_CONNECTOR_PREFLIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightMode {
    /// Failed checks refuse the create; checks that cannot be evaluated are logged.
    Warn,
    /// Checks that cannot be evaluated refuse the create too.
    Strict,
    /// No pre-flight checks beyond the user's existence.
    Off,
}

/// AAGUIDs Yubico publishes for current YubiKey 5 Series models (firmware 5.1 to 5.7):
/// YubiKey 5 / 5 Nano, 5 NFC / 5C NFC, 5Ci. What a key ordered by a product id not in
/// `FIDO_CONNECTOR_PRODUCT_AAGUIDS` may report.
pub const YUBIKEY_5_AAGUIDS: [&str; 7] = [
    "cb69481e-8ff7-4039-93ec-0a2729a154a8", // YubiKey 5 (5.1)
    "ee882879-721c-4913-9775-3dfcce97072a", // YubiKey 5, 5 Nano (5.2, 5.4)
    "fa2b99dc-9e39-4257-8f92-4a30d23c4118", // YubiKey 5 NFC (5.1)
    "2fc0579f-8113-47ea-b116-bb5a8db9202a", // YubiKey 5 NFC, 5C NFC (5.2, 5.4)
    "c5ef55ff-ad9a-4b9f-b580-adebafe026d0", // YubiKey 5Ci (5.2, 5.4)
    "a25342c0-3cdc-4414-8e46-f4807fca511c", // YubiKey 5 NFC (5.7)
    "d7781e5d-e353-46aa-afe2-3ca49f13332a", // YubiKey 5 NFC (5.7.4)
];

/// Parses `FIDO_CONNECTOR_PRODUCT_AAGUIDS`: `<product_id>=<aaguid>[|<aaguid>…]`, pairs
/// separated by `;` or `,`.
pub fn parse_product_aaguids(
    s: &str,
) -> Result<std::collections::BTreeMap<u32, Vec<String>>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
        let (id, list) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not <product_id>=<aaguid>[|<aaguid>]"))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` is not a product id"))?;
        let mut aaguids = Vec::new();
        for a in list.split('|').map(str::trim) {
            let u = uuid::Uuid::parse_str(a).map_err(|_| format!("`{a}` is not an AAGUID"))?;
            aaguids.push(u.hyphenated().to_string());
        }
        out.insert(id, aaguids);
    }
    Ok(out)
}

/// `AZURE_TENANT_ID`, `ENTRA_*`, `GRAPH_API_ENDPOINT`, `AZURE_CLIENT_*`,
/// `AZURE_FEDERATED_TOKEN_FILE`, and the pre-flight settings.
#[derive(Debug, Clone)]
pub struct EntraConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub api_version: String,
    pub challenge_timeout_minutes: u32,
    pub login_endpoint: Url,
    pub graph_endpoint: Url,
    pub credential: EntraCredentialKind,
    /// `AZURE_CLIENT_ID`: the user-assigned managed identity, or the app id of the
    /// workload-identity / client-secret credential for Azure resources.
    pub azure_client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`: client-secret credential for Azure resources only (the one
    /// secret that cannot live in the vault it opens).
    pub azure_client_secret: Option<SecretString>,
    /// `AZURE_FEDERATED_TOKEN_FILE`: the platform's token for workload identity.
    pub azure_federated_token_file: Option<PathBuf>,
    /// What the pre-flight checks of a create do (`FIDO_CONNECTOR_PREFLIGHT`).
    pub preflight: PreflightMode,
    /// How long the tenant's passkey policy is reused between creates
    /// (`FIDO_CONNECTOR_POLICY_CACHE_SECONDS`, 300).
    pub policy_cache: Duration,
    /// YubiEnterprise `product_id` → the AAGUIDs its keys report
    /// (`FIDO_CONNECTOR_PRODUCT_AAGUIDS`); products not named here may be any model of
    /// [`YUBIKEY_5_AAGUIDS`].
    pub product_aaguids: std::collections::BTreeMap<u32, Vec<String>>,
}

impl EntraConfig {
    /// `missing` collects required production settings that are absent.
    pub fn load(env: &Env, missing: &mut Vec<String>) -> Result<Self, ConfigError> {
        let api_version = env
            .get("ENTRA_FIDO_API_VERSION")
            .unwrap_or_else(|| "beta".to_string());
        if api_version != "beta" && api_version != "v1.0" {
            return Err(ConfigError::new(
                "ENTRA_FIDO_API_VERSION",
                format!("`{api_version}` must be `beta` or `v1.0`"),
            ));
        }
        let challenge_timeout_minutes: u32 = env.num_in(
            "ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES",
            DEFAULT_CHALLENGE_TIMEOUT_MINUTES,
            5..=43200,
        )?;
        let tenant_id = required(env, "AZURE_TENANT_ID", missing).unwrap_or_default();
        let client_id = required(env, "ENTRA_FIDO_API_CLIENT_ID", missing).unwrap_or_default();
        let login_endpoint = env.url("ENTRA_LOGIN_ENDPOINT")?.map_or_else(
            || parse_url("ENTRA_LOGIN_ENDPOINT", "https://login.microsoftonline.com"),
            Ok,
        )?;
        require_https("ENTRA_LOGIN_ENDPOINT", &login_endpoint)?;
        let graph_endpoint = env.url("GRAPH_API_ENDPOINT")?.map_or_else(
            || parse_url("GRAPH_API_ENDPOINT", "https://graph.microsoft.com"),
            Ok,
        )?;
        require_https("GRAPH_API_ENDPOINT", &graph_endpoint)?;
        let credential = match env.get("ENTRA_CREDENTIAL").as_deref() {
            Some("client_secret") => EntraCredentialKind::ClientSecret,
            Some("managed_identity") => EntraCredentialKind::ManagedIdentity,
            Some("workload_identity") => EntraCredentialKind::WorkloadIdentity,
            Some("auto") | None => {
                if env.get("AZURE_FEDERATED_TOKEN_FILE").is_some() {
                    EntraCredentialKind::WorkloadIdentity
                } else if env.get("IDENTITY_ENDPOINT").is_some() {
                    EntraCredentialKind::ManagedIdentity
                } else {
                    EntraCredentialKind::ClientSecret
                }
            }
            Some(other) => {
                return Err(ConfigError::new(
                    "ENTRA_CREDENTIAL",
                    format!(
                    "`{other}` must be auto, client_secret, managed_identity or workload_identity"
                ),
                ))
            }
        };
        // azure_identity refuses an http authority, even on loopback: say so at start,
        // instead of every create failing later as if Entra had answered badly.
        if credential != EntraCredentialKind::ManagedIdentity && login_endpoint.scheme() != "https"
        {
            return Err(ConfigError::new(
                "ENTRA_LOGIN_ENDPOINT",
                "must be https:// (the Entra credential library refuses any other authority, \
                 loopback included)",
            ));
        }
        let azure_federated_token_file = env.get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from);
        if credential == EntraCredentialKind::WorkloadIdentity
            && azure_federated_token_file.is_none()
        {
            return Err(ConfigError::new(
                "AZURE_FEDERATED_TOKEN_FILE",
                "is required by the workload identity credential",
            ));
        }
        let preflight = match env
            .get("FIDO_CONNECTOR_PREFLIGHT")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "warn" => PreflightMode::Warn,
            "strict" => PreflightMode::Strict,
            "off" => PreflightMode::Off,
            other => {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_PREFLIGHT",
                    format!("`{other}` is not one of warn, strict, off"),
                ))
            }
        };
        let policy_cache_s: u64 =
            env.num_in("FIDO_CONNECTOR_POLICY_CACHE_SECONDS", 300, 0..=86400)?;
        let product_aaguids = parse_product_aaguids(
            &env.get("FIDO_CONNECTOR_PRODUCT_AAGUIDS")
                .unwrap_or_default(),
        )
        .map_err(|m| ConfigError::new("FIDO_CONNECTOR_PRODUCT_AAGUIDS", m))?;
        Ok(Self {
            tenant_id,
            client_id,
            api_version,
            challenge_timeout_minutes,
            login_endpoint,
            graph_endpoint,
            credential,
            azure_client_id: env.get("AZURE_CLIENT_ID"),
            azure_client_secret: env.get("AZURE_CLIENT_SECRET").map(SecretString::from),
            azure_federated_token_file,
            preflight,
            policy_cache: Duration::from_secs(policy_cache_s),
            product_aaguids,
        })
    }
}

/// An API key for setups without Entra: only its SHA-256 hash is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    pub name: String,
    /// Lower-case hex SHA-256 of the full key.
    pub sha256_hex: String,
    pub grants: Vec<String>,
}

/// Who may call the API: `FIDO_CONNECTOR_ALLOWED_AUDIENCES`, `FIDO_CONNECTOR_AUTH_*`,
/// `FIDO_CONNECTOR_API_KEYS`, `FIDO_CONNECTOR_VENDOR_SCOPE_GRANTS_ALL`.
#[derive(Debug, Clone)]
pub struct CallerAuthConfig {
    /// Audiences accepted in caller tokens.
    pub allowed_audiences: Vec<String>,
    /// Tenant whose tokens callers present; defaults to `AZURE_TENANT_ID`.
    pub tenant_id: String,
    /// Where caller-token signing keys are discovered (OpenID configuration host).
    pub login_endpoint: Url,
    pub api_keys: Vec<ApiKeyConfig>,
    /// The vendor's behaviour: a delegated `create_request` scope grants every
    /// permission. Off by default; safe only when the app requires assignment.
    pub vendor_scope_grants_all: bool,
}

impl CallerAuthConfig {
    /// The tenant and login host default to the Entra section's.
    pub fn load(env: &Env, entra: &EntraConfig) -> Result<Self, ConfigError> {
        let allowed_audiences: Vec<String> = env
            .get("FIDO_CONNECTOR_ALLOWED_AUDIENCES")
            .map(|v| {
                v.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let tenant_id = env
            .get("FIDO_CONNECTOR_AUTH_TENANT_ID")
            .unwrap_or_else(|| entra.tenant_id.clone());
        let login_endpoint = env
            .url("FIDO_CONNECTOR_AUTH_LOGIN_ENDPOINT")?
            .unwrap_or_else(|| entra.login_endpoint.clone());
        require_https("FIDO_CONNECTOR_AUTH_LOGIN_ENDPOINT", &login_endpoint)?;
        let api_keys = match env.get("FIDO_CONNECTOR_API_KEYS") {
            None => Vec::new(),
            Some(v) => parse_api_keys(&v)?,
        };
        if allowed_audiences.is_empty() && api_keys.is_empty() {
            return Err(ConfigError::new(
                "FIDO_CONNECTOR_ALLOWED_AUDIENCES",
                "no way to authenticate callers: set the accepted token audiences \
                 (and/or FIDO_CONNECTOR_API_KEYS)",
            ));
        }
        let vendor_scope_grants_all =
            match env.get("FIDO_CONNECTOR_VENDOR_SCOPE_GRANTS_ALL").as_deref() {
                None | Some("false") | Some("0") => false,
                Some("true") | Some("1") => true,
                Some(other) => {
                    return Err(ConfigError::new(
                        "FIDO_CONNECTOR_VENDOR_SCOPE_GRANTS_ALL",
                        format!("`{other}` must be true or false"),
                    ))
                }
            };
        Ok(Self {
            allowed_audiences,
            tenant_id,
            login_endpoint,
            api_keys,
            vendor_scope_grants_all,
        })
    }
}

/// `name:sha256hex:grant+grant;name2:...` — only hashes, never keys, are configured.
pub fn parse_api_keys(v: &str) -> Result<Vec<ApiKeyConfig>, ConfigError> {
    const VAR: &str = "FIDO_CONNECTOR_API_KEYS";
    let mut out: Vec<ApiKeyConfig> = Vec::new();
    for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').collect();
        if parts.len() != 3 {
            return Err(ConfigError::new(
                VAR,
                "each entry must be name:sha256-hex:grant+grant (entries separated by ;)",
            ));
        }
        let (name, hash, grants) = (parts[0], parts[1].to_ascii_lowercase(), parts[2]);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(VAR, format!("bad key name `{name}`")));
        }
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ConfigError::new(
                VAR,
                format!("key `{name}`: the hash must be 64 hex characters (SHA-256)"),
            ));
        }
        let grants: Vec<String> = grants
            .split('+')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        if grants.is_empty() {
            return Err(ConfigError::new(VAR, format!("key `{name}` has no grants")));
        }
        // Audit lines name the key: two keys of one name could not be told apart.
        if out.iter().any(|k| k.name == name) {
            return Err(ConfigError::new(
                VAR,
                format!("key name `{name}` is used twice"),
            ));
        }
        out.push(ApiKeyConfig {
            name: name.to_string(),
            sha256_hex: hash,
            grants,
        });
    }
    Ok(out)
}
