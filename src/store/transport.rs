//! The Azure Tables client's transport: the process's one outbound client.
//!
//! `azure_data_tables` 0.21 (the maintained Tables crate; azure_core 1.x has no Tables
//! client yet) would otherwise build its own default reqwest 0.12 client, which follows
//! redirects, trusts no extra CA and keeps no timeouts of ours. azure_core 0.21 lets a
//! caller give its own [`HttpClient`]; this adapts the project's client (reqwest 0.13,
//! built by [`crate::upstream::http::build_client`]) to that trait. Written by hand
//! because no crate bridges the two versions. Tables answers are small JSON pages (at
//! most 1,000 entities), read whole.

use std::collections::HashMap;

use async_trait::async_trait;
use azure_core_legacy::error::ErrorKind;
use azure_core_legacy::headers::{HeaderName, HeaderValue, Headers};
use azure_core_legacy::{Body, HttpClient, Request, Response, StatusCode};

/// The project's outbound client, as the Tables client's transport.
#[derive(Debug, Clone)]
pub struct ProjectTransport(pub reqwest::Client);

#[async_trait]
impl HttpClient for ProjectTransport {
    async fn execute_request(&self, request: &Request) -> azure_core_legacy::Result<Response> {
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(|e| azure_core_legacy::Error::new(ErrorKind::DataConversion, e))?;
        let mut req = self.0.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match request.body() {
            Body::Bytes(b) => req.body(b.clone()),
            Body::SeekableStream(_) => {
                return Err(azure_core_legacy::Error::message(
                    ErrorKind::Other,
                    "streamed request bodies are not used by the Tables client",
                ))
            }
        };
        // Errors without the URL: a shared-key signature travels in headers, never the URL,
        // but a SAS would.
        let rsp = req.send().await.map_err(io_error)?;
        let status = StatusCode::try_from(rsp.status().as_u16()).map_err(|_| {
            azure_core_legacy::Error::message(ErrorKind::DataConversion, "invalid status code")
        })?;
        let headers: HashMap<HeaderName, HeaderValue> = rsp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str().ok().map(|v| {
                    (
                        HeaderName::from(k.as_str().to_owned()),
                        HeaderValue::from(v.to_owned()),
                    )
                })
            })
            .collect();
        let body = rsp.bytes().await.map_err(io_error)?;
        Ok(Response::new(
            status,
            Headers::from(headers),
            Box::pin(futures::stream::once(async move { Ok(body) })),
        ))
    }
}

/// A transport failure, with what happened (never the URL).
fn io_error(e: reqwest::Error) -> azure_core_legacy::Error {
    let e = e.without_url();
    let what = if e.is_timeout() {
        "did not answer within the outbound timeout".to_string()
    } else {
        e.to_string()
    };
    azure_core_legacy::Error::full(ErrorKind::Io, e, what)
}
