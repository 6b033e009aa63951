//! The cryptographic floors: the JOSE work a create and a processed shipment cannot avoid.

#[allow(unused_imports)]
use super::*;

/// CPU time of this thread (the floors run on one thread, so wall-clock noise from other
/// processes does not count).
pub(crate) fn thread_cpu() -> f64 {
    let mut ts = libc_timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe {
        clock_gettime(3 /* CLOCK_THREAD_CPUTIME_ID */, &mut ts)
    };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[repr(C)]
pub(crate) struct libc_timespec {
    pub(crate) tv_sec: i64,
    pub(crate) tv_nsec: i64,
}

extern "C" {
    fn clock_gettime(clk: i32, ts: *mut libc_timespec) -> i32;
}

/// The cryptographic work a create and a processed shipment cannot avoid, with the same
/// library (josekit/OpenSSL) and the same payload sizes, in CPU ms per shipment:
/// create = one P-384 response key pair + two ECDH-ES+A256KW wraps (PIN and credential
/// requests) to a transport key parsed once; processing = restoring the response key from
/// its stored JWK once + two ECDH-ES unwraps + two ES384 verifications (verifier built once
/// per sign key).
/// The floors as the connector meets them: the connector does its cryptography on every
/// core at once (one task per shipment), and on this kind of machine an operation costs
/// more CPU when the other cores are busy too. So the floor runs on as many threads as
/// there are cores, at the same time, each timing its own CPU; also printed: the same on
/// one thread with the machine otherwise idle.
pub(crate) fn crypto_floors_on_all_cores(rounds: usize) -> (f64, f64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let alone = crypto_floors(rounds);
    let runs: Vec<(f64, f64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cores)
            .map(|_| s.spawn(move || crypto_floors(rounds)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let n = runs.len() as f64;
    let create = runs.iter().map(|r| r.0).sum::<f64>() / n;
    let process = runs.iter().map(|r| r.1).sum::<f64>() / n;
    println!(
        "crypto floors on {cores} threads at once: create {create:.2} ms, processing {process:.2} ms \
         (one thread alone: {:.2} ms, {:.2} ms)",
        alone.0, alone.1
    );
    (create, process)
}

pub(crate) fn crypto_floors(rounds: usize) -> (f64, f64) {
    (
        create_floor(rounds),
        processing_floor(rounds, Duration::ZERO),
    )
}

/// The create floor: CPU of this thread per create's cryptography.
pub(crate) fn create_floor(rounds: usize) -> f64 {
    use fido_connector::crypto::{self, yubico_side, ResponseKey, TransportKey};
    let transport = yubico_side::new_key("t1", "enc").unwrap();
    let transport_pub = TransportKey::new(crypto::public_of(&transport).unwrap()).unwrap();
    let pin_body = vec![b'x'; 330];
    let cred_body = vec![b'y'; 1600];
    let t = thread_cpu();
    for _ in 0..rounds {
        let k = ResponseKey::generate().unwrap();
        std::hint::black_box(k.public_jwk().unwrap());
        std::hint::black_box(transport_pub.encrypt(&pin_body).unwrap());
        std::hint::black_box(transport_pub.encrypt(&cred_body).unwrap());
    }
    (thread_cpu() - t) * 1000.0 / rounds as f64
}

/// The processing floor: CPU of this thread per shipment's cryptography (the response key
/// restored from its JWK, two unwraps, two ES384 verifications), with `pause` slept between
/// shipments (not counted: it is not this thread's CPU).
pub(crate) fn processing_floor(rounds: usize, pause: Duration) -> f64 {
    use fido_connector::crypto::{self, yubico_side, ResponseKey};
    use secrecy::ExposeSecret;
    let sign = yubico_side::new_key("s1", "sig").unwrap();
    let sign_pub = crypto::public_of(&sign).unwrap();
    // Responses as Yubico seals them: signed, then encrypted to the response key.
    let resp = ResponseKey::generate().unwrap();
    let resp_json = resp.private_jwk_json().expose_secret().to_string();
    let resp_pub = resp.public_jwk().unwrap();
    let sealed: Vec<String> = [330usize, 1200]
        .iter()
        .map(|n| {
            let jws = crypto::sign_with(&vec![b'z'; *n], &sign).unwrap();
            crypto::encrypt_to(jws.as_bytes(), &resp_pub).unwrap()
        })
        .collect();
    let verifier = josekit::jws::ES384.verifier_from_jwk(&sign_pub).unwrap();
    let mut cpu = 0.0;
    for _ in 0..rounds {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let t = thread_cpu();
        let key = ResponseKey::from_private_jwk(resp_json.clone().into()).unwrap();
        for jwe in &sealed {
            let inner = key.decrypt(jwe).unwrap();
            let jws = std::str::from_utf8(&inner).unwrap();
            std::hint::black_box(josekit::jws::deserialize_compact(jws, &verifier).unwrap());
        }
        cpu += thread_cpu() - t;
    }
    cpu * 1000.0 / rounds as f64
}
