//! The connector binary as a child process (crash and replica tests).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc {
    pub child: Child,
    pub base: String,
}

/// Starts `fido-connector serve` on a port of its own choosing (no port races with other
/// tests) and waits until it is ready, reading the address from its log.
pub async fn spawn(env: &HashMap<String, String>, crash_at: Option<&str>, log: &Path) -> Proc {
    let already = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fido-connector"));
    cmd.arg("serve")
        .env_clear()
        .envs(env)
        .env("FIDO_CONNECTOR_LISTEN", "127.0.0.1:0")
        .env("LOGGING_LEVEL_COM_YUBICO", "TRACE")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    if let Some(p) = crash_at {
        cmd.env("FIDO_CONNECTOR_CRASH_AT", p);
    }
    let mut child = cmd.spawn().unwrap();
    for _ in 0..1200 {
        let text = std::fs::read(log).unwrap_or_default();
        let fresh = String::from_utf8_lossy(&text[already as usize..]).to_string();
        let addr = fresh.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "fido-connector listening")
                .then(|| v["fields"]["addr"].as_str().map(str::to_string))
                .flatten()
        });
        if let Some(addr) = addr {
            let base = format!("http://{addr}");
            let ok = reqwest::get(format!("{base}/healthz"))
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .is_some();
            if ok {
                return Proc { child, base };
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the connector exited at start ({status}); see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the connector did not become ready within 60 s");
}

impl Proc {
    pub async fn wait_dead(&mut self) {
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the connector did not crash at its crash point");
    }
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
