//! The identity providers a deployment serves (`FIDO_CONNECTOR_IDP_CONFIG`).
//!
//! Without the variable the deployment is single-IdP, exactly as before: one Entra instance
//! named `default`, configured by the `ENTRA_*` / `AZURE_*` variables. With it, a YAML file
//! (the vendor calls it `multi-idp-config.yaml`) names instances and a default:
//!
//! ```yaml
//! default: contoso
//! instances:
//!   - name: contoso          # the Entra tenant of the ENTRA_* variables
//!     kind: entra
//!   - name: fabrikam
//!     kind: okta
//!     org_url: https://fabrikam.okta.com
//!     client_id: 0oa1fprconnector
//!     private_key_secret: okta-fabrikam-key
//!     rp_ids: [fabrikam.okta.com]
//! ```
//!
//! Every problem stops the start with the instance and the field named. That an Okta
//! instance's key is in the secret store, and that no open shipment uses an instance the
//! file no longer has, are checked when the service is built (`app::build_idps`).

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::env::{parse_url, require_https};
use super::ConfigError;
pub use crate::domain::fields::valid_instance_name;

pub const IDP_CONFIG_VAR: &str = "FIDO_CONNECTOR_IDP_CONFIG";
/// The name of the one Entra instance in single-IdP mode.
pub const DEFAULT_INSTANCE: &str = "default";
/// Okta's challenge lifetime is not part of its `enroll` answer: the connector's deadline
/// for Yubico to program the key, unless the instance sets `challenge_timeout_minutes`.
pub const DEFAULT_OKTA_CHALLENGE_MINUTES: u32 = 20160;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpsConfig {
    /// The instance that serves a create naming none.
    pub default: String,
    pub instances: Vec<IdpInstanceConfig>,
    /// Whether the deployment was configured with a file (multi-IdP mode).
    pub from_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpInstanceConfig {
    pub name: String,
    pub kind: IdpKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdpKind {
    /// The Entra tenant of the `ENTRA_*` variables (at most one instance).
    Entra,
    Okta(OktaInstanceConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaInstanceConfig {
    pub org_url: url::Url,
    pub client_id: String,
    /// The secret holding the service app's private key (a JWK, RS256).
    pub private_key_secret: String,
    /// The relying-party ids enrolled for.
    pub rp_ids: Vec<String>,
    pub challenge_timeout_minutes: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: Option<String>,
    instances: Vec<RawInstance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: Option<String>,
    kind: Option<String>,
    org_url: Option<String>,
    client_id: Option<String>,
    private_key_secret: Option<String>,
    #[serde(default)]
    rp_ids: Vec<String>,
    challenge_timeout_minutes: Option<u32>,
}

impl IdpsConfig {
    /// Single-IdP mode: the Entra instance of the environment, named `default`.
    pub fn single() -> Self {
        IdpsConfig {
            default: DEFAULT_INSTANCE.into(),
            instances: vec![IdpInstanceConfig {
                name: DEFAULT_INSTANCE.into(),
                kind: IdpKind::Entra,
            }],
            from_file: false,
        }
    }

    pub(super) fn load(path: Option<&str>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::single());
        };
        let text = std::fs::read_to_string(Path::new(path))
            .map_err(|e| ConfigError::new(IDP_CONFIG_VAR, format!("{path}: {e}")))?;
        Self::parse(&text)
    }

    /// Parses and checks a multi-IdP file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: File = yaml_serde::from_str(text)
            .map_err(|e| ConfigError::new(IDP_CONFIG_VAR, format!("not a valid file: {e}")))?;
        let at = |i: &str, field: &str| format!("{IDP_CONFIG_VAR}: instance `{i}`: {field}");
        let mut names = BTreeSet::new();
        let mut instances = Vec::new();
        for (n, raw) in file.instances.into_iter().enumerate() {
            let name = raw.name.unwrap_or_default();
            let label = if name.is_empty() {
                format!("#{}", n + 1)
            } else {
                name.clone()
            };
            if !valid_instance_name(&name) {
                return Err(ConfigError::new(
                    &at(&label, "name"),
                    "must be 1 to 32 lower-case letters, digits or `-`",
                ));
            }
            if !names.insert(name.clone()) {
                return Err(ConfigError::new(
                    &at(&label, "name"),
                    "used by two instances; each name must be unique",
                ));
            }
            let kind = match raw.kind.as_deref() {
                Some("entra") => {
                    for (field, set) in [
                        ("org_url", raw.org_url.is_some()),
                        ("client_id", raw.client_id.is_some()),
                        ("private_key_secret", raw.private_key_secret.is_some()),
                        ("rp_ids", !raw.rp_ids.is_empty()),
                    ] {
                        if set {
                            return Err(ConfigError::new(
                                &at(&label, field),
                                "is an Okta setting; the Entra instance is configured by the \
                                 ENTRA_* and AZURE_* variables",
                            ));
                        }
                    }
                    IdpKind::Entra
                }
                Some("okta") => {
                    let need = |v: Option<String>, field: &str| {
                        v.map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .ok_or_else(|| {
                                ConfigError::new(&at(&label, field), "required for kind okta")
                            })
                    };
                    let org = need(raw.org_url, "org_url")?;
                    let org_var = at(&label, "org_url");
                    let org_url = parse_url(&org_var, &org)?;
                    require_https(&org_var, &org_url)?;
                    let client_id = need(raw.client_id, "client_id")?;
                    let private_key_secret = need(raw.private_key_secret, "private_key_secret")?;
                    let rp_ids: Vec<String> = raw
                        .rp_ids
                        .into_iter()
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if rp_ids.is_empty() {
                        return Err(ConfigError::new(
                            &at(&label, "rp_ids"),
                            "at least one relying-party id is required for kind okta",
                        ));
                    }
                    let minutes = raw
                        .challenge_timeout_minutes
                        .unwrap_or(DEFAULT_OKTA_CHALLENGE_MINUTES);
                    if !(5..=43200).contains(&minutes) {
                        return Err(ConfigError::new(
                            &at(&label, "challenge_timeout_minutes"),
                            "must be between 5 and 43200",
                        ));
                    }
                    IdpKind::Okta(OktaInstanceConfig {
                        org_url,
                        client_id,
                        private_key_secret,
                        rp_ids,
                        challenge_timeout_minutes: minutes,
                    })
                }
                Some(other) => {
                    return Err(ConfigError::new(
                        &at(&label, "kind"),
                        format!("`{other}` is not a known kind (entra or okta)"),
                    ))
                }
                None => {
                    return Err(ConfigError::new(
                        &at(&label, "kind"),
                        "required (entra or okta)",
                    ))
                }
            };
            instances.push(IdpInstanceConfig { name, kind });
        }
        if instances.is_empty() {
            return Err(ConfigError::new(
                &format!("{IDP_CONFIG_VAR}: instances"),
                "the file names no instance",
            ));
        }
        let entras: Vec<&str> = instances
            .iter()
            .filter(|i| i.kind == IdpKind::Entra)
            .map(|i| i.name.as_str())
            .collect();
        if entras.len() > 1 {
            return Err(ConfigError::new(
                &at(entras[1], "kind"),
                format!(
                    "a second Entra instance (after `{}`): one deployment serves one Entra tenant",
                    entras[0]
                ),
            ));
        }
        let default = match file.default {
            Some(d) => d,
            None if instances.len() == 1 => instances[0].name.clone(),
            None => {
                return Err(ConfigError::new(
                    &format!("{IDP_CONFIG_VAR}: default"),
                    "required when the file names several instances",
                ))
            }
        };
        if !names.contains(&default) {
            return Err(ConfigError::new(
                &format!("{IDP_CONFIG_VAR}: default"),
                format!("`{default}` is not one of the instances"),
            ));
        }
        Ok(IdpsConfig {
            default,
            instances,
            from_file: true,
        })
    }

    /// The Entra instance's name, when the deployment has one.
    pub fn entra_name(&self) -> Option<&str> {
        self.instances
            .iter()
            .find(|i| i.kind == IdpKind::Entra)
            .map(|i| i.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "default: contoso\ninstances:\n  - name: contoso\n    kind: entra\n  - name: fabrikam\n    kind: okta\n    org_url: https://fabrikam.okta.com\n    client_id: 0oa1\n    private_key_secret: okta-key\n    rp_ids: [fabrikam.okta.com]\n";

    #[test]
    fn a_good_file_names_its_instances_and_default() {
        let c = IdpsConfig::parse(GOOD).unwrap();
        assert_eq!(c.default, "contoso");
        assert_eq!(c.entra_name(), Some("contoso"));
        let fabrikam = c.instances.iter().find(|i| i.name == "fabrikam").unwrap();
        match &fabrikam.kind {
            IdpKind::Okta(o) => {
                assert_eq!(o.rp_ids, ["fabrikam.okta.com"]);
                assert_eq!(o.challenge_timeout_minutes, DEFAULT_OKTA_CHALLENGE_MINUTES);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_files_name_the_instance_and_the_field() {
        for (text, var, why) in [
            (
                GOOD.replace("kind: okta", "kind: ping"),
                "instance `fabrikam`: kind",
                "not a known kind",
            ),
            (
                GOOD.replace("name: fabrikam", "name: contoso"),
                "instance `contoso`: name",
                "unique",
            ),
            (
                GOOD.replace("    private_key_secret: okta-key\n", ""),
                "instance `fabrikam`: private_key_secret",
                "required",
            ),
            (
                GOOD.replace("https://fabrikam", "http://fabrikam"),
                "instance `fabrikam`: org_url",
                "HTTPS",
            ),
            (
                GOOD.replace("[fabrikam.okta.com]", "[]"),
                "instance `fabrikam`: rp_ids",
                "relying-party",
            ),
            (
                GOOD.replace("default: contoso", "default: nobody"),
                "default",
                "not one of",
            ),
            (
                GOOD.replace(
                    "name: fabrikam\n    kind: okta",
                    "name: two\n    kind: entra",
                ),
                "instance `two`: org_url",
                "Okta setting",
            ),
            (
                GOOD.replace("client_id: 0oa1", "client_id: 0oa1\n    colour: red"),
                "FIDO_CONNECTOR_IDP_CONFIG",
                "colour",
            ),
        ] {
            let e = IdpsConfig::parse(&text).unwrap_err();
            assert!(e.var.ends_with(var), "{e}");
            assert!(e.to_string().contains(why), "{e}");
        }
    }

    #[test]
    fn without_a_file_the_one_instance_is_the_environments_entra() {
        let c = IdpsConfig::load(None).unwrap();
        assert!(!c.from_file);
        assert_eq!(c.default, DEFAULT_INSTANCE);
        assert_eq!(c.entra_name(), Some(DEFAULT_INSTANCE));
    }
}
