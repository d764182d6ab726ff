//! A counting proxy in front of localstripe: forwards every request and
//! records it (method, path, query, Idempotency-Key), so a test can prove
//! how many Stripe API calls the engine made. It changes nothing, except
//! that a test may hold one answer back ([`CountingProxy::hold_next`]):
//! Stripe has done the work, the engine does not know yet.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use warp::http::{HeaderMap, Method, Response};
use warp::Filter;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub idempotency_key: Option<String>,
}

/// One answer held back: `reached` once Stripe has answered the request,
/// which the engine gets only after `release`.
#[derive(Clone, Default)]
pub struct Held {
    reached: Arc<Notify>,
    release: Arc<Notify>,
}

impl Held {
    /// Waits until Stripe has answered the held request.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the answer go to the engine.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

type Holds = Arc<Mutex<Vec<(String, String, Held)>>>;

pub struct CountingProxy {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    holds: Holds,
}

impl CountingProxy {
    pub fn start(target: String) -> Self {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let recorded = calls.clone();
        let holds: Holds = Arc::default();
        let held_answers = holds.clone();
        let http = reqwest::Client::new();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .and_then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let (http, target, recorded) = (http.clone(), target.clone(), recorded.clone());
                    let holds = held_answers.clone();
                    async move {
                        recorded.lock().unwrap().push(Call {
                            method: method.to_string(),
                            path: path.as_str().to_owned(),
                            query: query.clone(),
                            idempotency_key: headers
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned),
                        });
                        let url = if query.is_empty() {
                            format!("{target}{}", path.as_str())
                        } else {
                            format!("{target}{}?{query}", path.as_str())
                        };
                        // warp and reqwest use different `http` versions: go through strings.
                        let method =
                            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
                        let mut req = http.request(method.clone(), url).body(body);
                        for (name, value) in headers.iter() {
                            if name != "host" && name != "content-length" {
                                req = req.header(name.as_str(), value.as_bytes());
                            }
                        }
                        let upstream = req.send().await.map_err(|_| warp::reject::not_found())?;
                        let status = upstream.status().as_u16();
                        let body = upstream
                            .bytes()
                            .await
                            .map_err(|_| warp::reject::not_found())?;
                        let held = {
                            let mut holds = holds.lock().unwrap();
                            let at = holds
                                .iter()
                                .position(|(m, p, _)| m == method.as_str() && p == path.as_str());
                            at.map(|i| holds.remove(i).2)
                        };
                        if let Some(held) = held {
                            held.reached.notify_one();
                            held.release.notified().await;
                        }
                        Ok::<_, warp::Rejection>(
                            Response::builder()
                                .status(status)
                                .body(body.to_vec())
                                .unwrap(),
                        )
                    }
                },
            );
        let (addr, server) = warp::serve(route).bind_ephemeral(([127, 0, 0, 1], 0));
        tokio::spawn(server);
        Self { addr, calls, holds }
    }

    /// Holds back the answer to the next `method path` request.
    pub fn hold_next(&self, method: &str, path: &str) -> Held {
        let held = Held::default();
        self.holds
            .lock()
            .unwrap()
            .push((method.to_owned(), path.to_owned(), held.clone()));
        held
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request, in arrival order.
    pub fn requests(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The writes (anything but GET).
    pub fn writes(&self) -> Vec<Call> {
        self.requests()
            .into_iter()
            .filter(|c| c.method != "GET")
            .collect()
    }
}
