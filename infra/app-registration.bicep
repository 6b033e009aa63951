// The app registration of the connector's own API (who may call fido-connector) and its
// service principal, declared with the Microsoft Graph Bicep extension
// (bicepconfig.json next to this file). Deploy it with a Bicep CLI of v0.36.1 or later:
//
//   az deployment group create -g fido-connector -f infra/app-registration.bicep \
//     -p apiIdentifier=fido-connector-api.contoso.com
//
// The deploying user needs Application.ReadWrite.All (e.g. the Application Developer role
// for a new app it then owns, or Cloud Application Administrator). Without the extension,
// infra/app-registration.sh does the same with az.
//
// The ids of the scope and of the roles are fixed literals, the same as in
// app-registration.sh: Graph refuses to change the id of an enabled scope or role, so both
// ways of creating the app must agree, and a redeployment must not generate new ones.

extension microsoftGraphV1

@description('Identifier of the API: the Application ID URI becomes api://<apiIdentifier>, e.g. fido-connector-api.contoso.com. The connector accepts tokens whose audience is this URI or the app id (FIDO_CONNECTOR_ALLOWED_AUDIENCES).')
param apiIdentifier string

@description('Immutable client-side key of the application in Graph (uniqueName); keep it across deployments.')
param uniqueName string = 'fido-connector-api'

param displayName string = 'fido-connector-api'

@description('The helpdesk console\'s sign-in return address, https://<connector host>/console/auth/callback (FIDO_CONNECTOR_CONSOLE_REDIRECT_URI); empty leaves the console without one (off).')
param consoleRedirectUri string = ''

var identifierUri = 'api://${apiIdentifier}'

// Fixed ids (see above). Never reuse one for a different scope or role.
var createRequestScopeId = '49ddb572-23f4-4bbb-9486-d459294c0ea1'
var roles = [
  {
    id: 'c8c0b440-3c57-4179-908b-37b1fea56601'
    value: 'Shipments.Create'
    displayName: 'Create shipments'
    description: 'Request a YubiKey shipment for a user.'
  }
  {
    id: '24e56ed9-b824-4f00-b8d1-96cbe586aaef'
    value: 'Shipments.Read'
    displayName: 'Read shipments'
    description: 'Read shipment requests and their state.'
  }
  {
    id: '3d43a52d-db33-45fc-b9fc-cb7afa480081'
    value: 'Pin.Resend'
    displayName: 'Resend PIN mails'
    description: 'Send the PIN mail of a shipment again.'
  }
  {
    id: '302c8b32-bc26-47bd-8ebb-641e91c1488a'
    value: 'Operations.Run'
    displayName: 'Run operations'
    description: 'Run the connector operations (processing and clean-up jobs).'
  }
  {
    id: '763b9c38-6813-5141-83f7-280b797a97c2'
    value: 'Shipments.Export'
    displayName: 'Export shipments'
    description: 'List every user\'s shipments and export them as CSV (bulk personal data).'
  }
  {
    id: 'b3da1ebe-688d-536c-b16e-f868ad097e81'
    value: 'Shipments.Manage'
    displayName: 'Manage shipments'
    description: 'Operator decisions: retry a failed shipment, resolve a create whose outcome is unknown. Never for daemons.'
  }
]

resource api 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  identifierUris: [
    identifierUri
  ]
  // The console signs people in with this app (the code flow, as a confidential client):
  // their ID token then carries the app roles assigned to them here.
  web: {
    redirectUris: empty(consoleRedirectUri) ? [] : [
      consoleRedirectUri
    ]
    implicitGrantSettings: {
      enableIdTokenIssuance: false
      enableAccessTokenIssuance: false
    }
  }
  api: {
    // v2 tokens: iss https://login.microsoftonline.com/<tenant>/v2.0, aud the app id.
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: [
      {
        id: createRequestScopeId
        value: 'create_request'
        // Admin consent only: no user can let a client act for them on their own.
        type: 'Admin'
        isEnabled: true
        adminConsentDisplayName: 'Act for the signed-in user with the connector'
        adminConsentDescription: 'Lets the client call fido-connector for the signed-in user. What the user may do there is set by the app roles assigned to the user.'
        userConsentDisplayName: 'Act for you with the connector'
        userConsentDescription: 'Lets the client call fido-connector for you, within the roles assigned to you.'
      }
    ]
  }
  appRoles: [for r in roles: {
    id: r.id
    value: r.value
    displayName: r.displayName
    description: r.description
    allowedMemberTypes: [
      'User'
      'Application'
    ]
    isEnabled: true
  }]
}

// Only users, groups and applications assigned one of the roles get a token for the API.
resource apiSp 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: api.appId
  appRoleAssignmentRequired: true
}

output appId string = api.appId
output identifierUri string = identifierUri
output servicePrincipalId string = apiSp.id
