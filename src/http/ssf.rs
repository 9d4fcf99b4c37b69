//! The Shared Signals transmitter API (`OpenID` SSF 1.0): `/.well-known/ssf-configuration` (no authentication),
//! and, for credentials with scope `ssf.manage` (reads: `ssf.read` too; bearer or Basic in the header only),
//! `/ssf/streams` (create with POST, read with GET, update with PATCH or PUT, delete; `?stream_id=`),
//! `/ssf/status` (GET, POST: enabled | paused | disabled), `/ssf/subjects:add` and `/ssf/subjects:remove`
//! (`email` or `iss_sub` subjects; every user is included until removed) and `/ssf/verify` (queues a
//! verification SET). Push delivery only for now: a create without a push `delivery` is refused.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Authenticated, SsfManage, SsfRead};
use crate::db::models::StreamRow;
use crate::error::AppError;
use crate::fanout::EVENTS_SUPPORTED;
use crate::fanout::streams::{self, Delivery, NewStream, StreamCaps, StreamError, StreamUpdate};
use crate::input;

pub const PUSH: &str = "urn:ietf:rfc:8935";
pub const POLL: &str = "urn:ietf:rfc:8936";

/// The longest a poll with `returnImmediately: false` waits for a SET.
const LONG_POLL: std::time::Duration = std::time::Duration::from_secs(20);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/ssf-configuration", web::get().to(configuration))
        .service(
            web::resource("/ssf/streams")
                .route(web::post().to(create))
                .route(web::get().to(read))
                .route(web::patch().to(patch))
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        )
        .service(
            web::resource("/ssf/status")
                .route(web::get().to(get_status))
                .route(web::post().to(set_status)),
        )
        .route("/ssf/subjects:add", web::post().to(add_subject))
        .route("/ssf/subjects:remove", web::post().to(remove_subject))
        .route("/ssf/verify", web::post().to(verify))
        .route("/ssf/poll/{stream_id}", web::post().to(poll))
        .route("/ssf/snapshot", web::get().to(snapshot));
}

/// An SSF error: a status and `{"error", "error_description"}`.
#[derive(Debug, thiserror::Error)]
pub enum SsfError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no stream with that stream_id")]
    NotFound,
    /// A cap on the number of streams is reached (SSF §8.1.1.1 answers 409 when the transmitter supports no more
    /// streams for a receiver).
    #[error("{0}")]
    Limit(String),
    #[error("verification was requested less than {0} s ago")]
    TooMany(i64),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<input::InputError> for SsfError {
    fn from(e: input::InputError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<StreamError> for SsfError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Invalid(m) => Self::BadRequest(m),
            StreamError::NotFound(_) => Self::NotFound,
            StreamError::Limit(m) => Self::Limit(m),
            StreamError::Keys(k) => Self::App(AppError::internal(k)),
            StreamError::Db(d) => Self::App(d.into()),
        }
    }
}

impl ResponseError for SsfError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Limit(_) => StatusCode::CONFLICT,
            Self::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::App(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            // Authentication, scope and internal errors keep their one rendering (with the challenge).
            Self::App(e) => e.error_response(),
            other => HttpResponse::build(other.status_code())
                .json(json!({"error": other.code(), "error_description": other.to_string()})),
        }
    }
}

impl SsfError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid_request",
            Self::NotFound => "not_found",
            Self::Limit(_) => "limit_exceeded",
            Self::TooMany(_) => "too_many_requests",
            Self::App(_) => "server_error",
        }
    }
}

/// GET /.well-known/ssf-configuration
async fn configuration(state: web::Data<AppState>) -> HttpResponse {
    let iss = &state.config.issuer;
    HttpResponse::Ok().json(json!({
        "spec_version": "1_0",
        "issuer": iss,
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": format!("{iss}/ssf/streams"),
        "status_endpoint": format!("{iss}/ssf/status"),
        "add_subject_endpoint": format!("{iss}/ssf/subjects:add"),
        "remove_subject_endpoint": format!("{iss}/ssf/subjects:remove"),
        "verification_endpoint": format!("{iss}/ssf/verify"),
        "critical_subject_members": ["user"],
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
        "default_subjects": "ALL"
    }))
}

/// A stream as the SSF API shows it (never the authorization header).
fn stream_json(row: &StreamRow, issuer: &str) -> Value {
    let requested: Value = serde_json::from_str(&row.events_requested).unwrap_or(json!([]));
    let mut delivery = serde_json::Map::new();
    let method = if row.delivery_method == "push" { PUSH } else { POLL };
    delivery.insert("method".into(), Value::from(method));
    let endpoint = match &row.endpoint_url {
        Some(url) => url.clone(),
        None => format!("{issuer}/ssf/poll/{}", row.id),
    };
    delivery.insert("endpoint_url".into(), Value::from(endpoint));
    json!({
        "stream_id": row.id,
        "iss": issuer,
        "aud": row.audience,
        "delivery": delivery,
        "events_supported": EVENTS_SUPPORTED,
        "events_requested": requested,
        "events_delivered": requested,
        "description": row.description,
        "min_verification_interval": streams::MIN_VERIFICATION_INTERVAL_SECS,
    })
}

#[derive(Deserialize)]
struct DeliveryIn {
    method: Option<String>,
    endpoint_url: Option<String>,
    authorization_header: Option<String>,
}

#[derive(Deserialize)]
struct StreamIn {
    stream_id: Option<String>,
    delivery: Option<DeliveryIn>,
    events_requested: Option<Vec<String>>,
    description: Option<String>,
}

/// Parses a JSON body after the shared input check: no NUL in any key or string, keys of at most `MAX_ID` and
/// strings of at most `MAX_TEXT` characters (fields with a tighter limit are checked where they are read).
fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, SsfError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| SsfError::BadRequest(format!("the body is not valid: {e}")))?;
    input::check_json("the body", &value, input::MAX_TEXT)?;
    serde_json::from_value(value).map_err(|e| SsfError::BadRequest(format!("the body is not valid: {e}")))
}

/// A stream id from a query, a body or a path: no NUL, at most `MAX_ID` characters.
fn stream_id(id: &str) -> Result<(), SsfError> {
    Ok(input::check("stream_id", id, input::MAX_ID)?)
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    stream_id: Option<String>,
}

/// The most streams one `GET /ssf/streams` returns, and the page size when `limit` is not given.
pub const LIST_PAGE: i64 = 100;

#[derive(Debug, Deserialize)]
struct ListQuery {
    stream_id: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn required(id: Option<String>) -> Result<String, SsfError> {
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SsfError::BadRequest("stream_id is required".into()))?;
    stream_id(&id)?;
    Ok(id)
}

/// The receiver-supplied fields of a stream with tighter limits than the body's: the endpoint and the event
/// types are URLs.
fn check_stream_in(input: &StreamIn) -> Result<(), SsfError> {
    if let Some(d) = &input.delivery {
        input::check_opt("delivery.endpoint_url", d.endpoint_url.as_deref(), input::MAX_URL)?;
        input::check_opt("delivery.method", d.method.as_deref(), input::MAX_URL)?;
    }
    for e in input.events_requested.iter().flatten() {
        input::check("events_requested", e, input::MAX_URL)?;
    }
    Ok(())
}

/// POST /ssf/streams — scope `ssf.manage`. `aud` is the creating credential's name
/// (docs/decisions/0025-stream-management.md).
async fn create(
    auth: Authenticated<SsfManage>,
    state: web::Data<AppState>,
    bytes: web::Bytes,
) -> Result<HttpResponse, SsfError> {
    let input: StreamIn = body(&bytes)?;
    check_stream_in(&input)?;
    // Without `delivery` the transmitter assumes poll (SSF §8.1.1).
    let delivery = match input.delivery {
        None => Delivery::Poll,
        Some(d) if d.method.as_deref() == Some(POLL) => {
            if d.endpoint_url.is_some() {
                return Err(SsfError::BadRequest(
                    "a poll stream's endpoint_url is offboard's to assign".into(),
                ));
            }
            Delivery::Poll
        }
        Some(d) if d.method.as_deref().is_none_or(|m| m == PUSH) => Delivery::Push {
            endpoint_url: d
                .endpoint_url
                .ok_or_else(|| SsfError::BadRequest("delivery.endpoint_url is required for push".into()))?,
            authorization_header: d.authorization_header,
        },
        Some(_) => {
            return Err(SsfError::BadRequest(format!(
                "delivery method must be {PUSH} or {POLL}"
            )));
        }
    };
    let (keys, issuer) = (state.tokens.keys.clone(), state.config.issuer.clone());
    let caps = StreamCaps::from(&state.config.fanout);
    let row = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            let new = NewStream {
                audience: client.name.clone(),
                delivery,
                events_requested: input.events_requested.unwrap_or_default(),
                description: input.description,
                created_by: client.name.clone(),
            };
            Ok::<_, SsfError>(streams::create_within(db, &keys, &new, &caps)?)
        })
        .await?;
    Ok(HttpResponse::Created().json(stream_json(&row, &issuer)))
}

/// `GET /ssf/streams[?stream_id=]` — scope `ssf.read` or `ssf.manage`: one stream, or the streams of the caller
/// (every stream for `admin`), one page at a time: `limit` (default and most [`LIST_PAGE`]) streams in `stream_id`
/// order after `after` (a `stream_id`), with a `Link: <…>; rel="next"` header when there may be more. It reads the
/// caller's streams by index, never the outbox. `ssf.read` reads the streams the credential itself created.
async fn read(
    auth: Authenticated<SsfRead>,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, SsfError> {
    let issuer = state.config.issuer.clone();
    let q = q.into_inner();
    if let Some(id) = &q.stream_id {
        stream_id(id)?;
    }
    input::check_opt("after", q.after.as_deref(), input::MAX_ID)?;
    let limit = match q.limit.as_deref() {
        None => LIST_PAGE,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| SsfError::BadRequest("limit must be a positive integer".into()))?
            .min(LIST_PAGE),
    };
    if let Some(id) = q.stream_id {
        let row = auth
            .run_as::<_, SsfError, _>(move |db, client| owned(db, &id, client))
            .await?;
        return Ok(HttpResponse::Ok().json(stream_json(&row, &issuer)));
    }
    let after = q.after;
    let page = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            let owner = (!client.has(crate::credentials::Scope::Admin)).then(|| client.name.clone());
            Ok::<_, SsfError>(streams::page(db, owner.as_deref(), after.as_deref(), limit)?)
        })
        .await?;
    let mut res = HttpResponse::Ok();
    if i64::try_from(page.len()).unwrap_or(i64::MAX) >= limit
        && let Some(last) = page.last()
    {
        res.insert_header((
            "Link",
            format!(
                "<{issuer}/ssf/streams?after={}&limit={limit}>; rel=\"next\"",
                last.id
            ),
        ));
    }
    Ok(res.json(
        page.iter()
            .map(|row| stream_json(row, &issuer))
            .collect::<Vec<_>>(),
    ))
}

async fn update(
    auth: Authenticated<SsfManage>,
    state: &AppState,
    bytes: &[u8],
    replace: bool,
) -> Result<HttpResponse, SsfError> {
    let input: StreamIn = body(bytes)?;
    check_stream_in(&input)?;
    let id = required(input.stream_id)?;
    let (endpoint_url, authorization_header) = match input.delivery {
        Some(d) => {
            if d.method.as_deref().is_some_and(|m| m != PUSH) {
                return Err(SsfError::BadRequest(format!("delivery method must be {PUSH}")));
            }
            (
                d.endpoint_url,
                if replace {
                    Some(d.authorization_header)
                } else {
                    d.authorization_header.map(Some)
                },
            )
        }
        None => (None, if replace { Some(None) } else { None }),
    };
    let change = StreamUpdate {
        endpoint_url,
        authorization_header,
        events_requested: if replace {
            Some(input.events_requested.unwrap_or_default())
        } else {
            input.events_requested
        },
        description: if replace {
            Some(input.description)
        } else {
            input.description.map(Some)
        },
    };
    let (keys, issuer) = (state.tokens.keys.clone(), state.config.issuer.clone());
    let network = StreamCaps::from(&state.config.fanout).network;
    let row = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            owned(db, &id, client)?;
            Ok::<_, SsfError>(streams::update_within(db, &keys, &id, &change, &network)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(stream_json(&row, &issuer)))
}

/// PATCH /ssf/streams — scope `ssf.manage`: changes the fields given.
async fn patch(
    auth: Authenticated<SsfManage>,
    state: web::Data<AppState>,
    bytes: web::Bytes,
) -> Result<HttpResponse, SsfError> {
    update(auth, &state, &bytes, false).await
}

/// PUT /ssf/streams — scope `ssf.manage`: replaces every receiver-supplied field.
async fn put(
    auth: Authenticated<SsfManage>,
    state: web::Data<AppState>,
    bytes: web::Bytes,
) -> Result<HttpResponse, SsfError> {
    update(auth, &state, &bytes, true).await
}

/// `DELETE /ssf/streams?stream_id=` — scope `ssf.manage`.
async fn delete(
    auth: Authenticated<SsfManage>,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, SsfError> {
    let id = required(q.into_inner().stream_id)?;
    auth.run_as::<_, SsfError, _>(move |db, client| {
        owned(db, &id, client)?;
        Ok::<_, SsfError>(streams::remove(db, &id)?)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /ssf/status?stream_id=` — scope `ssf.read` or `ssf.manage`.
async fn get_status(
    auth: Authenticated<SsfRead>,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, SsfError> {
    let id = required(q.into_inner().stream_id)?;
    let (row, progress) = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            let row = owned(db, &id, client)?;
            let progress = streams::progress(db, &id)?;
            Ok::<_, SsfError>((row, progress))
        })
        .await?;
    // `position`, `undelivered_from` and `dead_letters` are offboard's extension: how far delivery has come, so a
    // push receiver can tell a quiet stream from a broken one (docs/decisions/0039-push-guard-freshness.md).
    Ok(HttpResponse::Ok().json(json!({
        "stream_id": row.id,
        "status": row.status,
        "reason": row.status_reason,
        "position": progress.position,
        "undelivered_from": progress.undelivered_from,
        "dead_letters": progress.dead_letters,
    })))
}

#[derive(Debug, Deserialize)]
struct StatusIn {
    stream_id: Option<String>,
    status: String,
    reason: Option<String>,
}

/// POST /ssf/status — scope `ssf.manage`.
async fn set_status(auth: Authenticated<SsfManage>, bytes: web::Bytes) -> Result<HttpResponse, SsfError> {
    let input: StatusIn = body(&bytes)?;
    let id = required(input.stream_id)?;
    let (status, reason) = (input.status.clone(), input.reason.clone());
    let row = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            owned(db, &id, client)?;
            streams::set_status(db, &id, &status, reason.as_deref())?;
            Ok::<_, SsfError>(streams::get(db, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok()
        .json(json!({"stream_id": row.id, "status": row.status, "reason": row.status_reason})))
}

#[derive(Debug, Deserialize)]
struct SubjectIn {
    stream_id: Option<String>,
    subject: Value,
}

async fn subject(
    auth: Authenticated<SsfManage>,
    state: &AppState,
    bytes: &[u8],
    include: bool,
) -> Result<HttpResponse, SsfError> {
    let input: SubjectIn = body(bytes)?;
    let id = required(input.stream_id)?;
    for (member, max) in [
        ("email", input::MAX_ID),
        ("sub", input::MAX_ID),
        ("format", input::MAX_ID),
        ("iss", input::MAX_URL),
    ] {
        let value = input.subject.get(member).and_then(Value::as_str);
        input::check_opt(&format!("subject.{member}"), value, max)?;
    }
    let key = match input.subject.get("format").and_then(Value::as_str) {
        Some("email") => input
            .subject
            .get("email")
            .and_then(Value::as_str)
            .map(|e| crate::tokens::UserKey::Email(e.to_owned())),
        Some("iss_sub")
            if input.subject.get("iss").and_then(Value::as_str) == Some(state.config.issuer.as_str()) =>
        {
            input
                .subject
                .get("sub")
                .and_then(Value::as_str)
                .map(|s| crate::tokens::UserKey::Id(s.to_owned()))
        }
        _ => None,
    }
    .ok_or_else(|| {
        SsfError::BadRequest(format!(
            "subject must be {{\"format\":\"email\",\"email\":…}} or an iss_sub with iss {}",
            state.config.issuer
        ))
    })?;
    auth.run_as::<_, SsfError, _>(move |db, client| {
        owned(db, &id, client)?;
        let user = crate::tokens::find_user(db, &key)?
            .ok_or_else(|| SsfError::BadRequest("no user matches the subject".into()))?;
        Ok::<_, SsfError>(streams::set_subject(db, &id, &user.id, include)?)
    })
    .await?;
    Ok(HttpResponse::Ok().finish())
}

/// POST /ssf/subjects:add — scope `ssf.manage`.
async fn add_subject(
    auth: Authenticated<SsfManage>,
    state: web::Data<AppState>,
    bytes: web::Bytes,
) -> Result<HttpResponse, SsfError> {
    subject(auth, &state, &bytes, true).await
}

/// POST /ssf/subjects:remove — scope `ssf.manage`.
async fn remove_subject(
    auth: Authenticated<SsfManage>,
    state: web::Data<AppState>,
    bytes: web::Bytes,
) -> Result<HttpResponse, SsfError> {
    subject(auth, &state, &bytes, false).await
}

#[derive(Debug, Deserialize)]
struct VerifyIn {
    stream_id: Option<String>,
    state: Option<String>,
}

/// POST /ssf/verify — scope `ssf.manage`: 204, then a verification SET on the stream.
async fn verify(auth: Authenticated<SsfManage>, bytes: web::Bytes) -> Result<HttpResponse, SsfError> {
    let input: VerifyIn = body(&bytes)?;
    let id = required(input.stream_id)?;
    let queued = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            owned(db, &id, client)?;
            Ok::<_, SsfError>(streams::verify(db, &id, input.state.as_deref())?)
        })
        .await?;
    if !queued {
        return Err(SsfError::TooMany(streams::MIN_VERIFICATION_INTERVAL_SECS));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /ssf/poll/{stream_id}` — scope `ssf.manage` (RFC 8936): acknowledges, then returns queued SETs; with
/// `returnImmediately: false` (the default) waits up to 20 s for one.
async fn poll(
    auth: Authenticated<SsfManage>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    bytes: web::Bytes,
) -> Result<HttpResponse, SsfError> {
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        body(&bytes)?
    };
    let (req, return_immediately) = crate::fanout::poll::parse(&body)?;
    for jti in req.ack.iter().chain(req.set_errs.iter().map(|(jti, _)| jti)) {
        input::check("ack", jti, input::MAX_ID)?;
    }
    let max_events = req.max_events;
    let id = path.into_inner();
    stream_id(&id)?;
    let (keys, config) = (state.tokens.keys.clone(), state.config.clone());
    let stream_id = id.clone();
    // Kept to check the credential again before a long poll answers: it may have been revoked (or lost the
    // stream) while the poll waited, and then must get no SETs.
    let recheck = auth.clone();
    let mut answer = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            owned(db, &stream_id, client)?;
            Ok(crate::fanout::poll::poll(db, &keys, &config, &stream_id, &req)?)
        })
        .await?;
    // `maxEvents: 0` only acknowledges: nothing to wait for.
    if answer.sets.is_empty() && !return_immediately && max_events != Some(0) {
        let deadline = std::time::Instant::now() + LONG_POLL;
        let stream = block({
            let (db, id) = (state.db.clone(), id.clone());
            move || streams::get(&db, &id)
        })
        .await?;
        while std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
            let (db, s) = (state.db.clone(), stream.clone());
            if block(move || crate::fanout::poll::has_pending(&db, &s)).await? {
                let (keys, config, sid) = (state.tokens.keys.clone(), state.config.clone(), id.clone());
                let again = crate::fanout::poll::PollRequest {
                    max_events,
                    ..Default::default()
                };
                answer = recheck
                    .run_as::<_, SsfError, _>(move |db, client| {
                        owned(db, &sid, client)?;
                        Ok(crate::fanout::poll::poll(db, &keys, &config, &sid, &again)?)
                    })
                    .await?;
                break;
            }
        }
    }
    // `sets` in queue order (a JSON object keeps the order it is written in; serde_json's map would sort it).
    let mut text = String::from("{\"sets\":{");
    for (i, (jti, set)) in answer.sets.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&Value::from(jti.as_str()).to_string());
        text.push(':');
        text.push_str(&Value::from(set.as_str()).to_string());
    }
    text.push_str(if answer.more_available {
        "},\"moreAvailable\":true}"
    } else {
        "},\"moreAvailable\":false}"
    });
    Ok(HttpResponse::Ok().content_type("application/json").body(text))
}

/// `GET /ssf/snapshot?stream_id=[&after=][&limit=]` — scope `ssf.read` or `ssf.manage`, on a stream the credential
/// may read: the revocations that can still kill an unexpired access token, with the stream position they
/// correspond to (`fanout::snapshot`), `limit` (1–1000, default 1000) entries a page, a full page carrying
/// `Link: <…>; rel="next"`.
async fn snapshot(
    auth: Authenticated<SsfRead>,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, SsfError> {
    use crate::fanout::snapshot::{self, Cursor};
    let q = q.into_inner();
    let id = required(q.stream_id)?;
    input::check_opt("after", q.after.as_deref(), input::MAX_ID)?;
    let after = q
        .after
        .as_deref()
        .map(|a| {
            Cursor::parse(a).ok_or_else(|| SsfError::BadRequest("after is not a snapshot cursor".into()))
        })
        .transpose()?;
    let limit = match q.limit.as_deref() {
        None => snapshot::PAGE,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=snapshot::PAGE).contains(n))
            .ok_or_else(|| {
                SsfError::BadRequest(format!("limit must be an integer from 1 to {}", snapshot::PAGE))
            })?,
    };
    let config = state.config.clone();
    let stream = id.clone();
    let page = auth
        .run_as::<_, SsfError, _>(move |db, client| {
            owned(db, &stream, client)?;
            snapshot::page(db, &config, after.as_ref(), limit).map_err(|e| SsfError::App(e.into()))
        })
        .await?;
    let mut res = HttpResponse::Ok();
    res.insert_header(("Cache-Control", "no-store"));
    if let Some(next) = &page.next {
        let query = serde_urlencoded::to_string([
            ("stream_id", id.as_str()),
            ("after", next.encode().as_str()),
            ("limit", limit.to_string().as_str()),
        ])
        .unwrap_or_default();
        res.insert_header((
            "Link",
            format!("<{}/ssf/snapshot?{query}>; rel=\"next\"", state.config.issuer),
        ));
    }
    Ok(res.json(page.to_json(&id)))
}

/// The stream `id` if `client` may manage it: the credential that created it, or one with scope `admin` (which
/// also reaches streams made with the CLI). Anyone else gets 404, as if it did not exist.
fn owned(db: &crate::db::Db, id: &str, client: &crate::credentials::Client) -> Result<StreamRow, SsfError> {
    let row = streams::get(db, id)?;
    if row.created_by == client.name || client.has(crate::credentials::Scope::Admin) {
        Ok(row)
    } else {
        Err(SsfError::NotFound)
    }
}

/// One blocking hop for stream work, in the current span.
async fn block<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StreamError> + Send + 'static,
) -> Result<T, SsfError> {
    super::blocking_as(move || f().map_err(SsfError::from)).await
}
