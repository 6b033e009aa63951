//! Pre-flight checks of a create: what Microsoft Graph can tell before a key is ordered
//! that would make its registration fail after Yubico programmed and shipped it. Each
//! check answers `pass`, `fail` (the create is refused with the check named and the
//! admin's fix) or `unknown` (it could not be evaluated: the app lacks a Graph permission,
//! or Graph is unavailable; logged, and refused only with `FIDO_CONNECTOR_PREFLIGHT=strict`).
//! docs/preflight.md lists each check with its permission and fix.

use serde::Serialize;

use super::{Deps, LifecycleError};
use crate::config::{PreflightMode, YUBIKEY_5_AAGUIDS};
use crate::domain::ShipmentRequest;
use crate::upstream::{EntraUser, Fido2Policy, UpstreamError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    Pass,
    Fail,
    Unknown,
}

/// One check's outcome, as the dry run shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub result: CheckResult,
    pub message: String,
}

fn check(name: &'static str, result: CheckResult, message: impl Into<String>) -> Check {
    Check {
        name,
        result,
        message: message.into(),
    }
}

/// Why a Graph read gave no answer, for an `unknown` check.
fn unavailable(what: &str, permission: &str, e: &UpstreamError) -> String {
    match e {
        UpstreamError::Rejected { status: 403, .. } | UpstreamError::Unauthorized { .. } => {
            format!("the connector may not read {what}: grant its app the Microsoft Graph application permission {permission}")
        }
        other => format!("could not read {what}: {other}"),
    }
}

/// The group ids a policy names (include and exclude), without `all_users`.
fn policy_groups(p: &Fido2Policy) -> Vec<String> {
    let mut ids: Vec<String> = p
        .include_targets
        .iter()
        .chain(&p.exclude_targets)
        .filter(|(kind, id)| kind.eq_ignore_ascii_case("group") && id != "all_users")
        .map(|(_, id)| id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Whether the policy targets the user: included (all users, the user, or a group of
/// theirs) and not excluded.
async fn targeting(deps: &Deps, p: &Fido2Policy, user: &EntraUser) -> Check {
    const NAME: &str = "user_targeted";
    let groups = policy_groups(p);
    let member: Vec<String> = if groups.is_empty() {
        vec![]
    } else {
        match deps.idp.member_groups(&user.id, &groups).await {
            Ok(m) => m,
            Err(e) => {
                return check(
                    NAME,
                    CheckResult::Unknown,
                    unavailable("the user's group memberships", "GroupMember.Read.All", &e),
                )
            }
        }
    };
    let hits = |targets: &[(String, String)]| -> Option<String> {
        targets.iter().find_map(|(kind, id)| {
            let hit = id == "all_users"
                || (kind.eq_ignore_ascii_case("user") && id.eq_ignore_ascii_case(&user.id))
                || member.iter().any(|m| m.eq_ignore_ascii_case(id));
            hit.then(|| id.clone())
        })
    };
    if let Some(g) = hits(&p.exclude_targets) {
        return check(
            NAME,
            CheckResult::Fail,
            format!("the passkey (FIDO2) policy excludes `{g}`, which holds this user: remove the user from that group or the group from the policy's exclusions"),
        );
    }
    match hits(&p.include_targets) {
        Some(g) if g == "all_users" => check(NAME, CheckResult::Pass, "the passkey (FIDO2) policy targets all users"),
        Some(g) => check(NAME, CheckResult::Pass, format!("the passkey (FIDO2) policy targets group `{g}`, which holds this user")),
        None => check(
            NAME,
            CheckResult::Fail,
            "the passkey (FIDO2) policy does not target this user: add the user to a targeted group, or target all users",
        ),
    }
}

/// Whether the ordered key model is allowed by the policy's key restrictions.
fn key_models(deps: &Deps, p: &Fido2Policy, product_id: i64) -> Check {
    const NAME: &str = "key_model_allowed";
    let Some(kr) = p.key_restrictions.as_ref().filter(|k| k.enforced) else {
        return check(
            NAME,
            CheckResult::Pass,
            "the policy does not restrict key models",
        );
    };
    let mapped = u32::try_from(product_id)
        .ok()
        .and_then(|id| deps.config.entra.product_aaguids.get(&id));
    let candidates: Vec<String> = match mapped {
        Some(list) => list.clone(),
        None => YUBIKEY_5_AAGUIDS.iter().map(|s| s.to_string()).collect(),
    };
    let listed = |a: &String| kr.aaguids.iter().any(|x| x.eq_ignore_ascii_case(a));
    let allowed: Vec<&String> = candidates
        .iter()
        .filter(|a| (kr.enforcement_type == "allow") == listed(a))
        .collect();
    let fix =
        "add the model's AAGUID to the passkey policy's key restrictions, or order another product";
    if allowed.len() == candidates.len() {
        check(
            NAME,
            CheckResult::Pass,
            format!(
                "the policy's key restrictions ({}) admit product {product_id}",
                kr.enforcement_type
            ),
        )
    } else if allowed.is_empty() || mapped.is_some() {
        check(
            NAME,
            CheckResult::Fail,
            format!(
                "the policy's key restrictions ({}) refuse the AAGUIDs of product {product_id} ({}): {fix}",
                kr.enforcement_type,
                candidates
                    .iter()
                    .filter(|a| !allowed.contains(a))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else {
        check(
            NAME,
            CheckResult::Unknown,
            format!("the policy's key restrictions admit some YubiKey 5 models and not others, and product {product_id} is not mapped to its AAGUIDs: set FIDO_CONNECTOR_PRODUCT_AAGUIDS"),
        )
    }
}

/// Every check for a request whose user Graph found.
pub async fn run(deps: &Deps, req: &ShipmentRequest, user: &EntraUser) -> Vec<Check> {
    let mut out = Vec::with_capacity(8);
    out.push(check(
        "user_exists",
        CheckResult::Pass,
        format!("Entra user {}", user.id),
    ));
    out.push(match user.account_enabled {
        Some(true) => check("account_enabled", CheckResult::Pass, "the account is enabled"),
        Some(false) => check(
            "account_enabled",
            CheckResult::Fail,
            "the user's account is disabled in Entra: enable it (accountEnabled) before ordering a key",
        ),
        None => check("account_enabled", CheckResult::Unknown, "Graph did not return accountEnabled"),
    });
    out.push(match user.user_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("Member") => {
            check("member_user", CheckResult::Pass, "the user is a member")
        }
        Some(t) => check(
            "member_user",
            CheckResult::Fail,
            format!("the user's type is {t}: passkeys cannot be registered for guests; order for the user's member account"),
        ),
        None => check("member_user", CheckResult::Unknown, "Graph did not return userType"),
    });
    match deps.idp.fido2_policy().await {
        Ok(p) => {
            out.push(if p.enabled {
                check("passkey_method_enabled", CheckResult::Pass, "the passkey (FIDO2) method is enabled")
            } else {
                check(
                    "passkey_method_enabled",
                    CheckResult::Fail,
                    "the passkey (FIDO2) method is disabled in the tenant's authentication methods policy: enable it",
                )
            });
            out.push(targeting(deps, &p, user).await);
            out.push(if p.self_service_registration {
                check("self_service_registration", CheckResult::Pass, "self-service set up is allowed")
            } else {
                check(
                    "self_service_registration",
                    CheckResult::Fail,
                    "the passkey policy does not allow self-service set up (isSelfServiceRegistrationAllowed), and Graph then refuses registering the key: allow it",
                )
            });
            out.push(key_models(deps, &p, req.product_id()));
        }
        Err(e) => {
            let why = unavailable(
                "the tenant's passkey (FIDO2) policy",
                "Policy.Read.AuthenticationMethod",
                &e,
            );
            for name in [
                "passkey_method_enabled",
                "user_targeted",
                "self_service_registration",
                "key_model_allowed",
            ] {
                out.push(check(name, CheckResult::Unknown, why.clone()));
            }
        }
    }
    let recipients = req.mail_recipients();
    out.push(if recipients.iter().any(|r| !r.trim().is_empty()) {
        check(
            "pin_recipient",
            CheckResult::Pass,
            format!("the PIN goes to {} address(es)", recipients.len()),
        )
    } else {
        check(
            "pin_recipient",
            CheckResult::Fail,
            "nobody would receive the PIN: give enrollment_contacts.emails_to or recipient_email",
        )
    });
    out
}

/// Whether a check refuses the create in this mode: a failure (with `off`, only an unknown
/// user), and with `strict` an unknown result too.
pub fn blocks(mode: PreflightMode, c: &Check) -> bool {
    match mode {
        PreflightMode::Off => c.name == "user_exists" && c.result == CheckResult::Fail,
        PreflightMode::Warn => c.result == CheckResult::Fail,
        PreflightMode::Strict => c.result != CheckResult::Pass,
    }
}

/// Applies the checks to a create: the first failed check (or, in strict mode, the first
/// that could not be evaluated) refuses it; the others are logged.
pub async fn enforce(
    deps: &Deps,
    req: &ShipmentRequest,
    user: &EntraUser,
) -> Result<(), LifecycleError> {
    if deps.config.entra.preflight == PreflightMode::Off {
        return Ok(());
    }
    let checks = run(deps, req, user).await;
    let strict = deps.config.entra.preflight == PreflightMode::Strict;
    for c in &checks {
        if c.result == CheckResult::Unknown {
            tracing::warn!(check = c.name, reason = %c.message, strict, "pre-flight check could not be evaluated");
        }
    }
    match checks
        .into_iter()
        .find(|c| blocks(deps.config.entra.preflight, c))
    {
        Some(c) => Err(LifecycleError::PreflightFailed {
            check: c.name,
            message: c.message,
        }),
        None => Ok(()),
    }
}
