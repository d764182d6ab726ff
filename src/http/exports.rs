//! `POST /api/exports/paid-sessions`: the paid sessions export for
//! workflow tools that poll over HTTP (n8n, Zapier-style pollers).
//!
//! The export's transaction stays open while the answer is written: the
//! body is streamed, and the watermark moves (the transaction commits)
//! only once the server has taken the whole answer for the connection. A
//! client that goes away first rolls it back, and the same sessions are
//! offered to the next call.

use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use warp::http::StatusCode;
use warp::hyper::Body;
use warp::{Filter, Rejection, Reply};

use super::body::json_body;
use super::error::ApiError;
use crate::apps::orders::export::{self, ExportSpec, HTTP_DEFAULT_LIMIT, HTTP_MAX_LIMIT};
use crate::db::PgPool;

/// How long a client may take to read the answer before the export is
/// rolled back (and offered again next time).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    payment_links: Vec<String>,
    /// RFC 3339: only sessions created at or after it.
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

fn bad(field: &str, message: String) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message).with_field(field),
    )
}

impl ExportBody {
    fn into_spec(self) -> Result<ExportSpec, Rejection> {
        let name = self.name.unwrap_or_else(|| export::DEFAULT_NAME.to_owned());
        export::valid_name(&name).map_err(|m| bad("name", m))?;
        if let Some(link) = self.payment_links.iter().find(|l| !l.starts_with("plink_")) {
            return Err(bad(
                "payment_links",
                format!("{link:?} is not a payment link id (plink_…)"),
            ));
        }
        let since = self
            .since
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.to_utc())
                    .map_err(|_| bad("since", format!("{s:?} is not an RFC 3339 time")))
            })
            .transpose()?;
        let limit = self.limit.unwrap_or(HTTP_DEFAULT_LIMIT);
        if !(1..=HTTP_MAX_LIMIT).contains(&limit) {
            return Err(bad(
                "limit",
                format!("limit must be between 1 and {HTTP_MAX_LIMIT}"),
            ));
        }
        Ok(ExportSpec {
            name,
            payment_links: self.payment_links,
            since,
            limit: Some(limit),
        })
    }
}

pub fn routes(
    pool: PgPool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with_pool = warp::any().map(move || pool.clone());
    warp::path!("exports" / "paid-sessions")
        .and(warp::post())
        .and(json_body::<ExportBody>())
        .and(with_pool)
        .and_then(|body: ExportBody, pool: PgPool| async move {
            let spec = body.into_spec()?;
            paid_sessions(pool, spec).await
        })
}

async fn paid_sessions(pool: PgPool, spec: ExportSpec) -> Result<warp::reply::Response, Rejection> {
    let (answer_tx, answer_rx) = oneshot::channel::<Vec<u8>>();
    let (written_tx, written_rx) = mpsc::channel::<()>();
    let export = tokio::task::spawn_blocking(move || {
        let mut conn = pool.get()?;
        export::run(&mut conn, &spec, |sessions, has_more| {
            let answer = json!({
                "status": "success",
                "count": sessions.len(),
                "sessions": sessions,
                "has_more": has_more,
            });
            answer_tx
                .send(serde_json::to_vec(&answer)?)
                .map_err(|_| anyhow::anyhow!("the request was dropped"))?;
            written_rx.recv_timeout(WRITE_TIMEOUT).map_err(|_| {
                anyhow::anyhow!("the answer was not written; the export is offered again")
            })
        })
    });
    match answer_rx.await {
        Ok(answer) => Ok(streamed(answer, written_tx)),
        // No sessions to deliver: the run ended without asking.
        Err(_) => match export.await {
            Ok(Ok(done)) => Ok(warp::reply::json(&json!({
                "status": "no_new_data",
                "count": 0,
                "sessions": [],
                "has_more": done.has_more,
            }))
            .into_response()),
            Ok(Err(e)) => Err(warp::reject::custom(ApiError::unavailable(
                "database_unavailable",
                &format!("{e:#}"),
            ))),
            Err(e) => Err(warp::reject::custom(ApiError::unavailable("internal", &e))),
        },
    }
}

/// The answer as a chunked stream whose end tells the export it was
/// written: hyper asks for the end of a chunked body only once it has
/// taken the answer for the connection. (No `Content-Length`: with one,
/// hyper may stop at the last byte without asking for the end.)
fn streamed(answer: Vec<u8>, written: mpsc::Sender<()>) -> warp::reply::Response {
    let chunks = futures::stream::unfold(
        (Some(answer), Some(written)),
        |(answer, written)| async move {
            if let Some(answer) = answer {
                return Some((Ok::<_, std::convert::Infallible>(answer), (None, written)));
            }
            if let Some(written) = written {
                let _ = written.send(());
            }
            None
        },
    );
    let mut response = warp::reply::Response::new(Body::wrap_stream(chunks));
    response.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/json"),
    );
    response
}
