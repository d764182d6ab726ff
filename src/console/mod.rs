//! `/console`: the operator's console, served by `serve` behind
//! `ADMIN_TOKEN` (off without it). Server-rendered pages over the same
//! [`Operator`] as `/api/admin/*`: the page holds no power the API lacks.
//! Reads are GETs that work without JavaScript; every action is a POST
//! form carrying the session's CSRF token (and the cookie is
//! SameSite=Strict besides).

pub mod chart;
mod mirror_view;
pub mod pages;
pub mod session;
mod views;

use std::time::Duration;

use askama::Template;
use chrono::Utc;
use warp::http::{header, Response, StatusCode};
use warp::hyper::Body;
use warp::{Filter, Rejection};

use crate::db::PgPool;
use crate::http::mirror::Readers;
use crate::ops::operator::Operator;
use pages::{Chrome, Login, Problem};
use session::{Session, Sessions};

/// Everything the console's routes need; clones share it.
#[derive(Clone)]
pub struct Console {
    pub sessions: Sessions,
    pub op: Operator,
    pub pool: PgPool,
    pub readers: Readers,
    pub mirror_timeout: Duration,
}

const STYLESHEET: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

type Reply = Response<Body>;

/// The console's routes; none when `console` is `None` (no `ADMIN_TOKEN`),
/// so `/console` answers 404 like any unknown path.
pub fn routes(
    console: Option<Console>,
) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    let enabled = console.is_some();
    // Off: every path under /console is a plain 404 (answered here, so no
    // other route's method check turns it into a 405).
    let off = warp::path("console").and_then(move || async move {
        if enabled {
            Err(warp::reject::not_found())
        } else {
            Ok(Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    r#"{"error":{"code":"console_disabled","message":"the console is off: set ADMIN_TOKEN in serve's environment"}}"#,
                ))
                .expect("a valid response"))
        }
    });
    let with = warp::any().and_then(move || {
        let console = console.clone();
        async move { console.ok_or_else(warp::reject::not_found) }
    });
    let base = warp::path("console").and(with.clone());
    let assets = warp::path!("console" / "console.css")
        .and(warp::get())
        .map(|| asset(STYLESHEET, "text/css; charset=utf-8"))
        .or(warp::path!("console" / "console.js")
            .and(warp::get())
            .map(|| asset(SCRIPT, "text/javascript; charset=utf-8")))
        .unify();
    let cookie = warp::header::optional::<String>("cookie");
    let host = warp::header::optional::<String>("host");
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let form = warp::body::content_length_limit(64 * 1024).and(warp::body::bytes());

    let login_page = base
        .clone()
        .and(warp::path!("login"))
        .and(warp::get())
        .map(|_: Console| html(StatusCode::OK, &Login { problem: None }));
    let login = base
        .clone()
        .and(warp::path!("login"))
        .and(warp::post())
        .and(host)
        .and(warp::header::optional::<String>("x-forwarded-proto"))
        .and(form)
        .map(
            |c: Console, host: Option<String>, proto: Option<String>, body: bytes::Bytes| {
                let fields = pairs(&body);
                let token = field(&fields, "token").unwrap_or_default();
                if !c.sessions.is_admin_token(token) {
                    return html(
                        StatusCode::UNAUTHORIZED,
                        &Login {
                            problem: Some("That is not the admin token.".into()),
                        },
                    );
                }
                let cookie = session::set_cookie(
                    &c.sessions.issue(Utc::now()),
                    host.as_deref(),
                    proto.as_deref(),
                );
                let mut r = redirect("/console");
                r.headers_mut()
                    .insert(header::SET_COOKIE, cookie.parse().expect("a valid header"));
                r
            },
        );
    let logout = base
        .clone()
        .and(warp::path!("logout"))
        .and(warp::post())
        .and(cookie)
        .and(form)
        .map(|c: Console, cookie: Option<String>, body: bytes::Bytes| {
            // Logging out needs the CSRF token too: a forged logout is a
            // nuisance, but no form here acts without it.
            if let Err(r) = acting(&c, cookie.as_deref(), &pairs(&body)) {
                return *r;
            }
            let mut r = redirect("/console/login");
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::clear_cookie().parse().expect("a valid header"),
            );
            r
        });

    // Pages: a GET with a session, else the login form.
    // The path before the method: a method filter first would answer 405
    // for every path of the server that matches no route.
    let page = warp::path("console")
        .and(warp::get())
        .and(with.clone())
        .and(cookie)
        .and_then(|c: Console, cookie: Option<String>| async move {
            match reading(&c, cookie.as_deref()) {
                Some(s) => Ok((c, s)),
                None => Err(warp::reject::custom(NeedsLogin)),
            }
        });
    let get_pages = page.and(warp::path::tail()).and(query).and_then(
        |(c, s): (Console, Session), tail: warp::path::Tail, raw: String| async move {
            Ok::<_, Rejection>(views::page(&c, &s, tail.as_str(), &raw).await)
        },
    );
    let actions = warp::path("console")
        .and(warp::post())
        .and(with)
        .and(warp::path::tail())
        .and(cookie)
        .and(form)
        .and_then(
            |c: Console, tail: warp::path::Tail, cookie: Option<String>, body: bytes::Bytes| async move {
                let fields = pairs(&body);
                let s = match acting(&c, cookie.as_deref(), &fields) {
                    Ok(s) => s,
                    Err(r) => return Ok::<_, Rejection>(*r),
                };
                Ok(views::act(&c, &s, tail.as_str(), &fields).await)
            },
        );
    off.or(assets)
        .unify()
        .or(login_page)
        .unify()
        .or(login)
        .unify()
        .or(logout)
        .unify()
        .or(get_pages)
        .unify()
        .or(actions)
        .unify()
        .recover(|r: Rejection| async move {
            if r.find::<NeedsLogin>().is_some() {
                Ok(redirect("/console/login"))
            } else {
                Err(r)
            }
        })
        .unify()
        .map(secure)
}

/// A page was asked for without a session.
#[derive(Debug)]
struct NeedsLogin;
impl warp::reject::Reject for NeedsLogin {}

/// The session of a page read, if the cookie holds a valid one.
fn reading(c: &Console, cookie: Option<&str>) -> Option<Session> {
    let value = session::from_header(cookie?)?;
    c.sessions.check(value, Utc::now())
}

/// The session of an action: a valid cookie and the form's CSRF token;
/// else the answer to send instead (boxed: a response is large).
fn acting(
    c: &Console,
    cookie: Option<&str>,
    fields: &[(String, String)],
) -> Result<Session, Box<Reply>> {
    let Some(s) = reading(c, cookie) else {
        return Err(Box::new(redirect("/console/login")));
    };
    match field(fields, "csrf") {
        Some(token) if c.sessions.csrf_matches(&s, token) => Ok(s),
        _ => Err(Box::new(problem(
            &s,
            StatusCode::FORBIDDEN,
            "This form is stale or did not come from the console (CSRF check failed); reload the page and try again.",
            "/console",
        ))),
    }
}

/// A form's or a query's fields, in order.
pub fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub fn html(status: StatusCode, page: &impl Template) -> Reply {
    match page.render() {
        Ok(body) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Body::from(body))
            .expect("a valid response"),
        Err(e) => {
            tracing::error!(error = %e, "console: a page failed to render");
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Body::from("the page failed to render; see serve's log"))
                .expect("a valid response")
        }
    }
}

/// A page that only says what went wrong, with the way back.
pub fn problem(s: &Session, status: StatusCode, message: &str, back: &str) -> Reply {
    let mut chrome = Chrome::new("Something went wrong", "", &s.csrf);
    chrome.problems.push(message.to_owned());
    html(
        status,
        &Problem {
            chrome,
            back: back.to_owned(),
        },
    )
}

/// After an action: see the result on a page that can be reloaded.
pub fn redirect(to: &str) -> Reply {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .expect("a valid response")
}

fn asset(body: &'static str, content_type: &str) -> Reply {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .body(Body::from(body))
        .expect("a valid response")
}

/// Headers on every console answer: nothing runs but our own script,
/// nothing frames the page, nothing is cached.
fn secure(mut r: Reply) -> Reply {
    let h = r.headers_mut();
    let set = |h: &mut warp::http::HeaderMap, name: header::HeaderName, value: &'static str| {
        h.insert(name, warp::http::HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    r
}
