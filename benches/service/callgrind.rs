//! Instruction counts under callgrind (BENCH_CALLGRIND=1), against the floors' counts.

#[allow(unused_imports)]
use super::*;

/// Instruction counts (valgrind's callgrind) per create and per processed shipment, against
/// the same counts for the floors' operations (`BENCH_CALLGRIND=1`; needs valgrind).
/// An instruction count does not move with the machine's load, caches or idle states, so
/// this ratio says, repeatably, how much work the connector adds to the cryptography it
/// cannot avoid. It is not CPU time: a cache miss or a wake from idle costs no instruction,
/// which is exactly what makes the CPU-time ratio swing on a shared machine.
pub(crate) async fn instructions(label: &str, sb: &Sandbox, dir: &Path, n: usize, latency_ms: u64) {
    let floor_create = floor_instructions("create");
    let floor_processing = floor_instructions("processing");
    let mut env = sb.env.clone();
    env.insert("FIDO_CONNECTOR_PROCESS_CONCURRENCY".into(), "16".into());
    env.insert(
        "FIDO_CONNECTOR_REQUEST_TIMEOUT_SECONDS".into(),
        "3600".into(),
    );
    let cg = dir.join("callgrind");
    std::fs::create_dir_all(&cg).unwrap();
    let (proc_, _) =
        start_connector_in(&env, &dir.join(format!("{label}-callgrind.log")), Some(&cg)).await;
    let pid = proc_.0.id();
    let http = reqwest::Client::new();
    upstream_latency(sb, 0);
    // A few creates first, so that what happens once per process (first connections, key
    // sets, tokens, lazily built tables) is not counted against the measured ones.
    let warm = create_shipments(&http, &proc_.1, &sb.api_key, 4, 4).await;
    callgrind_zero(pid);
    let created = create_shipments(&http, &proc_.1, &sb.api_key, n, 4).await;
    let per_create = callgrind_dump(pid, &cg) / created as f64;
    sb.ye.advance_all();
    upstream_latency(sb, latency_ms);
    callgrind_zero(pid);
    process_all(&http, &proc_.1, &sb.api_key).await;
    // The run also processes the warm-up shipments; its once-per-run work (the scan, the
    // key set) is spread over all of them.
    let processed = created + warm;
    let per_processed = callgrind_dump(pid, &cg) / processed as f64;
    upstream_latency(sb, 0);
    assert_eq!(sb.entra.registration_count(), processed);
    let m = |x: f64| x / 1e6;
    println!(
        "[{label}] instructions (callgrind): per create {:.2} M vs floor {:.2} M (ratio {:.2}); \
         per processed shipment {:.2} M vs floor {:.2} M (ratio {:.2}) ({created} creates over 4 \
         connections, one run of {processed} at concurrency 16 with {latency_ms} ms upstreams; a \
         diagnosis beside the CPU ratios, not CPU time)",
        m(per_create),
        m(floor_create),
        per_create / floor_create,
        m(per_processed),
        m(floor_processing),
        per_processed / floor_processing,
    );
}

/// Instructions per round of a floor (`create` or `processing`), counted by running this
/// bench binary under callgrind with two round counts: the difference leaves out start-up
/// and setup.
pub(crate) fn floor_instructions(kind: &str) -> f64 {
    let count = |rounds: usize| -> f64 {
        let out = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--callgrind-out-file=/dev/null")
            .arg(std::env::current_exe().unwrap())
            .env("BENCH_FLOOR_CHILD", format!("{kind}:{rounds}"))
            .stdout(Stdio::null())
            .output()
            .expect("valgrind");
        let err = String::from_utf8_lossy(&out.stderr);
        err.lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no instruction count from valgrind: {err}"))
    };
    let (r1, r2) = (4, 12);
    (count(r2) - count(r1)) / (r2 - r1) as f64
}

/// The floor child: `BENCH_FLOOR_CHILD=create:R` or `processing:R` runs R rounds and exits.
pub(crate) fn floor_child(spec: &str) {
    let (kind, rounds) = spec.split_once(':').expect("kind:rounds");
    let rounds: usize = rounds.parse().expect("rounds");
    match kind {
        "create" => create_floor(rounds),
        _ => processing_floor(rounds, Duration::ZERO),
    };
}

pub(crate) fn callgrind_control(pid: u32, flag: &str) {
    let ok = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "callgrind_control {flag} {pid} failed");
}

pub(crate) fn callgrind_zero(pid: u32) {
    callgrind_control(pid, "-z");
}

/// Dumps the counts since the last zero and returns their instruction total.
pub(crate) fn callgrind_dump(pid: u32, dir: &Path) -> f64 {
    let before: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    callgrind_control(pid, "-d");
    for _ in 0..600 {
        let new = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| !before.contains(p));
        if let Some(file) = new {
            std::thread::sleep(Duration::from_millis(200));
            let text = std::fs::read_to_string(&file).unwrap();
            if let Some(v) = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("totals:")
                        .or_else(|| l.strip_prefix("summary:"))
                })
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
            {
                return v;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no callgrind dump in {}", dir.display());
}
