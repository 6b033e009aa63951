//! Test-only crash points. With the `fault-injection` feature and `FIDO_CONNECTOR_CRASH_AT`
//! set to a point's name, the process exits abruptly (no destructors, no flush) when it
//! reaches that point, which is how the crash tests kill it "at each step boundary".
//! Without the feature this compiles to nothing.

#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "fault-injection")]
    {
        if crate::config::crash_at() == Some(name) {
            eprintln!("fault-injection: crashing at {name}");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}
