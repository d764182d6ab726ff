//! A counting proxy in front of localstripe: forwards every request and
//! records it (method, path, query, Idempotency-Key), so a test can prove
//! how many Stripe API calls the engine made. It changes nothing, except
//! that a test may hold one answer back ([`CountingProxy::hold_next`]):
//! Stripe has done the work, the engine does not know yet; or script the
//! next answer ([`CountingProxy::answer_next`]) with what real Stripe says
//! and localstripe never does (a 500 after the work was done, a refused
//! idempotency key). A stand-in for faults the fake cannot produce.

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
    /// The form sent, as sent.
    pub body: String,
}

/// A scripted answer to the next matching request.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// Whether localstripe gets the request first (the work is done) or
    /// never sees it.
    pub forward: bool,
    pub status: u16,
    pub body: serde_json::Value,
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
type Scripts = Arc<Mutex<Vec<(String, String, Scripted)>>>;

pub struct CountingProxy {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    holds: Holds,
    scripts: Scripts,
}

/// Takes the first entry for `method path` out of `list`.
fn take<T>(list: &Mutex<Vec<(String, String, T)>>, method: &str, path: &str) -> Option<T> {
    let mut list = list.lock().unwrap();
    let at = list.iter().position(|(m, p, _)| m == method && p == path)?;
    Some(list.remove(at).2)
}

impl CountingProxy {
    pub fn start(target: String) -> Self {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let recorded = calls.clone();
        let holds: Holds = Arc::default();
        let held_answers = holds.clone();
        let scripts: Scripts = Arc::default();
        let scripted_answers = scripts.clone();
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
                    let scripts = scripted_answers.clone();
                    async move {
                        recorded.lock().unwrap().push(Call {
                            method: method.to_string(),
                            path: path.as_str().to_owned(),
                            query: query.clone(),
                            idempotency_key: headers
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        let script = take(&scripts, method.as_str(), path.as_str());
                        let scripted_answer = |s: &Scripted| {
                            Response::builder()
                                .status(s.status)
                                .header("content-type", "application/json")
                                .body(s.body.to_string().into_bytes())
                                .unwrap()
                        };
                        if let Some(s) = script.as_ref().filter(|s| !s.forward) {
                            return Ok(scripted_answer(s));
                        }
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
                        if let Some(held) = take(&holds, method.as_str(), path.as_str()) {
                            held.reached.notify_one();
                            held.release.notified().await;
                        }
                        if let Some(s) = &script {
                            return Ok(scripted_answer(s));
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
        Self {
            addr,
            calls,
            holds,
            scripts,
        }
    }

    /// Answers the next `method path` request as scripted.
    pub fn answer_next(&self, method: &str, path: &str, answer: Scripted) {
        self.scripts
            .lock()
            .unwrap()
            .push((method.to_owned(), path.to_owned(), answer));
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
