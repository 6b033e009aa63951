//! The simulator's control endpoints (`/_sim/...`): user state, policy, users, methods.

#[allow(unused_imports)]
use super::*;

pub(super) async fn ctl_add_user(State(st): State<St>, Json(v): Json<Value>) -> StatusCode {
    match (v["upn"].as_str(), v["id"].as_str()) {
        (Some(upn), Some(id)) => {
            st.lock().users.push((upn.into(), id.into()));
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

pub(super) async fn ctl_methods(State(st): State<St>) -> Json<Value> {
    let g = st.lock();
    Json(json!(g
        .methods
        .iter()
        .map(|(u, ms)| (u.clone(), ms.iter().map(method_json).collect::<Vec<_>>()))
        .collect::<HashMap<_, _>>()))
}

/// `{"id": UPN or object id, "account_enabled": bool, "user_type": "Member"|"Guest"}`.
pub(super) async fn ctl_user_state(State(st): State<St>, Json(v): Json<Value>) -> StatusCode {
    let mut g = st.lock();
    let Some((_, oid)) = v["id"].as_str().and_then(|id| find_user(&g, id)) else {
        return StatusCode::NOT_FOUND;
    };
    let enabled = v["account_enabled"].as_bool().unwrap_or(true);
    let user_type = v["user_type"].as_str().unwrap_or("Member").to_string();
    g.user_state.insert(oid, (enabled, user_type));
    StatusCode::NO_CONTENT
}

/// The passkey policy in Graph's shape; `{}` restores the default.
pub(super) async fn ctl_fido2_policy(State(st): State<St>, Json(v): Json<Value>) -> StatusCode {
    st.lock().policy = v.as_object().filter(|o| !o.is_empty()).map(|_| v.clone());
    StatusCode::NO_CONTENT
}
