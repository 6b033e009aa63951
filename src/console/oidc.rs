//! Sign-in with Entra ID: the OpenID Connect authorization code flow with PKCE, as a
//! confidential client, through the `openidconnect` crate (discovery, the authorization
//! URL, the token exchange, and the ID token's signature, issuer, audience, expiry and
//! nonce). Its HTTP calls go through the process's one outbound client.

use std::sync::Arc;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What the browser carries between the start of a sign-in and its return (in its own
/// encrypted cookie): the state, the nonce and the PKCE verifier, and where to go after.
#[derive(Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub return_to: String,
    pub started: i64,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("return_to", &self.return_to)
            .finish_non_exhaustive()
    }
}

/// Who signed in, from a verified ID token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub object_id: String,
    pub name: String,
    pub username: String,
    pub roles: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

pub struct Oidc {
    issuer: String,
    client_id: String,
    secret: SecretString,
    redirect: String,
    http: reqwest::Client,
    client: tokio::sync::RwLock<Option<Arc<Client>>>,
}

impl Oidc {
    pub fn new(
        issuer: String,
        client_id: String,
        secret: SecretString,
        redirect: String,
        http: reqwest::Client,
    ) -> Self {
        Self {
            issuer,
            client_id,
            secret,
            redirect,
            http,
            client: tokio::sync::RwLock::new(None),
        }
    }

    /// The HTTP client `openidconnect` calls: ours (timeouts, no redirects, trusted roots).
    fn transport(
        &self,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send,
        >,
    > {
        let http = self.http.clone();
        move |req: openidconnect::HttpRequest| {
            let http = http.clone();
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let resp = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| HttpError(format!("{}: {e}", parts.uri)))?;
                let mut out = http::Response::builder().status(resp.status());
                for (k, v) in resp.headers() {
                    out = out.header(k, v);
                }
                let bytes = resp
                    .bytes()
                    .await
                    .map_err(|e| HttpError(format!("{}: {e}", parts.uri)))?;
                out.body(bytes.to_vec())
                    .map_err(|e| HttpError(e.to_string()))
            })
        }
    }

    /// The client, from the provider's discovery document (fetched once, and again after
    /// a sign-in failed on a key the cached set lacks).
    async fn client(&self) -> Result<Arc<Client>, String> {
        if let Some(c) = self.client.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.client.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| e.to_string())?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.transport())
            .await
            .map_err(|e| format!("the identity provider's discovery document: {e}"))?;
        let redirect = RedirectUrl::new(self.redirect.clone()).map_err(|e| e.to_string())?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            Some(ClientSecret::new(self.secret.expose_secret().to_string())),
        )
        .set_redirect_uri(redirect)
        // Entra documents client_secret_post for the code flow.
        .set_auth_type(AuthType::RequestBody);
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Where to send the browser, and what to keep until it returns.
    pub async fn begin(&self, return_to: &str, now: i64) -> Result<(url::Url, Pending), String> {
        let client = self.client().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url,
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                return_to: return_to.to_string(),
                started: now,
            },
        ))
    }

    /// Redeems the code and verifies the ID token; returns who signed in.
    pub async fn finish(&self, code: String, pending: Pending) -> Result<Identity, String> {
        let client = self.client().await?;
        let transport = self.transport();
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| e.to_string())?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&transport)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => format!(
                    "the identity provider refused the code: {}",
                    r.error_description()
                        .cloned()
                        .unwrap_or_else(|| r.error().to_string())
                ),
                other => format!("the token request failed: {other}"),
            })?;
        let id_token = response
            .id_token()
            .ok_or("the identity provider sent no ID token")?;
        let nonce = Nonce::new(pending.nonce);
        if let Err(e) = id_token.claims(&client.id_token_verifier(), &nonce) {
            // A key the cached set lacks (rotation): discover again next time.
            *self.client.write().await = None;
            return Err(format!("the ID token did not verify: {e}"));
        }
        // Verified above; its extra claims (`roles`, `oid`) are read from the same token.
        claims_of(&id_token.to_string())
    }
}

#[derive(Deserialize)]
struct Claims {
    oid: Option<String>,
    sub: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

fn claims_of(jwt: &str) -> Result<Identity, String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).ok_or("malformed ID token")?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| e.to_string())?;
    let c: Claims = serde_json::from_slice(&raw).map_err(|e| format!("ID token claims: {e}"))?;
    let username = c.preferred_username.unwrap_or_default();
    Ok(Identity {
        object_id: c.oid.unwrap_or(c.sub),
        name: c.name.unwrap_or_else(|| username.clone()),
        username,
        roles: c.roles,
    })
}
