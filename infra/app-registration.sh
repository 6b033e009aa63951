#!/usr/bin/env bash
# Creates or updates the app registration of the connector's API (who may call
# fido-connector) and its service principal, for deployers who cannot use the Microsoft
# Graph Bicep extension (app-registration.bicep does the same). Idempotent: run it again
# after any change.
#
#   infra/app-registration.sh fido-connector-api.contoso.com [display name]
#
# What it does:
#   1. looks the application up by its Application ID URI api://<identifier>;
#   2. creates it if there is none (single tenant);
#   3. sets the delegated scope create_request, the app roles Shipments.Create,
#      Shipments.Read, Pin.Resend, Operations.Run (users and applications) and
#      requestedAccessTokenVersion 2, keeping any other scope or role the app has;
#   4. creates the service principal if needed and sets appRoleAssignmentRequired=true;
#   5. with CONSOLE_REDIRECT_URI=https://<host>/console/auth/callback set, makes it the
#      app's web redirect URI (the helpdesk console's sign-in; no implicit grant).
#
# Needs: az (signed in with Application.ReadWrite.All, e.g. Cloud Application
# Administrator, or Application Developer for an app it owns) and jq.
set -euo pipefail

usage() {
  echo "usage: $0 <api identifier, e.g. fido-connector-api.contoso.com> [display name]" >&2
  exit 2
}

[ $# -ge 1 ] && [ -n "$1" ] || usage
IDENTIFIER="${1#api://}"
IDENTIFIER_URI="api://${IDENTIFIER}"
DISPLAY_NAME="${2:-fido-connector-api}"
GRAPH="https://graph.microsoft.com/v1.0"

for tool in az jq; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done

# The same fixed ids as app-registration.bicep: Graph refuses to change the id of an
# enabled scope or role, so both ways must agree. An app that already has a scope or a
# role of the same value keeps that one's id.
DESIRED_SCOPES=$(jq -n '[
  {
    id: "49ddb572-23f4-4bbb-9486-d459294c0ea1",
    value: "create_request",
    type: "Admin",
    isEnabled: true,
    adminConsentDisplayName: "Act for the signed-in user with the connector",
    adminConsentDescription: "Lets the client call fido-connector for the signed-in user. What the user may do there is set by the app roles assigned to the user.",
    userConsentDisplayName: "Act for you with the connector",
    userConsentDescription: "Lets the client call fido-connector for you, within the roles assigned to you."
  }
]')
DESIRED_ROLES=$(jq -n '[
  {id: "c8c0b440-3c57-4179-908b-37b1fea56601", value: "Shipments.Create",
   displayName: "Create shipments", description: "Request a YubiKey shipment for a user."},
  {id: "24e56ed9-b824-4f00-b8d1-96cbe586aaef", value: "Shipments.Read",
   displayName: "Read shipments", description: "Read shipment requests and their state."},
  {id: "3d43a52d-db33-45fc-b9fc-cb7afa480081", value: "Pin.Resend",
   displayName: "Resend PIN mails", description: "Send the PIN mail of a shipment again."},
  {id: "302c8b32-bc26-47bd-8ebb-641e91c1488a", value: "Operations.Run",
   displayName: "Run operations", description: "Run the connector operations (processing and clean-up jobs)."},
  {id: "763b9c38-6813-5141-83f7-280b797a97c2", value: "Shipments.Export",
   displayName: "Export shipments", description: "List every user'"'"'s shipments and export them as CSV (bulk personal data)."},
  {id: "b3da1ebe-688d-536c-b16e-f868ad097e81", value: "Shipments.Manage",
   displayName: "Manage shipments", description: "Operator decisions: retry a failed shipment, resolve a create whose outcome is unknown. Never for daemons."}
] | map(. + {allowedMemberTypes: ["User", "Application"], isEnabled: true})')

# 1. Look the application up by its identifier URI.
echo "Looking for the application with identifier URI ${IDENTIFIER_URI}" >&2
FOUND=$(az ad app list --filter "identifierUris/any(x:x eq '${IDENTIFIER_URI}')" \
  --query '[].{id:id, appId:appId}' -o json)
COUNT=$(jq 'length' <<<"$FOUND")
if [ "$COUNT" -gt 1 ]; then
  echo "error: ${COUNT} applications have ${IDENTIFIER_URI}; resolve by hand" >&2
  exit 1
fi

# 2. Create it if missing.
if [ "$COUNT" -eq 0 ]; then
  echo "Creating ${DISPLAY_NAME}" >&2
  CREATED=$(az ad app create --display-name "$DISPLAY_NAME" \
    --sign-in-audience AzureADMyOrg --identifier-uris "$IDENTIFIER_URI" -o json)
  OBJECT_ID=$(jq -r '.id' <<<"$CREATED")
  APP_ID=$(jq -r '.appId' <<<"$CREATED")
else
  OBJECT_ID=$(jq -r '.[0].id' <<<"$FOUND")
  APP_ID=$(jq -r '.[0].appId' <<<"$FOUND")
  echo "Found ${APP_ID}" >&2
fi

# 3. Scope, roles and token version. Merge with what the app has: a scope or role of
# the same value keeps its id, other ones stay as they are (Graph would refuse to drop an
# enabled one anyway).
CURRENT=$(az rest --method GET --uri "${GRAPH}/applications/${OBJECT_ID}?\$select=api,appRoles" -o json)
BODY=$(jq -n \
  --argjson cur "$CURRENT" \
  --argjson scopes "$DESIRED_SCOPES" \
  --argjson roles "$DESIRED_ROLES" '
  def merge($have; $want):
    ($want | map(.value)) as $values
    | ($have | map(select(.value as $v | $values | index($v) | not)))
      + ($want | map(. as $w
          | (($have | map(select(.value == $w.value)) | first) // null) as $old
          | if $old then $w + {id: $old.id} else $w end));
  {
    api: (($cur.api // {}) + {
      requestedAccessTokenVersion: 2,
      oauth2PermissionScopes: merge($cur.api.oauth2PermissionScopes // []; $scopes)
    }),
    appRoles: merge($cur.appRoles // []; $roles)
  }')
echo "Setting scope, app roles and token version" >&2
az rest --method PATCH --uri "${GRAPH}/applications/${OBJECT_ID}" \
  --headers 'Content-Type=application/json' --body "$BODY" -o none

# 4. Service principal; only assigned users, groups and applications get a token.
SP_ID=$(az ad sp list --filter "appId eq '${APP_ID}'" --query '[0].id' -o tsv)
if [ -z "$SP_ID" ]; then
  echo "Creating the service principal" >&2
  SP_ID=$(az ad sp create --id "$APP_ID" --query id -o tsv)
fi
echo "Requiring app role assignment on the service principal" >&2
az rest --method PATCH --uri "${GRAPH}/servicePrincipals/${SP_ID}" \
  --headers 'Content-Type=application/json' \
  --body '{"appRoleAssignmentRequired": true}' -o none

# 5. The console's sign-in return address, when given.
if [ -n "${CONSOLE_REDIRECT_URI:-}" ]; then
  case "$CONSOLE_REDIRECT_URI" in
    https://*/console/auth/callback) ;;
    *) echo "CONSOLE_REDIRECT_URI must be https://<host>/console/auth/callback" >&2; exit 2 ;;
  esac
  echo "Setting the console's redirect URI" >&2
  az rest --method PATCH --uri "${GRAPH}/applications/${OBJECT_ID}" \
    --headers 'Content-Type=application/json' \
    --body "$(jq -n --arg u "$CONSOLE_REDIRECT_URI" '{web: {redirectUris: [$u], implicitGrantSettings: {enableIdTokenIssuance: false, enableAccessTokenIssuance: false}}}')" -o none
fi

jq -n --arg appId "$APP_ID" --arg identifierUri "$IDENTIFIER_URI" --arg servicePrincipalId "$SP_ID" \
  '{appId: $appId, identifierUri: $identifierUri, servicePrincipalId: $servicePrincipalId}'
