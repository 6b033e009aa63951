// The fido-connector Container App: N identical, disposable replicas over Azure Tables and
// Key Vault, authenticated with a user-assigned managed identity. Resources it uses come
// from infra/main.bicep (pass its outputs).

param location string = resourceGroup().location
param name string = 'fido-connector'

@description('Container image, e.g. myregistry.azurecr.io/fido-connector:0.1.0')
param image string

param environmentId string
param identityId string
param identityClientId string
param tablesEndpoint string
@description('The vault of the static secrets (infra output keyVaultUri): read-only to the connector.')
param keyVaultUri string
@description('The vault of the per-shipment response keys (infra output responseKeyVaultUri): the only one the connector writes.')
param responseKeyVaultUri string

@description('Domains the PIN mail may go to, comma separated (e.g. contoso.com,contoso.de): a PIN is never mailed elsewhere, whatever a create request names.')
@minLength(3)
param allowedMailDomains string

@description('Audience of the managed-identity token sent to the mail trigger; the same string as infra mailTriggerAudience (token-only trigger, the infrastructure default).')
param mailTriggerAudience string = 'https://management.azure.com/'

@description('Entra tenant of the Graph app and of callers.')
param tenantId string = subscription().tenantId
@description('Application (client) id of the app registration with the Graph permission.')
param entraClientId string
@description('Accepted audiences of caller tokens, comma separated: the API app id (the aud of v2 tokens) and its URI, e.g. 00000000-0000-0000-0000-000000000000,api://fido-connector-api.contoso.com (infra/app-registration.bicep outputs).')
param allowedAudiences string

param yeApiBaseUrl string = 'https://api.console.yubico.com/v1'
param yeJwksSignEndpoint string = 'https://console.yubico.com/.well-known/yubico-sign.jwks'
param yeJwksTransportEndpoint string = 'https://console.yubico.com/.well-known/yubico-transport-keys.jwks'
param processSchedule string = '0 0 * * * *'
param cleanupSchedule string = '0 30 * * * *'
param cleanupCompletedDays string = '0'
param minReplicas int = 1
param maxReplicas int = 3

@description('IP ranges (CIDR) allowed to reach the ingress; empty for no IP restriction. Every other address gets 403.')
param allowedIngressCidrs array = []

@description('Ingress reachable from inside the Container Apps environment (and, for an environment in a VNet, from the VNet) only, not from the Internet.')
param internalIngress bool = false

// One Allow rule per range: once there is an Allow rule, every other address is denied.
var ingressIpRules = [for (cidr, i) in allowedIngressCidrs: {
  name: 'allow-${i}'
  description: 'Allowed caller range ${cidr}'
  ipAddressRange: cidr
  action: 'Allow'
}]

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: environmentId
    configuration: {
      ingress: {
        external: !internalIngress
        targetPort: 8080
        transport: 'http'
        allowInsecure: false
        ipSecurityRestrictions: ingressIpRules
      }
      secrets: [
        {
          // The Logic App trigger URL without its SAS signature (sp, sv, sig removed: the
          // trigger admits the connector's managed-identity token only): kept in Key Vault.
          name: 'email-api-send-endpoint'
          keyVaultUrl: '${keyVaultUri}secrets/email-api-send-endpoint'
          identity: identityId
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'fido-connector'
          image: image
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          env: [
            { name: 'AZURE_TABLES_ENDPOINT', value: tablesEndpoint }
            { name: 'AZURE_TABLES_SHIPMENTS_TABLE_NAME', value: 'fprshipments' }
            { name: 'AZURE_KEY_VAULT_ENDPOINT', value: keyVaultUri }
            { name: 'FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT', value: responseKeyVaultUri }
            { name: 'AZURE_TENANT_ID', value: tenantId }
            { name: 'AZURE_CLIENT_ID', value: identityClientId }
            { name: 'ENTRA_CREDENTIAL', value: 'managed_identity' }
            { name: 'ENTRA_FIDO_API_CLIENT_ID', value: entraClientId }
            { name: 'ENTRA_FIDO_API_VERSION', value: 'beta' }
            { name: 'ENTRA_FIDO_API_CHALLENGE_TIMEOUT_MINUTES', value: '20160' }
            { name: 'CRON_PROCESS_SHIPMENT_SCHEDULE', value: processSchedule }
            { name: 'CRON_DATA_CLEANUP_SCHEDULE', value: cleanupSchedule }
            { name: 'CRON_DATA_CLEANUP_COMPLETED_DAYS', value: cleanupCompletedDays }
            { name: 'EMAIL_API_SEND_ENDPOINT', secretRef: 'email-api-send-endpoint' }
            { name: 'EMAIL_API_TOKEN_AUDIENCE', value: mailTriggerAudience }
            { name: 'FIDO_CONNECTOR_ALLOWED_MAIL_DOMAINS', value: allowedMailDomains }
            { name: 'YE_API_BASE_URL', value: yeApiBaseUrl }
            { name: 'YE_JWKS_SIGN_ENDPOINT', value: yeJwksSignEndpoint }
            { name: 'YE_JWKS_TRANSPORT_ENDPOINT', value: yeJwksTransportEndpoint }
            { name: 'FIDO_CONNECTOR_ALLOWED_AUDIENCES', value: allowedAudiences }
            { name: 'FIDO_CONNECTOR_STORE', value: 'azure' }
            { name: 'FIDO_CONNECTOR_SECRETS', value: 'keyvault' }
            { name: 'LOGGING_LEVEL_COM_YUBICO', value: 'INFO' }
          ]
          probes: [
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 10
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: 8080
              }
              periodSeconds: 10
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http'
            http: {
              metadata: {
                concurrentRequests: '50'
              }
            }
          }
        ]
      }
    }
  }
}

output url string = 'https://${app.properties.configuration.ingress.fqdn}'
