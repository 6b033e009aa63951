//! Release builds of the binary on x86-64 Linux (linked by rust-lld, the toolchain's
//! default there) lay out the functions that start-up and the request paths run next to
//! each other, in the order `link/symbol-order.txt` lists them (see docs/performance.md,
//! "Idle memory", and scripts/symbol-order.sh, which regenerates the list). The kernel maps
//! executable pages 64 KiB at a time around each one touched; with the hot functions spread
//! over the whole text, most of it became resident at start. Names the list has that a
//! build does not (another toolchain, changed code) are skipped, so a stale list costs
//! memory, never correctness. `FIDO_CONNECTOR_SYMBOL_ORDER=0` leaves the layout to the
//! linker (needed with a linker other than lld).

fn main() {
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=FIDO_CONNECTOR_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=FIDO_CONNECTOR_LINK_MAP");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let lld_default = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    let wanted = std::env::var("FIDO_CONNECTOR_SYMBOL_ORDER").as_deref() != Ok("0");
    if release && lld_default && wanted {
        let list = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        // A link map for scripts/symbol-order.sh, which names executed addresses with it.
        if let Ok(map) = std::env::var("FIDO_CONNECTOR_LINK_MAP") {
            println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
            println!("cargo:rustc-link-arg-bins=-Wl,--no-demangle");
        }
    }
}
