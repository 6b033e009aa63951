//! One shipment through create → fulfil → register → mail → resend, entirely over HTTP
//! with real cryptography, on both stores.

use serde_json::json;

use crate::support::{alice, Backend, World};

async fn full_lifecycle(backend: Backend) {
    let w = World::start(backend).await;
    let id = w.create_ok(alice()).await;
    assert_eq!(
        w.status_of(&id).await,
        json!({"shipment_id": id, "shipment_state": "ongoing"})
    );

    // Not programmed yet: processing leaves it ongoing, nothing registered or mailed.
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&id).await["shipment_state"], "ongoing");
    assert_eq!(w.sb.entra.registration_count(), 0);
    assert!(w.sb.mail.delivered().is_empty());

    // Yubico programs the key.
    assert!(w.sb.ye.advance(&id));
    assert_eq!(w.process().await, 204);
    assert_eq!(
        w.status_of(&id).await,
        json!({"shipment_id": id, "shipment_state": "complete"})
    );

    let mails = w.sb.mail.delivered();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let pin = mails[0]["pin"].as_str().unwrap().to_string();
    assert_eq!(pin.len(), 8);
    assert_eq!(mails[0]["message_id"], format!("{id}/pin/initial"));
    assert_eq!(mails[0]["emails_to"], json!(["alice.personal@example.org"]));
    assert_eq!(mails[0]["yubikey_name"], "Primary");
    let serial = mails[0]["serial_number"].as_u64().unwrap();

    // Registered at Entra under "<name>: <serial>", exactly once.
    assert_eq!(w.sb.entra.registration_count(), 1);
    let methods =
        w.sb.entra
            .registered_methods(fido_connector::sandbox::run::DEMO_USERS[0].1);
    assert_eq!(methods.len(), 1);
    assert_eq!(methods[0].1, format!("Primary: {serial}"));

    // Resend: same PIN, a new message id.
    assert_eq!(
        w.get(&format!("/v1/operations/resend-pin/{id}")).await.0,
        204
    );
    let mails = w.sb.mail.delivered();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1]["pin"].as_str().unwrap(), pin);
    assert_ne!(mails[1]["message_id"], mails[0]["message_id"]);

    // Processing again changes nothing.
    assert_eq!(w.process().await, 204);
    assert_eq!(w.sb.entra.registration_count(), 1);
    assert_eq!(w.sb.mail.delivered().len(), 2);
    assert_eq!(w.sb.ye.created_count(), 1);

    // The PIN is nowhere in the store, and the response key is only in the secret store.
    let rec = w.record(&id).await;
    let stored = serde_json::to_string(&rec).unwrap();
    assert!(!stored.contains(&pin));
    assert!(!stored.contains("\"d\""));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_on_the_embedded_store() {
    full_lifecycle(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle_on_azure_tables() {
    full_lifecycle(Backend::Azurite).await;
}
