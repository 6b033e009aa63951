//! `fido-connector sandbox`: the connector with the embedded store, the local secret store
//! and every upstream simulated on loopback. Nothing leaves the machine.

use std::collections::HashMap;

use secrecy::SecretString;

use crate::config::{Config, Env};
use crate::sandbox::entra::{EntraSim, EntraSimConfig};
use crate::sandbox::mail::MailSink;
use crate::sandbox::ye::{YeSim, YeSimConfig};
use crate::secrets::{file::FileSecretStore, SecretStore};

/// Demo users the Entra simulator knows.
pub const DEMO_USERS: [(&str, &str); 2] = [
    (
        "alice@contoso.example",
        "5f1c7a9e-3b8d-4c2a-9e61-0a7b2d4c8e11",
    ),
    (
        "bob@contoso.example",
        "8d2e4f6a-1c3b-4e5d-8f70-9a1b2c3d4e5f",
    ),
];
/// Users of the simulated Okta org (login, id, status).
pub const OKTA_DEMO_USERS: [(&str, &str, &str); 2] = [
    ("carol@fabrikam.example", "00u1carolfabrikam", "ACTIVE"),
    ("dan@fabrikam.example", "00u1danfabrikam00", "STAGED"),
];
/// The sandbox's instances: the Entra tenant (default) and an Okta org.
pub const SANDBOX_ENTRA_INSTANCE: &str = "contoso";
pub const SANDBOX_OKTA_INSTANCE: &str = "fabrikam";
pub const SANDBOX_OKTA_CLIENT_ID: &str = "0oa1fprconnector";
/// The secret holding the Okta service app's private key.
pub const SANDBOX_OKTA_KEY_SECRET: &str = "okta-fabrikam-key";
pub const SANDBOX_TENANT: &str = "00000000-0000-4000-8000-00000000c0de";
pub const SANDBOX_CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
pub const SANDBOX_AUDIENCE: &str = "api://fido-connector-sandbox";
/// The audience of the token the connector presents to the mail trigger (the default of
/// infra/main.bicep's `mailTriggerAudience`).
pub const MAIL_TRIGGER_AUDIENCE: &str = "https://management.azure.com/";

/// Everything the sandbox started, for the command and for tests.
pub struct Sandbox {
    pub config: Config,
    pub ye: YeSim,
    pub entra: EntraSim,
    pub mail: MailSink,
    /// The Okta org of the sandbox's second instance.
    pub okta: crate::sandbox::okta::OktaSim,
    /// Where alerts go (a Slack/Teams-like webhook).
    pub webhook: crate::sandbox::webhook::WebhookSink,
    pub api_key: String,
    /// What the Entra simulator expects as `X-IDENTITY-HEADER` (managed identity) and as
    /// the federated assertion (workload identity), for tests of those credentials.
    pub identity_header: String,
    pub federated_assertion: String,
    /// The environment the configuration was loaded from (tests start replicas with it).
    pub env: HashMap<String, String>,
}

/// The secret holding the sandbox's alert webhook URL.
pub const SANDBOX_ALERT_SECRET: &str = "alert-webhook-url";

/// Starts the simulators and prepares the connector's configuration and secrets.
/// `data_dir` holds the SQLite file and the secret files; `listen` is the connector's address.
/// `sim_base_port`: the simulators listen on this port and the next five (YE, Entra,
/// mail, Entra's HTTPS login host, the alert webhook, Okta); `None` picks free ports
/// (tests).
pub async fn prepare(
    data_dir: &std::path::Path,
    listen: &str,
    sim_base_port: Option<u16>,
) -> Result<Sandbox, String> {
    let port = |i: u16| sim_base_port.map(|p| p + i).unwrap_or(0);
    let secrets = FileSecretStore::new(data_dir.join("secrets")).map_err(|e| e.to_string())?;
    let ye_token = random_token();
    let client_secret = random_token();
    secrets
        .set(
            crate::secrets::YE_API_TOKEN,
            &SecretString::from(ye_token.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
    secrets
        .set(
            crate::secrets::ENTRA_CLIENT_SECRET,
            &SecretString::from(client_secret.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;

    let mut ye_cfg = YeSimConfig::new(ye_token);
    ye_cfg.port = port(0);
    let ye = YeSim::start(ye_cfg)
        .await
        .map_err(|e| format!("YubiEnterprise simulator: {e}"))?;
    let mut entra_cfg = EntraSimConfig::new(SANDBOX_TENANT, SANDBOX_CLIENT_ID, &client_secret);
    entra_cfg.port = port(1);
    entra_cfg.tls_port = port(3);
    let identity_header = random_token();
    let federated_assertion = random_token();
    entra_cfg.identity_header = Some(identity_header.clone());
    entra_cfg.federated_assertion = Some(federated_assertion.clone());
    let entra = EntraSim::start(entra_cfg)
        .await
        .map_err(|e| format!("Entra simulator: {e}"))?;
    for (upn, oid) in DEMO_USERS {
        entra.add_user(upn, oid);
    }
    let mail = MailSink::start_on(port(2))
        .await
        .map_err(|e| format!("mail sink: {e}"))?;
    let webhook = crate::sandbox::webhook::WebhookSink::start_on(port(4))
        .await
        .map_err(|e| format!("webhook sink: {e}"))?;
    secrets
        .set(SANDBOX_ALERT_SECRET, &SecretString::from(webhook.url()))
        .await
        .map_err(|e| e.to_string())?;
    // The Okta org: a service app whose private key is in the secret store (one key per
    // process: RSA key generation is the slowest part of a sandbox's start).
    static OKTA_KEY: std::sync::OnceLock<Result<josekit::jwk::Jwk, String>> =
        std::sync::OnceLock::new();
    let okta_key = OKTA_KEY
        .get_or_init(|| {
            let mut k = josekit::jwk::Jwk::generate_rsa_key(2048).map_err(|e| e.to_string())?;
            k.set_key_id("fpr-okta-sandbox");
            Ok(k)
        })
        .clone()?;
    let okta = crate::sandbox::okta::OktaSim::start(
        SANDBOX_OKTA_CLIENT_ID,
        crate::crypto::public_of(&okta_key).map_err(|e| e.to_string())?,
        port(5),
    )
    .await
    .map_err(|e| format!("Okta simulator: {e}"))?;
    for (login, id, status) in OKTA_DEMO_USERS {
        okta.add_user(crate::sandbox::okta::OktaUser {
            id: id.into(),
            login: login.into(),
            email: login.into(),
            status: status.into(),
        });
    }
    secrets
        .set(
            SANDBOX_OKTA_KEY_SECRET,
            &SecretString::from(okta_key.to_string()),
        )
        .await
        .map_err(|e| e.to_string())?;
    let idp_file = data_dir.join("multi-idp-config.yaml");
    std::fs::write(
        &idp_file,
        format!(
            "# The sandbox's identity providers: the Entra simulator's tenant (the ENTRA_*\n\
             # variables) and the Okta simulator's org.\n\
             default: {SANDBOX_ENTRA_INSTANCE}\n\
             instances:\n\
             \x20 - name: {SANDBOX_ENTRA_INSTANCE}\n\
             \x20   kind: entra\n\
             \x20 - name: {SANDBOX_OKTA_INSTANCE}\n\
             \x20   kind: okta\n\
             \x20   org_url: {}\n\
             \x20   client_id: {SANDBOX_OKTA_CLIENT_ID}\n\
             \x20   private_key_secret: {SANDBOX_OKTA_KEY_SECRET}\n\
             \x20   rp_ids: [fabrikam.okta.example]\n",
            okta.url()
        ),
    )
    .map_err(|e| format!("{}: {e}", idp_file.display()))?;
    // The trigger admits only the connector's identity, as infra/main.bicep configures it.
    mail.require_token(entra.token_check(MAIL_TRIGGER_AUDIENCE));
    // The simulators' HTTPS endpoints (Entra's login host) use the sandbox CA.
    let ca_file = data_dir.join("sandbox-ca.pem");
    std::fs::write(
        &ca_file,
        crate::sandbox::tls::ca_pem().map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", ca_file.display()))?;

    // The console signs people in through the Entra simulator, back to this address: a
    // free port is chosen now when the caller asked for any.
    let listen = match listen.rsplit_once(':') {
        Some((host, "0")) => {
            let l = std::net::TcpListener::bind((host, 0)).map_err(|e| e.to_string())?;
            format!(
                "{host}:{}",
                l.local_addr().map_err(|e| e.to_string())?.port()
            )
        }
        _ => listen.to_string(),
    };
    let console_port = listen
        .rsplit_once(':')
        .map_or("8080", |(_, p)| p)
        .to_string();
    let redirect_uri = format!("http://localhost:{console_port}/console/auth/callback");
    entra.allow_redirect_uri(&redirect_uri);
    secrets
        .set(
            "console-client-secret",
            &SecretString::from(client_secret.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
    let cookie_key: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
    secrets
        .set(
            "console-cookie-key",
            &SecretString::from(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                cookie_key,
            )),
        )
        .await
        .map_err(|e| e.to_string())?;

    let api_key = crate::auth::generate_api_key();
    let mut env: HashMap<String, String> = HashMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("FIDO_CONNECTOR_SANDBOX", "true".into());
    // Each sandbox is its own replica (tests start several in one process).
    set(
        "FIDO_CONNECTOR_REPLICA_NAME",
        format!(
            "sandbox-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    );
    set("FIDO_CONNECTOR_LISTEN", listen.clone());
    set("FIDO_CONNECTOR_CONSOLE_REDIRECT_URI", redirect_uri);
    set("FIDO_CONNECTOR_DATA_DIR", data_dir.display().to_string());
    set("FIDO_CONNECTOR_STORE", "embedded".into());
    set("FIDO_CONNECTOR_SECRETS", "file".into());
    set("AZURE_TENANT_ID", SANDBOX_TENANT.into());
    set("ENTRA_FIDO_API_CLIENT_ID", SANDBOX_CLIENT_ID.into());
    set("ENTRA_CREDENTIAL", "client_secret".into());
    // The connector's identity for Azure resources and the mail trigger: the same app.
    set("AZURE_CLIENT_ID", SANDBOX_CLIENT_ID.into());
    set("AZURE_CLIENT_SECRET", client_secret.clone());
    set("EMAIL_API_TOKEN_AUDIENCE", MAIL_TRIGGER_AUDIENCE.into());
    set(
        "FIDO_CONNECTOR_EXTRA_ROOT_CA",
        ca_file.display().to_string(),
    );
    set("ENTRA_LOGIN_ENDPOINT", entra.login_url());
    set("GRAPH_API_ENDPOINT", entra.graph_url());
    set("YE_API_BASE_URL", ye.url());
    set("YE_JWKS_SIGN_ENDPOINT", ye.sign_jwks_url());
    set("YE_JWKS_TRANSPORT_ENDPOINT", ye.transport_jwks_url());
    set("EMAIL_API_SEND_ENDPOINT", mail.unsigned_url());
    set("FIDO_CONNECTOR_ALERT_WEBHOOK", SANDBOX_ALERT_SECRET.into());
    set(
        crate::config::IDP_CONFIG_VAR,
        idp_file.display().to_string(),
    );
    set("FIDO_CONNECTOR_ALLOWED_AUDIENCES", SANDBOX_AUDIENCE.into());
    set(
        "FIDO_CONNECTOR_API_KEYS",
        format!(
            "sandbox-admin:{}:create_request",
            crate::auth::hash_api_key(&api_key)
        ),
    );
    // Processing runs every 10 s in the sandbox so a walk-through sees progress quickly.
    set("CRON_PROCESS_SHIPMENT_SCHEDULE", "*/10 * * * * *".into());
    let config = Config::load(&Env::from_map(&env)).map_err(|e| e.to_string())?;
    Ok(Sandbox {
        config,
        ye,
        entra,
        mail,
        okta,
        webhook,
        api_key,
        identity_header,
        federated_assertion,
        env,
    })
}

fn random_token() -> String {
    use base64::Engine;
    use rand::Rng;
    let b: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Runs the sandbox until ctrl-c: connector on 127.0.0.1:8080, simulators on 8081-8086.
/// The simulators keep their state in memory, so the sandbox starts from a clean data
/// directory each time.
pub async fn run() -> Result<(), String> {
    let settings =
        crate::config::SandboxSettings::load(&Env::process()).map_err(|e| e.to_string())?;
    let (data_dir, listen, base_port, log_format) = (
        settings.data_dir,
        settings.listen,
        settings.sim_base_port,
        settings.log_format,
    );
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .map_err(|e| format!("cannot reset {}: {e}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
    let sb = prepare(&data_dir, &listen, Some(base_port)).await?;
    // A person runs the sandbox: readable lines unless the format is set.
    crate::logging::init(sb.config.observability.logging_level, log_format);
    // The key goes to a 0600 file, not to the log stream.
    let key_file = data_dir.join("api-key");
    write_private(&key_file, &sb.api_key).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let app = crate::app::build(sb.config.clone())
        .await
        .map_err(|e| e.to_string())?;
    let base = format!("http://{}", app.addr);
    eprintln!(
        "\n==================== fido-connector SANDBOX ====================\n\
         Simulated upstreams only: nothing leaves this machine.\n\
         connector:              {base}\n\
         helpdesk console:       http://localhost:{port}/console   (sign in as a sandbox person)\n\
         YubiEnterprise sim:     {ye}   (program keys: curl -X POST {ye_root}/_sim/advance-all)\n\
         Entra / Graph sim:      {graph}\n\
         PIN mail sink:          {mail_root}/_sim/mails\n\
         Okta sim (HTTPS):       {okta}   (instance `{okta_name}`; its PIN mails: {okta}/_sim/mails)\n\
         data directory:         {data}\n\
         demo users:             {u1}, {u2} (Entra); {o1}, {o2} (Okta)\n\
         identity providers:     {idps}\n\
         admin API key:          export KEY=$(cat {keyfile})\n\
         caller token (Entra):   curl -s -X POST {graph}_sim/caller-token -H 'Content-Type: application/json' \\\n\
                                   -d '{{\"aud\":\"{aud}\",\"scp\":\"create_request\"}}'\n\
         ================================================================\n",
        port = app.addr.port(),
        ye = sb.ye.url(),
        ye_root = sb.ye.root_url(),
        graph = sb.entra.graph_url(),
        mail_root = sb.mail.root_url(),
        data = data_dir.display(),
        u1 = DEMO_USERS[0].0,
        u2 = DEMO_USERS[1].0,
        okta = sb.okta.url(),
        okta_name = SANDBOX_OKTA_INSTANCE,
        o1 = OKTA_DEMO_USERS[0].0,
        o2 = OKTA_DEMO_USERS[1].0,
        idps = data_dir.join("multi-idp-config.yaml").display(),
        keyfile = key_file.display(),
        aud = SANDBOX_AUDIENCE,
    );
    let sims = (sb.ye, sb.entra, sb.mail, sb.okta);
    let r = app.run().await.map_err(|e| e.to_string());
    drop(sims);
    r
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())
}
