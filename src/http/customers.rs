//! `/api/customers`: CRUD on local customers. Handlers parse input into
//! domain types and call `crate::customers` on the blocking pool.

use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

use super::body::json_body;
use super::error::ApiError;
use crate::customers::input::{CreateBody, CustomerPatch, NewCustomer, PatchBody};
use crate::customers::list::{self, ListParams, ListQuery};
use crate::customers::CustomerId;
use crate::customers::{self, CustomerError, CustomerView};
use crate::db::{self, PgPool};
use crate::input::Invalid;

pub fn routes(
    pool: PgPool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with_pool = warp::any().map(move || pool.clone());
    let collection = warp::path!("customers");
    let item = warp::path!("customers" / String);

    let create = collection
        .and(warp::post())
        .and(json_body::<CreateBody>())
        .and(with_pool.clone())
        .and_then(|body: CreateBody, pool: PgPool| async move {
            let new = NewCustomer::parse(body).map_err(invalid)?;
            let view = db::blocking(&pool, move |conn| customers::create(conn, new))
                .await
                .map_err(ApiError::from)?;
            let location = format!("/api/customers/{}", view.id);
            let mut response = with_etag(&view, StatusCode::CREATED);
            response.headers_mut().insert(
                header::LOCATION,
                location.parse().expect("a valid header value"),
            );
            Ok::<_, Rejection>(response)
        });

    let list = collection
        .and(warp::get())
        // Parsed here rather than by warp::query so a bad parameter is a
        // clear 400 instead of losing to another route's rejection.
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(with_pool.clone())
        .and_then(|raw_query: String, pool: PgPool| async move {
            let query = parse_list_query(&raw_query)?;
            let page = db::blocking(&pool, move |conn| list::list(conn, &query))
                .await
                .map_err(ApiError::from)?;
            Ok::<_, Rejection>(warp::reply::json(&page).into_response())
        });

    let get = item.and(warp::get()).and(with_pool.clone()).and_then(
        |id: String, pool: PgPool| async move {
            let id = parse_id(&id)?;
            let view = db::blocking(&pool, move |conn| customers::get(conn, id))
                .await
                .map_err(ApiError::from)?;
            Ok::<_, Rejection>(with_etag(&view, StatusCode::OK))
        },
    );

    let patch = item
        .and(warp::patch())
        .and(warp::header::optional::<String>("if-match"))
        .and(json_body::<PatchBody>())
        .and(with_pool.clone())
        .and_then(
            |id: String, if_match: Option<String>, body: PatchBody, pool: PgPool| async move {
                let id = parse_id(&id)?;
                let patch = CustomerPatch::parse(body).map_err(invalid)?;
                let view = db::blocking(&pool, move |conn| {
                    customers::update(conn, id, patch, if_match.as_deref())
                })
                .await
                .map_err(ApiError::from)?;
                Ok::<_, Rejection>(with_etag(&view, StatusCode::OK))
            },
        );

    let delete = item
        .and(warp::delete())
        .and(warp::header::optional::<String>("if-match"))
        .and(with_pool)
        .and_then(
            |id: String, if_match: Option<String>, pool: PgPool| async move {
                let id = parse_id(&id)?;
                let view = db::blocking(&pool, move |conn| {
                    customers::delete(conn, id, if_match.as_deref())
                })
                .await
                .map_err(ApiError::from)?;
                Ok::<_, Rejection>(with_etag(&view, StatusCode::OK))
            },
        );

    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(patch)
        .unify()
        .or(delete)
        .unify()
}

fn parse_list_query(raw: &str) -> Result<ListQuery, Rejection> {
    let bad = |field: Option<String>, message: String| {
        let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message);
        warp::reject::custom(match field {
            Some(f) => e.with_field(f),
            None => e,
        })
    };
    let params: ListParams =
        serde_urlencoded::from_str(raw).map_err(|e| bad(None, format!("invalid query: {e}")))?;
    ListQuery::parse(params).map_err(|e| bad(Some(e.field), e.message))
}

fn with_etag(view: &CustomerView, status: StatusCode) -> warp::reply::Response {
    let mut response = warp::reply::with_status(warp::reply::json(view), status).into_response();
    response.headers_mut().insert(
        header::ETAG,
        view.etag().parse().expect("a valid header value"),
    );
    response
}

/// Any string that is not a UUID names no customer: 404, like an unknown id.
fn parse_id(raw: &str) -> Result<CustomerId, Rejection> {
    raw.parse().map_err(|_| warp::reject::custom(not_found()))
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no customer with this id",
    )
}

fn invalid(e: Invalid) -> Rejection {
    warp::reject::custom(
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", e.message)
            .with_field(e.field),
    )
}

impl From<CustomerError> for ApiError {
    fn from(e: CustomerError) -> Self {
        match e {
            CustomerError::NotFound => not_found(),
            CustomerError::Deleted => ApiError::new(
                StatusCode::CONFLICT,
                "customer_deleted",
                "the customer is deleted and cannot be changed",
            ),
            e @ CustomerError::VersionMismatch { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                e.to_string(),
            ),
            CustomerError::Invalid(e) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", e.message)
                    .with_field(e.field)
            }
            CustomerError::Database(e) => ApiError::unavailable("database_unavailable", &e),
            CustomerError::Unavailable(e) => e.into(),
        }
    }
}
