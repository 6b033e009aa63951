//! `fido-connector` runs the service from the environment (see docs/configuration.md);
//! `fido-connector sandbox` runs it with every upstream simulated on loopback.

use std::process::ExitCode;

const USAGE: &str = "fido-connector [serve|sandbox|check-config|import FILE.csv [--submit]|export]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
        #[cfg(feature = "sandbox")]
        Some("sandbox") => match fido_connector::sandbox::run::run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fido-connector sandbox: {e}");
                ExitCode::FAILURE
            }
        },
        Some("check-config") => match fido_connector::config::Config::from_env() {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fido-connector: {e}");
                ExitCode::from(78)
            }
        },
        Some("import") => {
            let settings = fido_connector::config::ClientSettings::load(
                &fido_connector::config::Env::process(),
            );
            ExitCode::from(fido_connector::bulk::import(&args[1..], &settings).await)
        }
        Some("export") => {
            let settings = fido_connector::config::ClientSettings::load(
                &fido_connector::config::Env::process(),
            );
            ExitCode::from(fido_connector::bulk::export(&args[1..], &settings).await)
        }
        Some("-h") | Some("--help") => {
            println!("usage: {USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown command `{other}`; usage: {USAGE}");
            ExitCode::from(2)
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
    fido_connector::logging::init_with(config.observability.logging_level, otlp);
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
