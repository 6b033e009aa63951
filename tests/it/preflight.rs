//! Pre-flight checks on create, the dry run, and strict mode, against the Entra
//! simulator's user attributes, passkey policy and group memberships.

use serde_json::{json, Value};

use crate::support::{alice, shipment_body, Backend, World};

const ALICE_OID: &str = "5f1c7a9e-3b8d-4c2a-9e61-0a7b2d4c8e11";

async fn world(strict: bool) -> World {
    World::start_with(Backend::Embedded, |env| {
        // Policy changes below must be seen at once: no policy cache.
        env.insert("FIDO_CONNECTOR_POLICY_CACHE_SECONDS".into(), "0".into());
        // Product 1 (the example's) is a YubiKey 5 NFC on firmware 5.7.
        env.insert(
            "FIDO_CONNECTOR_PRODUCT_AAGUIDS".into(),
            "1=a25342c0-3cdc-4414-8e46-f4807fca511c".into(),
        );
        if strict {
            env.insert("FIDO_CONNECTOR_PREFLIGHT".into(), "strict".into());
        }
    })
    .await
}

/// `POST /v1/fpr/shipments?dry_run=<flag>` with `body`: the status and the answer.
async fn post_dry(w: &World, flag: &str, body: &Value) -> (u16, Value) {
    let r = w
        .auth(
            w.http
                .post(format!("{}/v1/fpr/shipments?dry_run={flag}", w.base)),
        )
        .json(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn dry_run(w: &World) -> Value {
    let (s, report) = post_dry(w, "true", &shipment_body(alice())).await;
    assert_eq!(s, 200);
    report
}

fn result_of<'a>(report: &'a Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))["result"]
        .as_str()
        .unwrap()
}

/// A create refused by the named check: 400 in the vendor's idp_error shape, and nothing
/// ordered at YubiEnterprise or stored.
async fn refused_by(w: &World, check: &str) {
    let before = w.sb.ye.created_count();
    let (s, b) = w.create(&shipment_body(alice())).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error_code"], "idp_error", "{b}");
    let msg = b["error_message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("Pre-flight check {check} failed: ")),
        "{msg}"
    );
    assert_eq!(w.sb.ye.created_count(), before);
    let report = dry_run(w).await;
    assert_eq!(result_of(&report, check), "fail", "{report}");
    assert_eq!(report["would_create"], false);
}

fn policy(edit: impl FnOnce(&mut Value)) -> Value {
    let mut p = fido_connector::sandbox::entra::default_fido2_policy();
    edit(&mut p);
    p
}

#[tokio::test]
async fn each_check_passes_and_fails() {
    let w = world(false).await;
    let entra = &w.sb.entra;
    // Everything in order: every check passes and the create goes ahead.
    let report = dry_run(&w).await;
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["result"], "pass", "{report}");
    }
    assert_eq!(report["would_create"], true);
    assert_eq!(report["checks"].as_array().unwrap().len(), 8, "{report}");
    w.create_ok(alice()).await;

    // The user.
    entra.set_user_state(ALICE_OID, false, "Member");
    refused_by(&w, "account_enabled").await;
    entra.set_user_state(ALICE_OID, true, "Guest");
    refused_by(&w, "member_user").await;
    entra.set_user_state(ALICE_OID, true, "Member");

    // The passkey policy.
    entra.set_fido2_policy(policy(|p| p["state"] = json!("disabled")));
    refused_by(&w, "passkey_method_enabled").await;
    entra.set_fido2_policy(policy(|p| {
        p["isSelfServiceRegistrationAllowed"] = json!(false)
    }));
    refused_by(&w, "self_service_registration").await;
    // Targeted by a group the user is not in, then is.
    entra.set_fido2_policy(policy(
        |p| {
            p["includeTargets"] =
                json!([{"targetType": "group", "id": "g-pilot", "isRegistrationRequired": false}])
        },
    ));
    refused_by(&w, "user_targeted").await;
    entra.add_group_member("g-pilot", ALICE_OID);
    assert_eq!(result_of(&dry_run(&w).await, "user_targeted"), "pass");
    // Excluded by a group of hers, although all users are included.
    entra.set_fido2_policy(policy(|p| {
        p["excludeTargets"] = json!([{"targetType": "group", "id": "g-pilot"}])
    }));
    refused_by(&w, "user_targeted").await;

    // Key restrictions: an allow list without the ordered model's AAGUID, then with it.
    entra.set_fido2_policy(policy(|p| {
        p["keyRestrictions"] = json!({"isEnforced": true, "enforcementType": "allow",
            "aaGuids": ["ee882879-721c-4913-9775-3dfcce97072a"]})
    }));
    refused_by(&w, "key_model_allowed").await;
    entra.set_fido2_policy(policy(|p| {
        p["keyRestrictions"] = json!({"isEnforced": true, "enforcementType": "allow",
            "aaGuids": ["A25342C0-3CDC-4414-8E46-F4807FCA511C"]})
    }));
    assert_eq!(result_of(&dry_run(&w).await, "key_model_allowed"), "pass");
    // A block list naming it.
    entra.set_fido2_policy(policy(|p| {
        p["keyRestrictions"] = json!({"isEnforced": true, "enforcementType": "block",
            "aaGuids": ["a25342c0-3cdc-4414-8e46-f4807fca511c"]})
    }));
    refused_by(&w, "key_model_allowed").await;
    // Restrictions that are not enforced do not matter.
    entra.set_fido2_policy(policy(|p| {
        p["keyRestrictions"] =
            json!({"isEnforced": false, "enforcementType": "allow", "aaGuids": []})
    }));
    w.create_ok(alice()).await;
    w.stop().await;
}

/// A product not mapped to its AAGUIDs may be any YubiKey 5 model: against a list that
/// admits some of them the check cannot tell (`unknown`), and warns without refusing.
#[tokio::test]
async fn an_unmapped_product_against_a_partial_allow_list_is_unknown() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_POLICY_CACHE_SECONDS".into(), "0".into());
    })
    .await;
    w.sb.entra.set_fido2_policy(policy(|p| {
        p["keyRestrictions"] = json!({"isEnforced": true, "enforcementType": "allow",
            "aaGuids": ["2fc0579f-8113-47ea-b116-bb5a8db9202a"]})
    }));
    let report = dry_run(&w).await;
    assert_eq!(
        result_of(&report, "key_model_allowed"),
        "unknown",
        "{report}"
    );
    assert_eq!(report["would_create"], true);
    w.create_ok(alice()).await;
    w.stop().await;
}

/// Without the permission to read the policy its checks are `unknown`: logged and let
/// through by default, refused in strict mode.
#[tokio::test]
async fn a_forbidden_policy_read_is_unknown_and_strict_mode_refuses_it() {
    let w = world(false).await;
    w.sb.entra.forbid_policy_read(true);
    let report = dry_run(&w).await;
    for name in [
        "passkey_method_enabled",
        "user_targeted",
        "self_service_registration",
        "key_model_allowed",
    ] {
        assert_eq!(result_of(&report, name), "unknown", "{report}");
    }
    let msg = report["checks"][3]["message"].as_str().unwrap();
    assert!(msg.contains("Policy.Read.AuthenticationMethod"), "{msg}");
    assert_eq!(report["would_create"], true);
    w.create_ok(alice()).await;
    w.stop().await;

    let w = world(true).await;
    w.sb.entra.forbid_policy_read(true);
    assert_eq!(dry_run(&w).await["would_create"], false);
    let before = w.sb.ye.created_count();
    let (s, b) = w.create(&shipment_body(alice())).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error_message"]
        .as_str()
        .unwrap()
        .starts_with("Pre-flight check passkey_method_enabled failed"));
    assert_eq!(w.sb.ye.created_count(), before);
    w.sb.entra.forbid_policy_read(false);
    w.create_ok(alice()).await;
    w.stop().await;
}

/// A dry run stores nothing and orders nothing; an unknown
/// user is a failed check, a bad body the usual 400.
#[tokio::test]
async fn a_dry_run_creates_nothing_anywhere() {
    let w = world(false).await;
    let ye_before = w.sb.ye.created_count();
    let report = dry_run(&w).await;
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["would_create"], true);
    assert_eq!(w.sb.ye.created_count(), ye_before);
    let (s, list) = w.get("/v1/fpr/shipments").await;
    assert_eq!(s, 200);
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    assert!(w.sb.entra.registered_methods(ALICE_OID).is_empty());

    let mut nobody = shipment_body("nobody@contoso.example");
    let (s, report) = post_dry(&w, "true", &nobody).await;
    assert_eq!(s, 200);
    assert_eq!(result_of(&report, "user_exists"), "fail");
    assert_eq!(report["would_create"], false);
    nobody["pin_request"]["length"] = json!(3);
    let (s, _) = post_dry(&w, "true", &nobody).await;
    assert_eq!(s, 400);
    let (s, b) = post_dry(&w, "maybe", &shipment_body(alice())).await;
    assert_eq!(s, 400);
    assert!(
        b["error_message"].as_str().unwrap().contains("dry_run"),
        "{b}"
    );
    w.stop().await;
}

/// The policy is read once per `FIDO_CONNECTOR_POLICY_CACHE_SECONDS`, not per create.
#[tokio::test]
async fn the_policy_is_read_once_per_cache_period() {
    let w = World::start(Backend::Embedded).await;
    for _ in 0..3 {
        w.create_ok(alice()).await;
    }
    dry_run(&w).await;
    assert_eq!(w.sb.entra.policy_reads(), 1);
    w.stop().await;
}

/// A Graph that refuses `$select` is asked again without it: the checks that need
/// `accountEnabled` and `userType` answer `unknown`, and the create goes ahead.
#[tokio::test]
async fn a_graph_without_select_leaves_the_user_checks_unknown() {
    let w = world(false).await;
    w.sb.entra.refuse_select(true);
    let report = dry_run(&w).await;
    assert_eq!(result_of(&report, "user_exists"), "pass", "{report}");
    assert_eq!(result_of(&report, "account_enabled"), "unknown", "{report}");
    assert_eq!(result_of(&report, "member_user"), "unknown", "{report}");
    assert_eq!(report["would_create"], true);
    w.create_ok(alice()).await;
    w.stop().await;
}
