//! A local stand-in for the Lambda Invoke API, so moto's Step Functions interpreter runs the
//! real state machine against the real handlers, in this process.
//!
//! moto sends Lambda task invocations to `http://localhost:$MOTO_PORT`; point that variable at
//! this server. It answers `POST /2015-03-31/functions/{name}/invocations` by running the step
//! the function name ends with, as Lambda would (a handler error is HTTP 200 with
//! `X-Amz-Function-Error: Unhandled` and `{errorType, errorMessage}`), and forwards every
//! other request to moto unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use qcvr::clock::Clock;
use qcvr::config::Integration;
use qcvr::qualys::QualysApi;
use qcvr::store::Store;
use qcvr::sync::{Deps, LOCAL_INVOCATION_TIME, StepInput, SyncSettings, run_step};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{info, warn};

/// The functions this endpoint runs: one set of dependencies for all three steps.
pub struct LocalFunctions<Q, S, C> {
    /// The Qualys client.
    pub qualys: Q,
    /// The store.
    pub store: S,
    /// The clock.
    pub clock: C,
    /// The sync tunables.
    pub settings: SyncSettings,
}

struct Endpoint<Q, S, C> {
    functions: LocalFunctions<Q, S, C>,
    moto_url: String,
    http: reqwest::Client,
    requests: AtomicU64,
}

/// Serves the endpoint on `listener` until the process ends.
pub async fn serve<Q, S, C>(
    listener: TcpListener,
    functions: LocalFunctions<Q, S, C>,
    moto_url: &str,
) -> std::io::Result<()>
where
    Q: QualysApi + 'static,
    S: Store + 'static,
    C: Clock + 'static,
{
    let endpoint = Arc::new(Endpoint {
        functions,
        moto_url: moto_url.trim_end_matches('/').to_owned(),
        http: reqwest::Client::new(),
        requests: AtomicU64::new(0),
    });
    let app = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::<Q, S, C>),
        )
        .fallback(forward::<Q, S, C>)
        .with_state(endpoint);
    let addr: SocketAddr = listener.local_addr()?;
    info!(%addr, "local Lambda endpoint listening");
    axum::serve(listener, app).await
}

/// The step a function name (or ARN, possibly with a qualifier) stands for.
pub fn step_of(function: &str) -> Option<Integration> {
    let name = function
        .rsplit_once(":function:")
        .map_or(function, |(_, rest)| rest);
    let name = name.split(':').next().unwrap_or(name);
    [
        ("sync-containers", Integration::Containers),
        ("sync-images", Integration::Images),
        ("sync-kb", Integration::Kb),
    ]
    .into_iter()
    .find(|(suffix, _)| name.ends_with(suffix))
    .map(|(_, integration)| integration)
}

async fn invoke<Q: QualysApi, S: Store, C: Clock>(
    State(endpoint): State<Arc<Endpoint<Q, S, C>>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Response {
    let request_id = format!(
        "local-{:08}",
        endpoint.requests.fetch_add(1, Ordering::Relaxed)
    );
    let Some(integration) = step_of(&function) else {
        let message = format!("no qcvr step is named like {function:?}");
        return lambda_error(
            &request_id,
            "ResourceNotFoundException",
            &message,
            StatusCode::NOT_FOUND,
        );
    };
    let input: StepInput = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => {
            let message = format!("the payload is not a step input: {e}");
            return lambda_error(&request_id, "InvalidConfig", &message, StatusCode::OK);
        }
    };
    let f = &endpoint.functions;
    let deps = Deps {
        qualys: &f.qualys,
        store: &f.store,
        clock: &f.clock,
        settings: &f.settings,
    };
    let deadline = Instant::now() + LOCAL_INVOCATION_TIME;
    match run_step(integration, deps, &input, deadline).await {
        Ok(output) => {
            let body = serde_json::to_vec(&output).unwrap_or_default();
            let mut response = (StatusCode::OK, body).into_response();
            set_header(response.headers_mut(), "x-amzn-RequestId", &request_id);
            set_header(response.headers_mut(), "content-type", "application/json");
            response
        }
        Err(error) => {
            warn!(%integration, error_type = error.error_type(), %error, "local invocation failed");
            lambda_error(
                &request_id,
                error.error_type(),
                &error.to_string(),
                StatusCode::OK,
            )
        }
    }
}

fn lambda_error(request_id: &str, error_type: &str, message: &str, status: StatusCode) -> Response {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message });
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    set_header(headers, "x-amzn-RequestId", request_id);
    set_header(headers, "content-type", "application/json");
    if status == StatusCode::OK {
        set_header(headers, "X-Amz-Function-Error", "Unhandled");
    }
    response
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Passes any other request to moto and its answer back.
async fn forward<Q, S, C>(
    State(endpoint): State<Arc<Endpoint<Q, S, C>>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{}", endpoint.moto_url, path);
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    let mut outgoing = endpoint.http.request(parts.method, &url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" {
            outgoing = outgoing.header(name, value);
        }
    }
    match outgoing.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != "transfer-encoding" && name != "content-length" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("moto is not reachable at {url}: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_and_arns_resolve_to_their_step() {
        assert_eq!(step_of("sync-containers"), Some(Integration::Containers));
        assert_eq!(
            step_of("arn:aws:lambda:us-east-1:123456789012:function:qcvr-demo-sync-images"),
            Some(Integration::Images)
        );
        assert_eq!(
            step_of("arn:aws:lambda:us-east-1:123456789012:function:qcvr-sync-kb:$LATEST"),
            Some(Integration::Kb)
        );
        assert_eq!(step_of("something-else"), None);
    }
}
