//! Azurite for the Azure Tables tests. `scripts/test.sh` starts one and exports
//! `AZURITE_TABLE_ENDPOINT`; without it, the first test starts `azurite-table` from
//! `.azurite/` (installed by `scripts/azurite.sh install`) on a free port. Never skipped:
//! if Azurite is missing the tests fail and say how to install it.

use std::process::{Command, Stdio};

use tokio::sync::OnceCell;

/// Azurite's well-known development account and its public key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

static ENDPOINT: OnceCell<String> = OnceCell::const_new();

pub async fn azurite_endpoint() -> String {
    ENDPOINT
        .get_or_init(|| async {
            if let Ok(e) = std::env::var("AZURITE_TABLE_ENDPOINT") {
                return e;
            }
            let root = env!("CARGO_MANIFEST_DIR");
            let bin = format!("{root}/.azurite/node_modules/.bin/azurite-table");
            assert!(
                std::path::Path::new(&bin).exists(),
                "Azurite is not installed: run `bash scripts/azurite.sh install` (or scripts/test.sh)"
            );
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = std::env::temp_dir().join(format!("azurite-{port}"));
            std::fs::create_dir_all(&dir).unwrap();
            // Lives as long as the test binary; kill_on_drop is not wanted here.
            #[allow(clippy::zombie_processes)]
            Command::new(bin)
                .args([
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                    "--tableHost",
                    "127.0.0.1",
                    "--tablePort",
                    &port.to_string(),
                ])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            format!("http://127.0.0.1:{port}/devstoreaccount1")
        })
        .await
        .clone()
}
