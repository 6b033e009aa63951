//! Starting the connector as a child process and reading its footprint and CPU.

#[allow(unused_imports)]
use super::*;

pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

pub(crate) fn cpu_secs() -> f64 {
    proc_cpu(std::process::id())
}

pub(crate) struct Proc(pub(crate) Child, pub(crate) String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the release binary with the sandbox's configuration; returns it and the time
/// until /readyz answered 200.
pub(crate) async fn start_connector(env: &HashMap<String, String>, log: &Path) -> (Proc, Duration) {
    start_connector_in(env, log, None).await
}

/// [`start_connector`], under `valgrind --tool=callgrind` (dumps in `callgrind`) when given.
pub(crate) async fn start_connector_in(
    env: &HashMap<String, String>,
    log: &Path,
    callgrind: Option<&Path>,
) -> (Proc, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = std::env::var("FIDO_CONNECTOR_BIN")
        .unwrap_or_else(|_| "target/release/fido-connector".into());
    let out = std::fs::File::create(log).unwrap();
    let t = Instant::now();
    let mut cmd = match callgrind {
        Some(dir) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
                .arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = cmd
        .arg("serve")
        .env_clear()
        .envs(env)
        .env("FIDO_CONNECTOR_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "LOGGING_LEVEL_COM_YUBICO",
            if std::env::var("BENCH_SHOW_RUNS").is_ok() {
                "INFO"
            } else {
                "WARN"
            },
        )
        .stdout(Stdio::from(out))
        .stderr(Stdio::null())
        .spawn()
        .expect("build the release binary first: cargo build --release (and valgrind for BENCH_CALLGRIND)");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        // Polled every millisecond: the start-up figure is off by at most that much.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (Proc(child, base), t.elapsed())
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn proc_cpu(pid: u32) -> f64 {
    proc_kernel_cpu(pid).0
}

/// CPU seconds of a process: (user + kernel, kernel alone).
pub(crate) fn proc_kernel_cpu(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ((t(11) + t(12)) / 100.0, t(12) / 100.0)
}

pub(crate) async fn world(azurite: Option<&str>) -> (Sandbox, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = prepare(dir.path(), "127.0.0.1:0", None).await.unwrap();
    sb.env.insert(
        "CRON_PROCESS_SHIPMENT_SCHEDULE".into(),
        "0 0 0 1 1 *".into(),
    );
    if let Some(ep) = azurite {
        sb.env.insert("FIDO_CONNECTOR_STORE".into(), "azure".into());
        sb.env.insert("AZURE_TABLES_ENDPOINT".into(), ep.into());
        sb.env.insert(
            "AZURE_TABLES_SHIPMENTS_TABLE_NAME".into(),
            format!("b{}", uuid::Uuid::new_v4().simple()),
        );
        sb.env.insert(
            "AZURE_STORAGE_ACCOUNT_NAME".into(),
            "devstoreaccount1".into(),
        );
        sb.env.insert(
            "AZURE_STORAGE_ACCOUNT_KEY".into(),
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
        );
    }
    sb.config =
        fido_connector::config::Config::load(&fido_connector::config::Env::from_map(&sb.env))
            .unwrap();
    (sb, dir)
}
