//! What the shipped infrastructure grants and defaults to (infra/, deploy/): read as text,
//! since Bicep does not run here; scripts/lint-deploy.sh runs checkov over the same files.

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The body of the Bicep resource `name` (from its declaration to the closing brace at
/// the start of a line).
fn resource<'a>(bicep: &'a str, name: &str) -> &'a str {
    let start = bicep
        .find(&format!("resource {name} '"))
        .unwrap_or_else(|| panic!("resource {name}"));
    let end = bicep[start..].find("\n}\n").unwrap() + start;
    &bicep[start..end]
}

#[test]
fn the_connector_reads_static_secrets_and_writes_only_response_keys() {
    let infra = read("infra/main.bicep");
    let officer = "keyVaultSecretsOfficer";
    let user = "keyVaultSecretsUser";
    let statics = resource(&infra, "vaultRole");
    assert!(statics.contains("scope: vault\n"), "{statics}");
    assert!(
        statics.contains(user) && !statics.contains(officer),
        "{statics}"
    );
    let keys = resource(&infra, "keysVaultRole");
    assert!(
        keys.contains("scope: keysVault\n") && keys.contains(officer),
        "{keys}"
    );
    // No other assignment gives the identity write rights on a vault.
    assert_eq!(
        infra
            .matches(&format!(
                "'Microsoft.Authorization/roleDefinitions', {officer})"
            ))
            .count(),
        1
    );
    let app = read("deploy/main.bicep");
    assert!(app.contains(
        "{ name: 'FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT', value: responseKeyVaultUri }"
    ));
}

#[test]
fn the_mail_relay_is_token_only_restricted_and_sends_one_mail_per_message_id() {
    let infra = read("infra/main.bicep");
    assert!(infra.contains("param disableMailTriggerSas bool = true"));
    let app = read("deploy/main.bicep");
    assert!(app.contains("{ name: 'EMAIL_API_TOKEN_AUDIENCE', value: mailTriggerAudience }"));
    assert!(
        app.contains("{ name: 'FIDO_CONNECTOR_ALLOWED_MAIL_DOMAINS', value: allowedMailDomains }")
    );
    // Required: no default value.
    assert!(app.contains("param allowedMailDomains string\n"));
    let mail = resource(&infra, "mail");
    let at = |s: &str| {
        mail.find(s)
            .unwrap_or_else(|| panic!("{s} in the Logic App"))
    };
    // The id is recorded (insert-if-absent) before the mail goes, and only then is it sent.
    assert!(at("Record_message_id: {") < at("Send_an_email: {"));
    let send = &mail[at("Send_an_email: {")..at("Mark_sent: {")];
    assert!(
        send.contains("Record_message_id: [\n              'Succeeded'"),
        "{send}"
    );
    assert!(
        mail.contains("method: 'POST'\n            uri: mailSentUri"),
        "an insert, never an upsert"
    );
    // A failed send forgets the id, so that the retry sends; a repeat is not mailed.
    assert!(mail.contains("Forget_message_id: {") && mail.contains("method: 'DELETE'"));
    assert!(mail.contains("Response_already_sent"));
}
