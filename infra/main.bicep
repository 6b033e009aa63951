// Azure resources fido-connector needs, in the customer's subscription:
// storage account + the shipments table, Key Vault (RBAC), the PIN mail Logic App,
// a user-assigned managed identity with its role assignments, and the Container Apps
// environment with its Log Analytics workspace. The app itself is deployed by
// deploy/main.bicep.

targetScope = 'resourceGroup'

@description('Short prefix for resource names (3-11 lowercase letters/digits).')
@minLength(3)
@maxLength(11)
param prefix string

param location string = resourceGroup().location

@description('Name of the shipments table (AZURE_TABLES_SHIPMENTS_TABLE_NAME).')
param tableName string = 'fprshipments'

@description('Public network access to the storage account and the vault. Disabled by default: use private endpoints (or open it to the IP ranges below).')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Disabled'

@description('IP ranges (CIDR) allowed through the firewalls when public network access is enabled.')
param allowedIpRanges array = []

@description('Create private endpoints for storage (table) and Key Vault in this subnet (resource id); empty for none.')
param privateEndpointSubnetId string = ''

@description('Office 365 connection (resource id) the mail Logic App sends with; create and authorise it in the portal first.')
param office365ConnectionId string

@description('Sender shown in PIN mails.')
param mailFrom string = ''

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageName string
var vaultName = '${prefix}-fpr-kv'
var identityName = '${prefix}-fpr-identity'

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
    publicNetworkAccess: publicNetworkAccess
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
    publicNetworkAccess: publicNetworkAccess
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

resource tableRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, storageTableDataContributor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
  }
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, identity.id, keyVaultSecretsOfficer)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
  }
}

resource storagePe 'Microsoft.Network/privateEndpoints@2023-11-01' = if (!empty(privateEndpointSubnetId)) {
  name: '${storageName}-table-pe'
  location: location
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

resource vaultPe 'Microsoft.Network/privateEndpoints@2023-11-01' = if (!empty(privateEndpointSubnetId)) {
  name: '${vaultName}-pe'
  location: location
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
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

// The PIN mail relay. Its HTTP trigger takes exactly the connector's PIN mail body; the
// connector de-duplicates by message_id only as far as the relay does (see
// docs/deployment.md: "One PIN mail per shipment").
resource mail 'Microsoft.Logic/workflows@2019-05-01' = {
  name: 'Send_shipment_pin'
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
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
        Send_an_email: {
          type: 'ApiConnection'
          runtimeConfiguration: {
            secureData: {
              properties: [
                'inputs'
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
              To: '@{join(triggerBody()?[\'emails_to\'], \';\')}'
              From: mailFrom
              Subject: 'Your YubiKey PIN'
              Body: '<p>Your YubiKey (serial @{triggerBody()?[\'serial_number\']}) is on its way. Its PIN is <b>@{triggerBody()?[\'pin\']}</b>. Keep it secret.</p>'
              Importance: 'High'
            }
          }
          runAfter: {}
        }
        Response: {
          type: 'Response'
          kind: 'Http'
          inputs: {
            statusCode: 202
          }
          runAfter: {
            Send_an_email: [
              'Succeeded'
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
output tablesEndpoint string = storage.properties.primaryEndpoints.table
output keyVaultUri string = vault.properties.vaultUri
output environmentId string = environment.id
output mailLogicAppName string = mail.name
