//! The connector binary as a child process (crash and replica tests).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc {
    pub child: Child,
    pub base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn spawn(env: &HashMap<String, String>, crash_at: Option<&str>, log: &Path) -> Proc {
    let port = free_port();
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
        .env("FIDO_CONNECTOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("LOGGING_LEVEL_COM_YUBICO", "TRACE")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    if let Some(p) = crash_at {
        cmd.env("FIDO_CONNECTOR_CRASH_AT", p);
    }
    let child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Proc { child, base }
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
