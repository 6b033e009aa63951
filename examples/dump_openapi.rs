fn main() {
    println!(
        "{}",
        serde_json::to_string_pretty(&fido_connector::api::openapi::document()).unwrap()
    );
}
