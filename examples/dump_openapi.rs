//! Prints the OpenAPI document (`cargo run --example dump_openapi`).
fn main() -> Result<(), serde_json::Error> {
    let doc = serde_json::to_string_pretty(&fido_connector::api::openapi::document())?;
    println!("{doc}");
    Ok(())
}
