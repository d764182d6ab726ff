//! `GET /api/openapi.json`: the API description, kept beside the code in
//! `docs/openapi.json` and compiled in.

use warp::{Filter, Rejection, Reply};

const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub fn route() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("openapi.json").and(warp::get()).map(|| {
        warp::reply::with_header(DOCUMENT, "content-type", "application/json").into_response()
    })
}
