//! Microsoft Graph: users, the passkey policy, group checks, creation options, and fido2Methods
//! (registration verified as Entra does).

#[allow(unused_imports)]
use super::*;

pub(super) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message,
            "innerError": {"request-id": uuid::Uuid::new_v4().to_string(), "date": Utc::now().to_rfc3339()}}})),
    )
        .into_response()
}

pub(super) fn find_user(g: &Inner, id: &str) -> Option<(String, String)> {
    g.users
        .iter()
        .find(|(upn, oid)| oid.eq_ignore_ascii_case(id) || upn.eq_ignore_ascii_case(id))
        .cloned()
}

pub(super) fn not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
    )
}

pub(super) async fn get_user(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, id)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let g = st.lock();
    if g.refuse_select && q.contains_key("$select") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Query option '$select' is not allowed.",
        );
    }
    let Some((upn, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let (enabled, user_type) = g
        .user_state
        .get(&oid)
        .cloned()
        .unwrap_or((true, "Member".into()));
    let all = json!({"id": oid, "userPrincipalName": upn,
        "displayName": upn.split('@').next().unwrap_or(""), "mail": upn,
        "accountEnabled": enabled, "userType": user_type});
    // Like Graph: the default property set without $select (no accountEnabled, no
    // userType), exactly the named properties with it.
    let selected: Vec<&str> = match q.get("$select") {
        Some(s) => s.split(',').map(str::trim).collect(),
        None => vec!["id", "userPrincipalName", "displayName", "mail"],
    };
    let mut body = serde_json::Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "https://graph.microsoft.com/{ver}/$metadata#users/$entity"
        )),
    );
    for k in selected {
        if let Some(v) = all.get(k) {
            body.insert(k.to_string(), v.clone());
        }
    }
    Json(Value::Object(body)).into_response()
}

pub(super) async fn get_method_policy(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, method)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let mut g = st.lock();
    if !method.eq_ignore_ascii_case("fido2") {
        return graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The authentication method configuration was not found.",
        );
    }
    if g.policy_forbidden {
        return graph_error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Request Authorization failed",
        );
    }
    g.policy_reads += 1;
    let mut p = g.policy.clone().unwrap_or_else(default_fido2_policy);
    if let Some(o) = p.as_object_mut() {
        o.insert(
            "@odata.context".into(),
            json!(format!(
                "https://graph.microsoft.com/{ver}/$metadata#authenticationMethodConfigurations/$entity"
            )),
        );
        o.insert(
            "includeTargets@odata.context".into(),
            json!(format!(
                "https://graph.microsoft.com/{ver}/$metadata#policies/authenticationMethodsPolicy/authenticationMethodConfigurations('Fido2')/microsoft.graph.fido2AuthenticationMethodConfiguration/includeTargets"
            )),
        );
    }
    Json(p).into_response()
}

pub(super) async fn check_member_groups(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let Some(ids) = body["groupIds"].as_array() else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "groupIds is required",
        );
    };
    if ids.len() > 20 {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "Too many groupIds: at most 20 are allowed",
        );
    }
    let member: Vec<&str> = ids
        .iter()
        .filter_map(Value::as_str)
        .filter(|gid| g.groups.get(*gid).is_some_and(|m| m.contains(&oid)))
        .collect();
    Json(json!({
        "@odata.context": format!("https://graph.microsoft.com/{ver}/$metadata#Collection(Edm.String)"),
        "value": member
    }))
    .into_response()
}

pub(super) async fn creation_options(
    State(st): State<St>,
    headers: HeaderMap,
    Path((ver, id, op)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let minutes: i64 = if ver == "v1.0" {
        if op != "creationOptions" {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "v1.0 creationOptions takes no parameters",
            );
        }
        5
    } else {
        match op
            .strip_prefix("creationOptions(challengeTimeoutInMinutes=")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|n| n.parse::<i64>().ok())
        {
            Some(n) if (5..=43200).contains(&n) => n,
            _ => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "challengeTimeoutInMinutes must be 5..43200",
                )
            }
        }
    };
    let mut g = st.lock();
    let Some((upn, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    // A realistic, large opaque challenge (Entra's are several KB).
    let challenge = b64(&random(1536));
    let expires = Utc::now() + Duration::minutes(minutes);
    g.challenges
        .entry(oid.clone())
        .or_default()
        .push((challenge.clone(), expires));
    let exclude: Vec<Value> = g
        .methods
        .get(&oid)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| {
            json!({"@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialDescriptor",
            "type": "public-key", "id": odd_encoding(&m.credential_id, i), "transports": ["usb"]})
        })
        .collect();
    Json(json!({
        "@odata.context": format!("https://graph.microsoft.com/{ver}/$metadata#microsoft.graph.webauthnCredentialCreationOptions"),
        "value": {
            "@odata.type": "#microsoft.graph.webauthnCredentialCreationOptions",
            "challengeTimeoutDateTime": expires.to_rfc3339(),
            "publicKey": {
                "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialCreationOptions",
                "challenge": challenge,
                "timeout": 0,
                "attestation": "direct",
                "rp": {"id": st.cfg.rp_id, "name": "Microsoft"},
                "user": {"id": b64(oid.as_bytes()), "name": upn, "displayName": upn},
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
                "excludeCredentials": exclude,
                "authenticatorSelection": {"authenticatorAttachment": "cross-platform",
                    "requireResidentKey": true, "userVerification": "required"},
                "extensions": {"hmacCreateSecret": true, "enforceCredentialProtectionPolicy": true,
                    "credentialProtectionPolicy": "userVerificationOptional"}
            }
        }
    }))
    .into_response()
}

pub(super) async fn register(
    State(st): State<St>,
    headers: HeaderMap,
    Path((_ver, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let mut g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let pkc = &body["publicKeyCredential"];
    let (Some(cid), Some(cdj), Some(ao), Some(name)) = (
        pkc["id"].as_str(),
        pkc["response"]["clientDataJSON"].as_str(),
        pkc["response"]["attestationObject"].as_str(),
        body["displayName"].as_str(),
    ) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "publicKeyCredential is incomplete",
        );
    };
    let v = match crate::sandbox::webauthn::verify_registration(cid, cdj, ao, &st.cfg.rp_id) {
        Ok(v) => v,
        Err(e) => return graph_error(StatusCode::BAD_REQUEST, "invalidAttestation", &e),
    };
    let now = Utc::now();
    let issued = g.challenges.get_mut(&oid);
    let Some(list) = issued else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "challengeNotFound",
            "no challenge was issued to this user",
        );
    };
    let Some(pos) = list.iter().position(|(c, _)| *c == v.challenge) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "challengeNotFound",
            "the challenge was not issued to this user",
        );
    };
    if list[pos].1 <= now {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "challengeExpired",
            "the challenge has expired",
        );
    }
    if g.methods
        .values()
        .flatten()
        .any(|m| m.credential_id == v.credential_id)
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "credentialAlreadyRegistered",
            "this credential is already registered",
        );
    }
    let method = Method {
        id: b64(&random(16)),
        display_name: name.to_string(),
        credential_id: v.credential_id.clone(),
        created: now,
    };
    g.methods.entry(oid).or_default().push(method.clone());
    g.registrations += 1;
    (
        StatusCode::CREATED,
        Json(json!({"@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
            "id": method.id, "displayName": method.display_name, "createdDateTime": now.to_rfc3339(),
            "aaGuid": uuid::Uuid::from_bytes(v.aaguid).to_string(), "model": "fido-connector simulated key",
            "attestationCertificates": [], "attestationLevel": "notAttested"})),
    )
        .into_response()
}

pub(super) fn method_json(m: &Method) -> Value {
    json!({"id": m.id, "displayName": m.display_name, "createdDateTime": m.created.to_rfc3339()})
}

pub(super) async fn list_methods(
    State(st): State<St>,
    headers: HeaderMap,
    Path((_ver, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let list: Vec<Value> = g
        .methods
        .get(&oid)
        .into_iter()
        .flatten()
        .map(method_json)
        .collect();
    Json(json!({"value": list})).into_response()
}

pub(super) async fn delete_method(
    State(st): State<St>,
    headers: HeaderMap,
    Path((_ver, id, method)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = check_token(&st, &headers) {
        return r;
    }
    let mut g = st.lock();
    let Some((_, oid)) = find_user(&g, &id) else {
        return not_found(&id);
    };
    let list = g.methods.entry(oid).or_default();
    let before = list.len();
    list.retain(|m| m.id != method);
    if list.len() == before {
        not_found(&method)
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// The three encodings Graph uses for credential ids in excludeCredentials.
pub(super) fn odd_encoding(bytes: &[u8], i: usize) -> String {
    match i % 3 {
        0 => b64(bytes),
        1 => {
            let padded = base64::engine::general_purpose::URL_SAFE.encode(bytes);
            let pads = padded.matches('=').count();
            format!("{}{pads}", padded.trim_end_matches('='))
        }
        _ => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}
