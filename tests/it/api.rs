//! `/api/customers` over real HTTP against real Postgres: CRUD, pagination,
//! ETags, and every documented error shape. Outbound workers are off here,
//! so every change stays `pending` with its outbox row in place.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::json_of;
use crate::support::stack::{Options, Stack};

async fn start() -> Stack {
    Stack::start(Options {
        start_worker: false,
        ..Options::default()
    })
    .await
}

async fn create(stack: &Stack, body: Value) -> Value {
    let r = stack
        .api(Method::POST, "/api/customers")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{body}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_read_update_delete_with_etags_and_an_outbox_row_per_write() {
    let stack = start().await;
    let r = stack
        .api(Method::POST, "/api/customers")
        .json(&json!({"email": "ada@example.com", "name": "Ada", "metadata": {"tier": "gold"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/customers/{id}"));
    assert_eq!(etag, "\"1\"");
    assert_eq!(created["metadata"], json!({"tier": "gold"}));
    assert_eq!(created["sync"]["stripe"]["status"], "pending");
    assert_eq!(created["sync"]["stripe"]["id"], Value::Null);

    // PATCH with the current ETag; null clears a field, a null metadata value removes a key.
    let r = stack
        .api(Method::PATCH, &format!("/api/customers/{id}"))
        .header("If-Match", &etag)
        .json(&json!({"name": null, "phone": "+15555550100", "metadata": {"tier": null, "plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["name"], Value::Null);
    assert_eq!(patched["phone"], "+15555550100");
    assert_eq!(patched["email"], "ada@example.com");
    assert_eq!(patched["metadata"], json!({"plan": "pro"}));

    // The old ETag is now stale: 412, nothing changes.
    let r = stack
        .api(Method::PATCH, &format!("/api/customers/{id}"))
        .header("If-Match", &etag)
        .json(&json!({"name": "Lost update"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "version_mismatch"
    );
    assert_eq!(stack.api_customer(&id).await["name"], Value::Null);

    let r = stack
        .api(Method::DELETE, &format!("/api/customers/{id}"))
        .header("If-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted: Value = r.json().await.unwrap();
    assert_eq!(deleted["deleted"], true);
    // A repeated DELETE is harmless and writes nothing new.
    let r = stack
        .api(Method::DELETE, &format!("/api/customers/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A deleted customer cannot be changed.
    let r = stack
        .api(Method::PATCH, &format!("/api/customers/{id}"))
        .json(&json!({"name": "Zombie"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "customer_deleted"
    );

    // One outbox row per accepted write, in order.
    let ops: Vec<String> = {
        use diesel::prelude::*;
        use stripe_sync::db::schema::outbox;
        outbox::table
            .order(outbox::id)
            .select(outbox::operation)
            .load(&mut stack.db.conn())
            .unwrap()
    };
    assert_eq!(ops, ["create", "update", "delete"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_pages_with_a_cursor_and_filters() {
    let stack = start().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let email = if i % 5 == 0 {
            "shared@example.com".to_owned()
        } else {
            format!("c{i}@example.com")
        };
        ids.push(
            create(&stack, json!({"email": email, "name": format!("C{i}")})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/customers?limit=10&cursor={c}"),
            None => "/api/customers?limit=10".to_owned(),
        };
        let page: Value = json_of(stack.api(Method::GET, &path)).await;
        pages += 1;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        if page["has_more"] == false {
            assert_eq!(page["next_cursor"], Value::Null);
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every customer once, oldest first");

    let shared: Value =
        json_of(stack.api(Method::GET, "/api/customers?email=shared@example.com")).await;
    assert_eq!(
        shared["data"].as_array().unwrap().len(),
        5,
        "duplicate emails are allowed"
    );

    let later = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    stack
        .api(Method::PATCH, &format!("/api/customers/{}", ids[3]))
        .json(&json!({"name": "Changed"}))
        .send()
        .await
        .unwrap();
    stack
        .api(Method::DELETE, &format!("/api/customers/{}", ids[4]))
        .send()
        .await
        .unwrap();
    let since = reqwest::Url::parse_with_params(
        &format!("http://{}/api/customers", stack.addr),
        &[
            ("updated_since", later.as_str()),
            ("include_deleted", "true"),
        ],
    )
    .unwrap();
    let recent: Value = json_of(
        stack
            .api(Method::GET, since.path())
            .query(&since.query_pairs().collect::<Vec<_>>()),
    )
    .await;
    let recent_ids: Vec<&str> = recent["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(recent_ids, [ids[3].as_str(), ids[4].as_str()]);

    let live: Value = json_of(stack.api(Method::GET, "/api/customers?limit=100")).await;
    assert_eq!(
        live["data"].as_array().unwrap().len(),
        24,
        "deleted customers are hidden by default"
    );
    stack.stop().await;
}

/// Invariant 9: every error is `{"error":{"code","message"[,"field"]}}` with
/// the right status, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_is_documented_json() {
    let stack = start().await;
    let id = create(&stack, json!({"name": "Existing"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let item = format!("/api/customers/{id}");
    let url = |p: &str| format!("http://{}{p}", stack.addr);

    struct Case {
        name: &'static str,
        request: reqwest::RequestBuilder,
        status: u16,
        code: &'static str,
        field: Option<&'static str>,
    }
    let post = |body: Value| stack.api(Method::POST, "/api/customers").json(&body);
    let cases = vec![
        Case {
            name: "no token",
            request: stack.http.get(url("/api/customers")),
            status: 401,
            code: "unauthorized",
            field: None,
        },
        Case {
            name: "wrong token",
            request: stack
                .http
                .get(url("/api/customers"))
                .bearer_auth("not-the-token"),
            status: 401,
            code: "unauthorized",
            field: None,
        },
        Case {
            name: "no token, unknown route",
            request: stack.http.get(url("/api/nope")),
            status: 401,
            code: "unauthorized",
            field: None,
        },
        Case {
            name: "no token on the document",
            request: stack.http.get(url("/api/openapi.json")),
            status: 401,
            code: "unauthorized",
            field: None,
        },
        Case {
            name: "unknown field",
            request: post(json!({"nickname": "x"})),
            status: 400,
            code: "unknown_field",
            field: Some("nickname"),
        },
        Case {
            name: "malformed json",
            request: stack
                .api(Method::POST, "/api/customers")
                .header("content-type", "application/json")
                .body("{"),
            status: 400,
            code: "invalid_body",
            field: None,
        },
        Case {
            name: "wrong type",
            request: post(json!({"name": 5})),
            status: 400,
            code: "invalid_body",
            field: None,
        },
        Case {
            name: "invalid email",
            request: post(json!({"email": "not-an-email"})),
            status: 422,
            code: "invalid_field",
            field: Some("email"),
        },
        Case {
            name: "name too long",
            request: post(json!({"name": "n".repeat(257)})),
            status: 422,
            code: "invalid_field",
            field: Some("name"),
        },
        Case {
            name: "phone too long",
            request: post(json!({"phone": "1".repeat(21)})),
            status: 422,
            code: "invalid_field",
            field: Some("phone"),
        },
        Case {
            name: "metadata value too long",
            request: post(json!({"metadata": {"k": "v".repeat(501)}})),
            status: 422,
            code: "invalid_field",
            field: Some("metadata.k"),
        },
        Case {
            name: "too many metadata keys",
            request: post(
                json!({"metadata": (0..51).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            ),
            status: 422,
            code: "invalid_field",
            field: Some("metadata"),
        },
        Case {
            name: "reserved metadata key",
            request: post(json!({"metadata": {"stripe_sync_id": "x"}})),
            status: 422,
            code: "invalid_field",
            field: Some("metadata.stripe_sync_id"),
        },
        Case {
            name: "empty patch",
            request: stack.api(Method::PATCH, &item).json(&json!({})),
            status: 422,
            code: "invalid_field",
            field: Some("body"),
        },
        Case {
            name: "not json",
            request: stack
                .api(Method::POST, "/api/customers")
                .header("content-type", "text/plain")
                .body("name=x"),
            status: 415,
            code: "unsupported_media_type",
            field: None,
        },
        Case {
            name: "too large",
            // The server closes the connection after a 413 without reading
            // the body, so this request must not leave a pooled connection
            // for the next case to trip over: a client of its own.
            request: reqwest::Client::new()
                .post(url("/api/customers"))
                .bearer_auth(crate::support::stack::API_TOKEN)
                .json(&json!({"description": "d".repeat(70 * 1024)})),
            status: 413,
            code: "payload_too_large",
            field: None,
        },
        Case {
            name: "unknown id",
            request: stack.api(
                Method::GET,
                &format!("/api/customers/{}", uuid::Uuid::new_v4()),
            ),
            status: 404,
            code: "not_found",
            field: None,
        },
        Case {
            name: "malformed id",
            request: stack.api(Method::GET, "/api/customers/cus_123"),
            status: 404,
            code: "not_found",
            field: None,
        },
        Case {
            name: "patch unknown id",
            request: stack
                .api(
                    Method::PATCH,
                    &format!("/api/customers/{}", uuid::Uuid::new_v4()),
                )
                .json(&json!({"name": "x"})),
            status: 404,
            code: "not_found",
            field: None,
        },
        Case {
            name: "stale if-match",
            request: stack
                .api(Method::PATCH, &item)
                .header("If-Match", "\"41\"")
                .json(&json!({"name": "x"})),
            status: 412,
            code: "version_mismatch",
            field: None,
        },
        Case {
            name: "stale if-match on delete",
            request: stack
                .api(Method::DELETE, &item)
                .header("If-Match", "\"41\""),
            status: 412,
            code: "version_mismatch",
            field: None,
        },
        Case {
            name: "bad limit",
            request: stack.api(Method::GET, "/api/customers?limit=101"),
            status: 400,
            code: "invalid_query",
            field: Some("limit"),
        },
        Case {
            name: "bad cursor",
            request: stack.api(Method::GET, "/api/customers?cursor=abc"),
            status: 400,
            code: "invalid_query",
            field: Some("cursor"),
        },
        Case {
            name: "unknown query parameter",
            request: stack.api(Method::GET, "/api/customers?color=red"),
            status: 400,
            code: "invalid_query",
            field: None,
        },
        Case {
            name: "wrong method",
            request: stack.api(Method::PUT, &item).json(&json!({})),
            status: 405,
            code: "method_not_allowed",
            field: None,
        },
    ];
    for case in cases {
        let r = case.request.send().await.unwrap();
        let status = r.status().as_u16();
        let www = r.headers().get("www-authenticate").cloned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["error"]["code"], case.code, "{}: {body}", case.name);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            case.name
        );
        match case.field {
            Some(f) => assert_eq!(body["error"]["field"], f, "{}: {body}", case.name),
            None => assert!(
                body["error"].get("field").is_none(),
                "{}: {body}",
                case.name
            ),
        }
        if status == 401 {
            assert_eq!(www.unwrap(), "Bearer");
        }
    }
    // Only the first create got through.
    assert_eq!(stack.db.count("customers"), 1);
    assert_eq!(stack.db.count("outbox"), 1);
    let fetched = stack.api_customer(&id).await;
    assert_eq!(fetched["name"], "Existing");
    assert_eq!(fetched["version"], 1);

    // The OpenAPI document is served and describes these routes.
    let doc: Value = json_of(stack.api(Method::GET, "/api/openapi.json")).await;
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/customers/{id}"]["patch"].is_object());
    stack.stop().await;
}
