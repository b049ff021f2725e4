//! The baseline servers: the best a bare warp handler can do on this machine
//! (POST answering 204 after parsing the same body, GET answering a count),
//! the least any durable like API must do (parse, produce the same Avro
//! record with the same producer, answer once the broker acked), and the
//! naive design a user would write instead (one synchronous PostgreSQL
//! transaction per like: the user_likes row, then `count = count + 1`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_infra::kafka::Publisher;
use likes_infra::postgres::PgPool;
use likes_infra::settings::StackSettings;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use warp::Filter;
use warp::http::StatusCode;

use crate::env::Service;

/// The body of a like, parsed the minimal way.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Like {
    user_id: i64,
    item_id: i64,
    item_type: i16,
}

async fn serve<F>(routes: F) -> anyhow::Result<Service>
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        warp::serve(routes)
            .incoming(listener)
            .graceful(async {
                let _ = stopped.await;
            })
            .run()
            .await;
    });
    Ok(Service::new(addr, stop, handle))
}

/// `POST /v1/likes`: parses the JSON body and answers 204; no Kafka, no Redis.
pub async fn bare_post() -> anyhow::Result<Service> {
    let route = warp::post()
        .and(warp::path!("v1" / "likes"))
        .and(warp::body::json())
        .map(|like: Like| {
            std::hint::black_box(like);
            StatusCode::NO_CONTENT
        });
    serve(route).await
}

/// `POST /v1/likes`, the minimal durable write: parses the same body, builds
/// the same event (a UUIDv7 id, the time) and produces it through the
/// product's own publisher (same codec, same producer settings, `acks=all`)
/// to `stack`'s topic, answering 202 once the broker acked (400 on a bad id,
/// 503 when the produce fails). No validation beyond the ids, no protection,
/// no read-your-writes token, no optimistic count: the gap between it and the
/// ingest is what the ingest adds.
pub async fn durable_post(stack: &StackSettings, timeout: Duration) -> anyhow::Result<Service> {
    // Lingers as the ingest's producer does (`KAFKA_PRODUCER_LINGER_MS`).
    let publisher = Publisher::new(
        &stack.kafka_bootstrap,
        &stack.topic,
        &stack.schema_registry_url,
        timeout,
        likes_infra::settings::producer_linger()?,
    )?;
    publisher.codec().register().await?;
    let publisher = Arc::new(publisher);
    let route = warp::post()
        .and(warp::path!("v1" / "likes"))
        .and(warp::body::json())
        .then(move |like: Like| {
            let publisher = publisher.clone();
            async move {
                let (Ok(user_id), Ok(item)) = (
                    UserId::parse(like.user_id),
                    ItemKey::parse(like.item_type.into(), like.item_id),
                ) else {
                    return StatusCode::BAD_REQUEST;
                };
                let event = LikeEvent {
                    event_id: EventId::generate(),
                    user_id,
                    item,
                    action: Action::Like,
                    timestamp: chrono::Utc::now(),
                };
                match publisher.publish(&event).await {
                    Ok(_) => StatusCode::ACCEPTED,
                    Err(_) => StatusCode::SERVICE_UNAVAILABLE,
                }
            }
        });
    serve(route).await
}

/// `GET /v1/items/{type}/{id}/count`: answers a JSON count without any lookup;
/// also serves the bulk read's floor.
pub async fn bare_get() -> anyhow::Result<Service> {
    let route = warp::get()
        .and(warp::path!("v1" / "items" / i32 / i64 / "count"))
        .map(|item_type: i32, item_id: i64| {
            warp::reply::json(&serde_json::json!({
                "item_type": item_type, "item_id": item_id, "count": 0
            }))
        });
    serve(route.or(bare_bulk_get())).await
}

/// `GET /v1/counts?items=t:i,…`: answers a JSON count per listed item without
/// any lookup (the bulk read's floor).
fn bare_bulk_get() -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::get()
        .and(warp::path!("v1" / "counts"))
        .and(warp::query::raw())
        .map(|query: String| {
            let items = query.strip_prefix("items=").unwrap_or_default();
            let counts: Vec<serde_json::Value> = items
                .split(',')
                .filter_map(|key| key.split_once(':'))
                .map(|(t, i)| serde_json::json!({"item_type": t, "item_id": i, "count": 0}))
                .collect();
            warp::reply::json(&serde_json::json!({ "counts": counts }))
        })
}

/// `POST /v1/likes` the naive way: per request, one transaction that inserts
/// the user_likes row and, when it is new, `UPDATE counters SET count = count + 1`
/// (inserting the counter row the first time). 204 after the commit.
pub async fn naive(db: PgPool) -> anyhow::Result<Service> {
    let route = warp::post()
        .and(warp::path!("v1" / "likes"))
        .and(warp::body::json())
        .then(move |like: Like| {
            let db = db.clone();
            async move {
                match naive_like(&db, &like).await {
                    Ok(()) => StatusCode::NO_CONTENT,
                    Err(_) => StatusCode::SERVICE_UNAVAILABLE,
                }
            }
        });
    serve(route).await
}

async fn naive_like(db: &PgPool, like: &Like) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id) \
         VALUES ($1, $2, $3, now(), $4) ON CONFLICT DO NOTHING",
    )
    .bind(like.item_id)
    .bind(like.item_type)
    .bind(like.user_id)
    .bind(uuid::Uuid::new_v4())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        let updated = sqlx::query(
            "UPDATE counters SET count = count + 1, updated_at = now() \
             WHERE item_id = $1 AND item_type = $2",
        )
        .bind(like.item_id)
        .bind(like.item_type)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            sqlx::query(
                "INSERT INTO counters (item_id, item_type, count, last_offset) VALUES ($1, $2, 1, 0) \
                 ON CONFLICT (item_id, item_type) DO UPDATE SET count = counters.count + 1",
            )
            .bind(like.item_id)
            .bind(like.item_type)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}
