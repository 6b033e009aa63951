//! `fido-connector` runs the service from the environment (see docs/configuration.md);
//! `fido-connector sandbox` runs it with every upstream simulated on loopback.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ships YubiKeys that arrive registered to their users: the service, its sandbox, and the
/// bulk clients.
#[derive(Parser)]
#[command(name = "fido-connector", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

const SERVE_ENV: &str = "Environment: the service reads its whole configuration from the \
environment (docs/configuration.md lists every variable), among them FIDO_CONNECTOR_LISTEN, \
FIDO_CONNECTOR_STORE, AZURE_TABLES_ENDPOINT, AZURE_KEY_VAULT_ENDPOINT, AZURE_TENANT_ID, \
AZURE_CLIENT_ID, ENTRA_FIDO_API_CLIENT_ID, YE_API_BASE_URL, EMAIL_API_SEND_ENDPOINT, \
LOGGING_LEVEL_COM_YUBICO and FIDO_CONNECTOR_LOG_FORMAT (json|text; text when stdout is a \
terminal). Missing production settings stop the start with a message naming the variable.";

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default)
    #[command(after_help = SERVE_ENV)]
    Serve,
    /// Run the service with every upstream simulated on loopback (for trying it out)
    #[cfg(feature = "sandbox")]
    #[command(
        after_help = "Environment: FIDO_CONNECTOR_DATA_DIR (default ./data/sandbox, \
        reset at each start), FIDO_CONNECTOR_LISTEN (default 127.0.0.1:8080), \
        FIDO_CONNECTOR_SANDBOX_SIM_PORT (default 8081: the simulators take it and the next \
        five), FIDO_CONNECTOR_LOG_FORMAT (default text)."
    )]
    Sandbox,
    /// Load and check the configuration, then exit (0 good, 78 bad)
    #[command(after_help = SERVE_ENV)]
    CheckConfig,
    /// Check a CSV of shipment requests row by row; with --submit, order the valid rows
    Import(fido_connector::bulk::ImportArgs),
    /// Write the shipment list as CSV
    Export(fido_connector::bulk::ExportArgs),
    /// Make a key pair for an Okta service app: the private JWK to a file (mode 0600, for
    /// the secret store), the public JWK to stdout (for the app's client credentials)
    OktaKey {
        /// The key's `kid`
        #[arg(long, default_value = "fpr-connector-1")]
        kid: String,
        /// Where the private JWK goes
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let client_settings =
        || fido_connector::config::ClientSettings::load(&fido_connector::config::Env::process());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        #[cfg(feature = "sandbox")]
        Command::Sandbox => match fido_connector::sandbox::run::run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fido-connector sandbox: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig => match fido_connector::config::Config::from_env() {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fido-connector: {e}");
                ExitCode::from(78)
            }
        },
        Command::Import(a) => {
            ExitCode::from(fido_connector::bulk::import(a, &client_settings()).await)
        }
        Command::Export(a) => {
            ExitCode::from(fido_connector::bulk::export(a, &client_settings()).await)
        }
        Command::OktaKey { kid, out } => {
            match fido_connector::upstream::okta::write_service_app_key(&kid, &out) {
                Ok(public) => {
                    println!("{public}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fido-connector okta-key: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve() -> ExitCode {
    let config = match fido_connector::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fido-connector: {e}");
            return ExitCode::from(78);
        }
    };
    // One outbound client for the process: the upstreams, the caller-token keys, OTLP.
    let http = match fido_connector::app::outbound_client(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fido-connector: {e}");
            return ExitCode::FAILURE;
        }
    };
    let otlp =
        config
            .observability
            .otlp_endpoint
            .as_ref()
            .map(|endpoint| fido_connector::logging::Otlp {
                endpoint: endpoint.clone(),
                client: http.clone(),
            });
    fido_connector::logging::init_with(
        config.observability.logging_level,
        fido_connector::config::LogFormat::or_by_terminal(config.observability.log_format),
        otlp,
    );
    let app = match fido_connector::app::build_with_client(config, http).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fido-connector: {e}");
            return ExitCode::FAILURE;
        }
    };
    if app.state.deps.config.caller_auth.vendor_scope_grants_all {
        tracing::warn!(
            "FIDO_CONNECTOR_VENDOR_SCOPE_GRANTS_ALL is on: a delegated create_request scope grants \
             every permission; this is only safe when the enterprise application requires \
             assignment (see docs/auth.md)"
        );
    }
    tracing::info!(addr = %app.addr, replica = %app.state.deps.instance_id, "fido-connector listening");
    let ran = app.run().await;
    // Spans not exported yet go out before the process ends.
    let _ = tokio::task::spawn_blocking(fido_connector::logging::shutdown).await;
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fido-connector: {e}");
            ExitCode::FAILURE
        }
    }
}
