//! What a caller may do: the permissions, how Entra token claims grant them, and the
//! authenticated [`Caller`].

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    ShipmentsCreate,
    ShipmentsRead,
    PinResend,
    OperationsRun,
    /// Listings across users and the CSV export (bulk personal data).
    ShipmentsExport,
    /// Operator decisions: retry a failed shipment, resolve an unknown create.
    ShipmentsManage,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::ShipmentsCreate,
        Permission::ShipmentsRead,
        Permission::PinResend,
        Permission::OperationsRun,
        Permission::ShipmentsExport,
        Permission::ShipmentsManage,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::ShipmentsCreate => "Shipments.Create",
            Permission::ShipmentsRead => "Shipments.Read",
            Permission::PinResend => "Pin.Resend",
            Permission::OperationsRun => "Operations.Run",
            Permission::ShipmentsExport => "Shipments.Export",
            Permission::ShipmentsManage => "Shipments.Manage",
        }
    }

    /// Grants named in API-key configuration. `create_request` grants everything there.
    pub fn from_grant(grant: &str) -> Vec<Permission> {
        match grant {
            "create_request" => Permission::ALL.to_vec(),
            "Shipments.Create" => vec![Permission::ShipmentsCreate],
            "Shipments.Read" => vec![Permission::ShipmentsRead],
            "Pin.Resend" => vec![Permission::PinResend],
            "Operations.Run" => vec![Permission::OperationsRun],
            "Shipments.Export" => vec![Permission::ShipmentsExport],
            "Shipments.Manage" => vec![Permission::ShipmentsManage],
            _ => vec![],
        }
    }
}

/// What an Entra access token lets its bearer do.
///
/// * App-only token (no `scp`): the app's own app roles.
/// * Delegated token (`scp`): the scopes say what the client may do on the user's behalf
///   (`create_request` covers every action, `Shipments.Read` etc. one each); the user's
///   app roles say what the user may do. Both must agree: the result is the intersection.
/// * With `vendor_scope_grants_all` (the vendor connector's behaviour, off by default), a
///   delegated `create_request` alone grants everything: safe only when the enterprise
///   application requires assignment, so that only assigned users obtain the scope.
pub fn effective_permissions(
    scopes: &[&str],
    roles: &[&str],
    vendor_scope_grants_all: bool,
) -> BTreeSet<Permission> {
    let role = |r: &str| match r {
        "Shipments.Create" => Some(Permission::ShipmentsCreate),
        "Shipments.Read" => Some(Permission::ShipmentsRead),
        "Pin.Resend" => Some(Permission::PinResend),
        "Operations.Run" => Some(Permission::OperationsRun),
        "Shipments.Export" => Some(Permission::ShipmentsExport),
        "Shipments.Manage" => Some(Permission::ShipmentsManage),
        _ => None,
    };
    let by_roles: BTreeSet<Permission> = roles.iter().filter_map(|r| role(r)).collect();
    if scopes.is_empty() {
        return by_roles;
    }
    if vendor_scope_grants_all && scopes.contains(&"create_request") {
        return Permission::ALL.into_iter().collect();
    }
    let client_may: BTreeSet<Permission> = scopes
        .iter()
        .flat_map(|s| match *s {
            "create_request" => Permission::ALL.to_vec(),
            other => role(other).into_iter().collect(),
        })
        .collect();
    client_may.intersection(&by_roles).copied().collect()
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who, for audit logs: token subject/app id, or `apikey:<name>`.
    pub subject: String,
    pub permissions: BTreeSet<Permission>,
}

impl Caller {
    pub fn require(&self, p: Permission) -> Result<(), Forbidden> {
        if self.permissions.contains(&p) {
            Ok(())
        } else {
            Err(Forbidden(p))
        }
    }
}

/// The caller lacks a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("caller lacks the {} permission", .0.as_str())]
pub struct Forbidden(pub Permission);
