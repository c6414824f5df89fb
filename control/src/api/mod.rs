//! The HTTP shell of the API server: routes a request to discovery, OpenAPI or a resource
//! verb, reads and bounds the body, and renders results and errors (`metav1.Status`). The
//! decisions live in the pure modules; the verbs in [`handlers`] read, decide and write.

pub mod delete;
pub mod handlers;
pub mod objects;
pub mod request;
pub mod watch;

use crate::env::Env;
use crate::error::ApiError;
use crate::storage::Storage;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use request::{parse_path, parse_query, Target};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

/// Largest request body accepted (Kubernetes' limit is 3 MiB for most requests; an object is
/// at most etcd's 1.5 MiB anyway).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub storage: Arc<dyn Storage>,
    pub env: Env,
    /// Flips to true at shutdown; open watches end.
    pub shutdown: signal::Receiver<bool>,
}

/// What a handler produces.
pub enum Reply {
    Json { code: StatusCode, body: Value, warnings: Vec<String> },
    Bytes { content_type: &'static str, body: Vec<u8> },
    Stream(Body),
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply::Json { code: StatusCode::OK, body, warnings: Vec::new() }
    }
}

fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (code, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for w in warnings {
        // RFC 7234 warning: code 299, agent "-", quoted text.
        let text = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, v);
        }
    }
    response
}

pub fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(code, &e.status(), &[]);
    if let Some(seconds) = e.details.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The router: every path goes through [`dispatch`], which does its own routing (Kubernetes
/// paths overlap in ways a pattern router cannot express, e.g. `namespaces/{name}/status`).
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(state): State<ApiState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let path = uri.path().to_string();
    let span = tracing::debug_span!("request", %method, %path);
    let _enter = span.enter();
    let pairs: BTreeMap<String, String> = uri.query().map(form_urlencoded_pairs).unwrap_or_default();
    let result = async {
        let target = parse_path(&path)?;
        let query = parse_query(&pairs)?;
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ApiError::too_large(MAX_BODY_BYTES))?;
        route(&state, &method, target, query, &headers, &body).await
    }
    .await;
    match result {
        Ok(Reply::Json { code, body, warnings }) => json_response(code, &body, &warnings),
        Ok(Reply::Bytes { content_type, body }) => {
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Ok(Reply::Stream(body)) => {
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
            r
        }
        Err(e) => {
            if e.code >= 500 {
                tracing::warn!(%method, %path, code = e.code, "{}", e.message);
            }
            error_response(&e)
        }
    }
}

/// Decodes `a=b&c=d` with percent-decoding and `+` as space.
fn form_urlencoded_pairs(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(
    state: &ApiState,
    method: &Method,
    target: Target,
    query: request::Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let get_only = |reply: Result<Reply, ApiError>| {
        if method == Method::GET {
            reply
        } else {
            Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"))
        }
    };
    match target {
        Target::Version => get_only(Ok(Reply::ok(crate::discovery::version(env!("CARGO_PKG_VERSION"))))),
        Target::Health => {
            get_only(Ok(Reply::Bytes { content_type: "text/plain; charset=utf-8", body: b"ok".to_vec() }))
        }
        Target::CoreVersions => get_only(Ok(Reply::ok(crate::discovery::core_versions()))),
        Target::Groups => get_only(Ok(Reply::ok(crate::discovery::groups()))),
        Target::Group(name) => {
            get_only(crate::discovery::group(&name).map(Reply::ok).ok_or_else(|| ApiError::not_found_path(&name)))
        }
        Target::ResourceList { group, version } => get_only(
            crate::discovery::resource_list(&group, &version)
                .map(Reply::ok)
                .ok_or_else(|| ApiError::not_found_path(&group)),
        ),
        Target::OpenApiIndex => get_only(Ok(Reply::ok(crate::openapi::index()))),
        Target::OpenApiDocument(name) => get_only(
            crate::openapi::document(&name)
                .map(|b| Reply::Bytes { content_type: "application/json", body: b.to_vec() })
                .ok_or_else(|| ApiError::not_found_path(&name)),
        ),
        Target::Resource(_) if !accepts_json(headers) => Err(ApiError::not_acceptable(
            "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io",
        )),
        Target::Resource(t) => handlers::handle(state, method, t, query, headers, body).await,
    }
}

/// Whether the client takes a JSON answer, which is what the API server gives. Clients that
/// prefer protobuf (client-go's clientsets) still list JSON in `Accept`, so no answer needs
/// protobuf; a client that accepts protobuf alone gets 406, as from kube-apiserver when it
/// cannot serve a media type.
fn accepts_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).peekable();
    if values.peek().is_none() {
        return true;
    }
    values.flat_map(|v| v.split(',')).any(|range| {
        let media = range.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        matches!(media.as_str(), "" | "*/*" | "application/*" | "application/json")
    })
}

/// Serves the API on `listener` until `shutdown` resolves; open watches end at shutdown.
pub async fn serve(
    listener: TcpListener,
    storage: Arc<dyn Storage>,
    env: Env,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = signal::channel(false);
    let state = ApiState { storage, env, shutdown: stop_rx.clone() };
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
}

/// The API server on an in-memory store, driven request by request (unit tests of the shell).
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::env::{Clock, Env};
    use crate::storage::memory::MemoryStorage;

    struct Fixed;

    impl Clock for Fixed {
        fn now(&self) -> chrono::DateTime<chrono::Utc> {
            crate::meta::parse_timestamp("2025-01-01T00:00:00Z").expect("a valid timestamp")
        }
    }

    pub struct Server {
        pub state: ApiState,
        pub store: Arc<MemoryStorage>,
        _stop: signal::Sender<bool>,
    }

    impl Server {
        /// With namespace `default`; `seed` drives uids, names and cluster IPs.
        pub async fn start(seed: u64) -> Server {
            let store = Arc::new(MemoryStorage::default());
            let (stop, shutdown) = signal::channel(false);
            let state = ApiState { storage: store.clone(), env: Env::with(Arc::new(Fixed), seed), shutdown };
            let server = Server { state, store, _stop: stop };
            let (code, body) = server.call("POST", "/api/v1/namespaces", r#"{"metadata":{"name":"default"}}"#).await;
            assert_eq!(code, 201, "{body}");
            server
        }

        /// One request with a JSON body; returns the status code and the body.
        pub async fn call(&self, method: &str, path_and_query: &str, body: &str) -> (u16, Value) {
            let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
            let method: Method = method.parse().expect("a method");
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let result = async {
                let target = parse_path(path)?;
                let query = parse_query(&form_urlencoded_pairs(query))?;
                route(&self.state, &method, target, query, &headers, body.as_bytes()).await
            }
            .await;
            match result {
                Ok(Reply::Json { code, body, .. }) => (code.as_u16(), body),
                Ok(_) => (200, Value::Null),
                Err(e) => (e.code, e.status()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            accepts_json(&h)
        };
        assert!(accepts_json(&HeaderMap::new()));
        assert!(with("application/vnd.kubernetes.protobuf,application/json"));
        assert!(with("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
        assert!(with("application/vnd.kubernetes.protobuf, */*"));
        assert!(!with("application/vnd.kubernetes.protobuf"));
        assert!(!with("application/yaml"));
    }

    #[test]
    fn query_decoding() {
        let q = form_urlencoded_pairs("labelSelector=app%3Dweb%2Ctier+in+%28a%29&limit=5&x");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
