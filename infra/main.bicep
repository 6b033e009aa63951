// Azure resources fido-connector needs, in the customer's subscription:
// storage account + the shipments table, Key Vault (RBAC), the PIN mail Logic App,
// a user-assigned managed identity with its role assignments, and the Container Apps
// environment with its Log Analytics workspace. Optionally (enablePrivateEndpoints) a
// VNet with a subnet for the Container Apps environment and one for private endpoints,
// private endpoints for the table service and the vault, and their private DNS zones.
// The app itself is deployed by deploy/main.bicep; the app registration of the
// connector's API by app-registration.bicep (or app-registration.sh).

targetScope = 'resourceGroup'

@description('Short prefix for resource names (3-11 lowercase letters/digits).')
@minLength(3)
@maxLength(11)
param prefix string

param location string = resourceGroup().location

@description('Name of the shipments table (AZURE_TABLES_SHIPMENTS_TABLE_NAME).')
param tableName string = 'fprshipments'

@description('Public network access to the storage account and the vault while private endpoints are off. Disabled by default: turn on enablePrivateEndpoints (or open it to the IP ranges below). Always Disabled with private endpoints.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Disabled'

@description('IP ranges (CIDR) allowed through the firewalls when public network access is enabled.')
param allowedIpRanges array = []

@description('Create a VNet (one subnet for the Container Apps environment, one for private endpoints), private endpoints for the table service and the vault, and their private DNS zones; public network access is then Disabled. An environment joins a VNet only when it is created: turning this on later means a new environment.')
param enablePrivateEndpoints bool = false

@description('Address space of the VNet (enablePrivateEndpoints).')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Subnet of the Container Apps environment (a consumption-only environment needs /23 or larger, not delegated).')
param appsSubnetPrefix string = '10.40.0.0/23'

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string = '10.40.2.0/27'

@description('With enablePrivateEndpoints: the environment gets an internal load balancer only, so the app is reachable from the VNet (and peered networks) only; you then need a private DNS zone for the environment default domain.')
param internalEnvironment bool = false

@description('Office 365 connection (resource id) the mail Logic App sends with; create and authorise it in the portal first.')
param office365ConnectionId string

@description('Sender shown in PIN mails.')
param mailFrom string = ''

@description('Audience of the managed-identity token the connector presents to the mail trigger (claim aud of the trigger authorization policy).')
param mailTriggerAudience string = 'https://management.azure.com/'

@description('Turn off the SAS signature (sig) of the mail trigger, so that only the authorization policy (the connector managed identity) lets a call in (the default: token-only). Needs a connector that sends a bearer token to the trigger (EMAIL_API_TOKEN_AUDIENCE) and a trigger URL without sp, sv and sig (infra/README.md). Set false only while migrating a connector that still calls the signed URL.')
param disableMailTriggerSas bool = true

@description('IP ranges (CIDR) allowed to call the mail trigger, e.g. the outbound addresses of the Container Apps environment; empty for no IP restriction.')
param mailTriggerAllowedCallerIps array = []

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageName string
// Two vaults with different rights: the static secrets (read-only to the connector) and
// the per-shipment response keys (the only secrets it writes).
var vaultName = '${prefix}-fpr-kv'
var keysVaultName = '${prefix}-fpr-keys'
// The mail relay's record of message ids it has sent (one PIN mail per message_id).
var mailSentTableName = 'fprmailsent'
var identityName = '${prefix}-fpr-identity'
var vnetName = '${prefix}-fpr-vnet'
var appsSubnetName = 'apps'
var privateEndpointSubnetName = 'private-endpoints'
var appsSubnetId = resourceId('Microsoft.Network/virtualNetworks/subnets', vnetName, appsSubnetName)
var privateEndpointSubnetId = resourceId('Microsoft.Network/virtualNetworks/subnets', vnetName, privateEndpointSubnetName)
// With private endpoints nothing reaches the account or the vault from outside the VNet.
var effectivePublicNetworkAccess = enablePrivateEndpoints ? 'Disabled' : publicNetworkAccess
// Private DNS zones of the Azure public cloud.
var tableDnsZoneName = 'privatelink.table.core.windows.net'
var vaultDnsZoneName = 'privatelink.vaultcore.azure.net'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    publicNetworkAccess: effectivePublicNetworkAccess
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      ipRules: [for r in allowedIpRanges: {
        value: r
        action: 'Allow'
      }]
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        table: {
          enabled: true
          keyType: 'Account'
        }
        blob: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: tableName
}

// The mail relay's own small account for the message ids it sent: apart from the shipment
// data, reachable only by the relay's Logic App (a resource instance rule: a consumption
// Logic App cannot use a private endpoint), no shared keys.
resource mailStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59: public network access must be Enabled for the resource instance rule (the relay's Logic App only; defaultAction Deny); nothing else reaches it
  name: '${take(storageName, 20)}mail'
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      resourceAccessRules: [
        {
          tenantId: subscription().tenantId
          resourceId: resourceId('Microsoft.Logic/workflows', 'Send_shipment_pin')
        }
      ]
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource mailTableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: mailStorage
  name: 'default'
}

resource mailSentTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: mailTableService
  name: mailSentTableName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: vaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'premium'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: effectivePublicNetworkAccess
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      ipRules: [for r in allowedIpRanges: {
        value: r
      }]
    }
  }
}

// The per-shipment response keys: the connector writes and deletes here only.
resource keysVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keysVaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'premium'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: effectivePublicNetworkAccess
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      ipRules: [for r in allowedIpRanges: {
        value: r
      }]
    }
  }
}

// Built-in role definition ids.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

// Scoped to the shipments table, not the account: the identity reads and writes that
// table's entities and nothing else in the account.
resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: table
  name: guid(table.id, identity.id, storageTableDataContributor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
  }
}

// Read-only on the static secrets: a compromised identity cannot rewrite where PIN mails
// or alerts go. The deployer stores them (infra/README.md).
resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, identity.id, keyVaultSecretsUser)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

// Writes and deletes on the response-key vault only.
resource keysVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: keysVault
  name: guid(keysVault.id, identity.id, keyVaultSecretsOfficer)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
  }
}

// The mail relay (its system identity) records the message ids it sent in its own table.
resource mailSentRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: mailSentTable
  name: guid(mailSentTable.id, mail.id, storageTableDataContributor)
  properties: {
    principalId: mail.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
  }
}

// ---- Private networking (enablePrivateEndpoints) ----

// The private endpoint subnet takes HTTPS from the apps subnet and nothing else from
// the VNet.
resource peNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = if (enablePrivateEndpoints) {
  name: '${prefix}-fpr-pe-nsg'
  location: location
  properties: {
    securityRules: [
      {
        name: 'allow-https-from-apps'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: appsSubnetPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: privateEndpointSubnetPrefix
          destinationPortRange: '443'
        }
      }
      {
        name: 'deny-other-vnet-inbound'
        properties: {
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

// The Container Apps subnet: the default rules are what the environment needs (load
// balancer in, VNet and Internet out).
resource appsNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = if (enablePrivateEndpoints) {
  name: '${prefix}-fpr-apps-nsg'
  location: location
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = if (enablePrivateEndpoints) {
  name: vnetName
  location: location
  properties: {
    addressSpace: {
      addressPrefixes: [
        vnetAddressPrefix
      ]
    }
    subnets: [
      {
        name: appsSubnetName
        properties: {
          addressPrefix: appsSubnetPrefix
          networkSecurityGroup: {
            id: appsNsg.id
          }
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          // So that the NSG applies to the private endpoints.
          privateEndpointNetworkPolicies: 'Enabled'
          networkSecurityGroup: {
            id: peNsg.id
          }
        }
      }
    ]
  }
}

resource tableDnsZone 'Microsoft.Network/privateDnsZones@2020-06-01' = if (enablePrivateEndpoints) {
  name: tableDnsZoneName
  location: 'global'
}

resource vaultDnsZone 'Microsoft.Network/privateDnsZones@2020-06-01' = if (enablePrivateEndpoints) {
  name: vaultDnsZoneName
  location: 'global'
}

resource tableDnsLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = if (enablePrivateEndpoints) {
  parent: tableDnsZone
  name: '${vnetName}-link'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource vaultDnsLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = if (enablePrivateEndpoints) {
  parent: vaultDnsZone
  name: '${vnetName}-link'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource storagePe 'Microsoft.Network/privateEndpoints@2023-11-01' = if (enablePrivateEndpoints) {
  name: '${storageName}-table-pe'
  location: location
  dependsOn: [
    vnet
  ]
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'table'
        properties: {
          privateLinkServiceId: storage.id
          groupIds: [
            'table'
          ]
        }
      }
    ]
  }
}

// Registers the endpoint's address in the zone: <account>.table.core.windows.net then
// resolves to it inside the VNet.
resource storagePeDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = if (enablePrivateEndpoints) {
  parent: storagePe
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'table'
        properties: {
          privateDnsZoneId: tableDnsZone.id
        }
      }
    ]
  }
}

resource vaultPe 'Microsoft.Network/privateEndpoints@2023-11-01' = if (enablePrivateEndpoints) {
  name: '${vaultName}-pe'
  location: location
  dependsOn: [
    vnet
  ]
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: vault.id
          groupIds: [
            'vault'
          ]
        }
      }
    ]
  }
}

resource vaultPeDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = if (enablePrivateEndpoints) {
  parent: vaultPe
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'vault'
        properties: {
          privateDnsZoneId: vaultDnsZone.id
        }
      }
    ]
  }
}

resource keysVaultPe 'Microsoft.Network/privateEndpoints@2023-11-01' = if (enablePrivateEndpoints) {
  name: '${keysVaultName}-pe'
  location: location
  dependsOn: [
    vnet
  ]
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: keysVault.id
          groupIds: [
            'vault'
          ]
        }
      }
    ]
  }
}

resource keysVaultPeDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = if (enablePrivateEndpoints) {
  parent: keysVaultPe
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'vault'
        properties: {
          privateDnsZoneId: vaultDnsZone.id
        }
      }
    ]
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-fpr-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${prefix}-fpr-env'
  location: location
  dependsOn: [
    vnet
  ]
  properties: {
    // In the VNet, the app resolves the table service and the vault to their private
    // endpoints (the DNS zones are linked to the VNet).
    vnetConfiguration: enablePrivateEndpoints ? {
      infrastructureSubnetId: appsSubnetId
      internal: internalEnvironment
    } : null
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

// ---- PIN mail relay ----

// HTML-escapes a workflow value (& < > " ') for the mail body; Logic Apps has no
// htmlEncode. VALUE is replaced by the value's expression; null becomes ''.
var htmlEscape = 'replace(replace(replace(replace(replace(string(coalesce(VALUE, \'\')), \'&\', \'&amp;\'), \'<\', \'&lt;\'), \'>\', \'&gt;\'), \'"\', \'&quot;\'), \'\'\'\', \'&#39;\')'
var mailUserId = replace(htmlEscape, 'VALUE', 'triggerBody()?[\'user_id\']')
var mailKeyName = replace(htmlEscape, 'VALUE', 'triggerBody()?[\'yubikey_name\']')
var mailSerial = replace(htmlEscape, 'VALUE', 'triggerBody()?[\'serial_number\']')
var mailPin = replace(htmlEscape, 'VALUE', 'triggerBody()?[\'pin\']')
var mailBody = '<p>Your YubiKey @{${mailKeyName}} (serial @{${mailSerial}}) for @{${mailUserId}} is on its way. Its PIN is <b>@{${mailPin}}</b>. Keep it secret.</p>'

// Who may call the trigger: a token of this tenant (v1 issuer, as managed-identity tokens
// for Azure resource audiences are) issued to the connector's managed identity, both its
// client id (appid) and its object id (oid).
var mailTriggerPolicies = {
  openAuthenticationPolicies: {
    policies: {
      'fido-connector': {
        type: 'AAD'
        claims: [
          {
            name: 'iss'
            value: 'https://sts.windows.net/${subscription().tenantId}/'
          }
          {
            name: 'aud'
            value: mailTriggerAudience
          }
          {
            name: 'appid'
            value: identity.properties.clientId
          }
          {
            name: 'oid'
            value: identity.properties.principalId
          }
        ]
      }
    }
  }
}
// An empty allowedCallerIpAddresses would mean "only other Logic Apps": set it only
// when ranges are given.
var mailTriggerIpRules = [for r in mailTriggerAllowedCallerIps: {
  addressRange: r
}]
var mailTriggerIps = empty(mailTriggerAllowedCallerIps) ? {} : {
  allowedCallerIpAddresses: mailTriggerIpRules
}
var mailTriggerSas = disableMailTriggerSas ? {
  sasAuthenticationPolicy: {
    state: 'Disabled'
  }
} : {}

// The relay's record of sent message ids (Azure Tables REST, with the Logic App's own
// identity). A message_id (`<shipment>/pin/...`) holds '/', which a key may not: '|'.
var mailSentKey = '@{replace(triggerBody()?[\'message_id\'], \'/\', \'|\')}'
var mailSentUri = '${mailStorage.properties.primaryEndpoints.table}${mailSentTableName}'
var mailSentEntityUri = '${mailSentUri}(PartitionKey=\'@{encodeUriComponent(replace(replace(triggerBody()?[\'message_id\'], \'/\', \'|\'), \'\'\'\', \'\'\'\'\'\'))}\',RowKey=\'pin\')'
var mailSentHeaders = {
  Accept: 'application/json;odata=nometadata'
  'Content-Type': 'application/json'
  'x-ms-version': '2020-12-06'
}
var mailSentAuth = {
  type: 'ManagedServiceIdentity'
  audience: 'https://storage.azure.com/'
}

// The PIN mail relay. Its HTTP trigger takes exactly the connector's PIN mail body, and it
// sends one mail per message_id (docs/deployment.md: "One PIN mail per shipment").
resource mail 'Microsoft.Logic/workflows@2019-05-01' = {
  name: 'Send_shipment_pin'
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    accessControl: {
      triggers: union(mailTriggerPolicies, mailTriggerIps, mailTriggerSas)
    }
    definition: {
      '$schema': 'https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#'
      contentVersion: '1.0.0.0'
      parameters: {
        '$connections': {
          type: 'Object'
          defaultValue: {}
        }
      }
      triggers: {
        manual: {
          type: 'Request'
          kind: 'Http'
          inputs: {
            method: 'POST'
            schema: {
              type: 'object'
              required: [
                'shipment_id'
                'user_id'
                'emails_to'
                'serial_number'
                'pin'
                'message_id'
              ]
              properties: {
                shipment_id: {
                  type: 'string'
                }
                user_id: {
                  type: 'string'
                }
                emails_to: {
                  type: 'array'
                  items: {
                    type: 'string'
                  }
                }
                serial_number: {
                  type: 'integer'
                }
                yubikey_name: {
                  type: 'string'
                }
                pin: {
                  type: 'string'
                }
                message_id: {
                  type: 'string'
                }
              }
            }
          }
          // Keeps the PIN out of the run history.
          runtimeConfiguration: {
            secureData: {
              properties: [
                'inputs'
                'outputs'
              ]
            }
          }
        }
      }
      actions: {
        // Insert-if-absent before sending: the first call with a message_id records it
        // as 'sending'; a repeat finds the record and is answered without a second mail.
        Record_message_id: {
          type: 'Http'
          inputs: {
            method: 'POST'
            uri: mailSentUri
            headers: mailSentHeaders
            body: {
              PartitionKey: mailSentKey
              RowKey: 'pin'
              State: 'sending'
            }
            authentication: mailSentAuth
          }
          runAfter: {}
        }
        Send_an_email: {
          type: 'ApiConnection'
          runtimeConfiguration: {
            secureData: {
              properties: [
                'inputs'
                'outputs'
              ]
            }
          }
          inputs: {
            host: {
              connection: {
                name: '@parameters(\'$connections\')[\'office365\'][\'connectionId\']'
              }
            }
            method: 'post'
            path: '/v2/Mail'
            body: {
              // Addresses, not HTML: not escaped (an address may hold ' or &).
              To: '@{join(triggerBody()?[\'emails_to\'], \';\')}'
              From: mailFrom
              Subject: 'Your YubiKey PIN'
              // Every value from the request is HTML-escaped.
              Body: mailBody
              Importance: 'High'
            }
          }
          runAfter: {
            Record_message_id: [
              'Succeeded'
            ]
          }
        }
        Mark_sent: {
          type: 'Http'
          inputs: {
            method: 'PATCH'
            uri: mailSentEntityUri
            headers: union(mailSentHeaders, {
              'If-Match': '*'
            })
            body: {
              State: 'sent'
            }
            authentication: mailSentAuth
          }
          runAfter: {
            Send_an_email: [
              'Succeeded'
            ]
          }
        }
        Response: {
          type: 'Response'
          kind: 'Http'
          inputs: {
            statusCode: 202
          }
          runAfter: {
            Mark_sent: [
              'Succeeded'
              'Failed'
            ]
          }
        }
        // The mail did not go: forget the id, so that the connector's retry sends it.
        Forget_message_id: {
          type: 'Http'
          inputs: {
            method: 'DELETE'
            uri: mailSentEntityUri
            headers: union(mailSentHeaders, {
              'If-Match': '*'
            })
            authentication: mailSentAuth
          }
          runAfter: {
            Send_an_email: [
              'Failed'
              'TimedOut'
            ]
          }
        }
        Response_send_failed: {
          type: 'Response'
          kind: 'Http'
          inputs: {
            statusCode: 502
            body: {
              error: 'the mail was not sent; retry with the same message_id'
            }
          }
          runAfter: {
            Forget_message_id: [
              'Succeeded'
              'Failed'
            ]
          }
        }
        // The insert failed: a repeat (the record exists) or the table is unreachable.
        Read_message_id: {
          type: 'Http'
          inputs: {
            method: 'GET'
            uri: mailSentEntityUri
            headers: mailSentHeaders
            authentication: mailSentAuth
          }
          runAfter: {
            Record_message_id: [
              'Failed'
            ]
          }
        }
        Repeat_of_a_sent_mail: {
          type: 'If'
          expression: {
            and: [
              {
                equals: [
                  '@body(\'Read_message_id\')?[\'State\']'
                  'sent'
                ]
              }
            ]
          }
          actions: {
            Response_already_sent: {
              type: 'Response'
              kind: 'Http'
              inputs: {
                statusCode: 200
                body: {
                  duplicate: true
                }
              }
              runAfter: {}
            }
          }
          else: {
            actions: {
              // Another call with this id is sending now: ask the connector to come back.
              Response_in_progress: {
                type: 'Response'
                kind: 'Http'
                inputs: {
                  statusCode: 503
                  headers: {
                    'Retry-After': '30'
                  }
                }
                runAfter: {}
              }
            }
          }
          runAfter: {
            Read_message_id: [
              'Succeeded'
            ]
          }
        }
        Response_relay_unavailable: {
          type: 'Response'
          kind: 'Http'
          inputs: {
            statusCode: 503
            headers: {
              'Retry-After': '30'
            }
          }
          runAfter: {
            Read_message_id: [
              'Failed'
              'TimedOut'
            ]
          }
        }
      }
    }
    parameters: {
      '$connections': {
        value: {
          office365: {
            connectionId: office365ConnectionId
            connectionName: 'office365'
            id: subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'office365')
          }
        }
      }
    }
  }
}

output identityId string = identity.id
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output tablesEndpoint string = storage.properties.primaryEndpoints.table
output keyVaultUri string = vault.properties.vaultUri
output responseKeyVaultUri string = keysVault.properties.vaultUri
output environmentId string = environment.id
output mailLogicAppName string = mail.name
output mailTriggerAudience string = mailTriggerAudience
