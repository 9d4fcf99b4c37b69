//! The operator console at `/console`: server-rendered HTML pages, one small hand-written script and a style
//! sheet, all embedded in the binary (`include_str!`), served under a `default-src 'self'` Content-Security-Policy
//! (no inline script or style, no external asset). The use cases are in `crate::console`; this file shapes requests
//! and responses only.
//!
//! - `GET /` redirects to `/console`.
//! - `GET|POST /console/sign-in`: a credential's name and secret (scope `console` or `admin`) for a session cookie.
//!   The form carries a double-submit token (cookie and field, compared in constant time) against login CSRF.
//! - `POST /console/sign-out`.
//! - `GET /console`: the live view; `GET /console/events`: its Server-Sent Events (`id` = audit `seq`, resumed from
//!   `Last-Event-ID`), polled from the audit log every [`POLL`].
//! - `GET /console/users`, `GET /console/users/{id}` (with the offboarding report), and the actions
//!   `POST /console/users/{id}/{end-sessions|hold|release}`.
//! - `GET /console/streams` (status, backlog, dead letters, this instance's last delivery latency) and
//!   `POST /console/streams/{id}/retry` (dead-lettered SETs queued again).
//!
//! Cookies: `offboard_session` (the session id) and `offboard_csrf` (its CSRF token, which pages embed in their
//! forms), both `HttpOnly; SameSite=Strict; Path=/console`, `Secure` when the issuer is https. Every POST must carry
//! the session's CSRF token in its `csrf` field (checked against the stored hash in constant time), else 403.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;

use super::AppState;
use crate::console::{self, FeedEvent, FeedPage, Session};
use crate::error::AppError;
use crate::lifecycle::users as user_cases;

const SESSION_COOKIE: &str = "offboard_session";
const CSRF_COOKIE: &str = "offboard_csrf";
const SIGN_IN_COOKIE: &str = "offboard_sign_in";

/// How often the live view polls the audit log for new entries.
pub const POLL: Duration = Duration::from_millis(150);
/// How often the live view checks that its session is still live.
const SESSION_CHECK: Duration = Duration::from_secs(2);
/// How long the live view stays silent before a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Hours the Streams page's chart covers.
const CHART_HOURS: u32 = 12;
/// Events a new viewer gets from before it connected.
const BACKLOG: i64 = 50;

const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const APP_JS: &str = include_str!("console/app.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/console", web::get().to(live_view))
        .route("/console/", web::get().to(root))
        .route("/console/sign-in", web::get().to(sign_in_form))
        .route("/console/sign-in", web::post().to(sign_in))
        .route("/console/sign-out", web::post().to(sign_out))
        .route("/console/events", web::get().to(events))
        .route("/console/users", web::get().to(users))
        .route("/console/users/{id}", web::get().to(user))
        .route("/console/users/{id}/{action}", web::post().to(user_action))
        .route("/console/streams", web::get().to(streams_page))
        .route("/console/streams/{id}/retry", web::post().to(retry_stream))
        .route("/console/assets/app.js", web::get().to(app_js))
        .route("/console/assets/console.css", web::get().to(console_css));
}

/// A console failure, answered as a small HTML page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No live session: pages redirect to the sign-in form, the event stream answers 401.
    SignedOut {
        page: bool,
    },
    /// A state-changing request without this session's CSRF token.
    Csrf,
    Status(StatusCode, String),
    App(AppError),
}

impl From<AppError> for ConsoleError {
    fn from(e: AppError) -> Self {
        Self::App(e)
    }
}

impl From<crate::db::DbError> for ConsoleError {
    fn from(e: crate::db::DbError) -> Self {
        Self::App(e.into())
    }
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignedOut { .. } => f.write_str("not signed in"),
            Self::Csrf => f.write_str("missing or wrong CSRF token"),
            Self::Status(_, m) => f.write_str(m),
            Self::App(e) => write!(f, "{e}"),
        }
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignedOut { page: true } => StatusCode::SEE_OTHER,
            Self::SignedOut { page: false } => StatusCode::UNAUTHORIZED,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::Status(s, _) => *s,
            Self::App(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::SignedOut { page: true } = self {
            return redirect("/console/sign-in");
        }
        let message = match self {
            Self::App(AppError::Internal(cause)) => {
                tracing::error!("internal error: {cause}");
                "Internal error; see the server log.".to_owned()
            }
            Self::App(AppError::Unavailable(cause)) => {
                tracing::warn!("database unavailable: {cause}");
                "The database is unavailable; try again.".to_owned()
            }
            Self::App(e) => e.as_scim().detail,
            other => other.to_string(),
        };
        let body = layout(
            "Error",
            None,
            &format!(
                "<h1>{}</h1><p>{}</p><p><a href=\"/console\">Back to the console</a></p>",
                self.status_code().as_u16(),
                esc(&message)
            ),
        );
        html(self.status_code(), body)
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The headers every console response carries.
fn secured(mut res: HttpResponse) -> HttpResponse {
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    secured(
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
    )
}

fn redirect(to: &str) -> HttpResponse {
    secured(
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, to.to_owned()))
            .finish(),
    )
}

/// A page: the navigation (when signed in, with the sign-out form) and `main`.
fn layout(title: &str, signed_in: Option<(&Session, &str)>, main: &str) -> String {
    let nav = match signed_in {
        Some((session, csrf)) => format!(
            "<nav><a href=\"/console\">Live view</a> <a href=\"/console/users\">Users</a> \
             <a href=\"/console/streams\">Streams</a>\
             <form method=\"post\" action=\"/console/sign-out\" class=\"signout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><span class=\"who\">{}</span> \
             <button type=\"submit\">Sign out</button></form></nav>",
            esc(csrf),
            esc(&session.credential)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · offboard</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/app.js\" defer></script></head>\
         <body><header><span class=\"brand\">offboard</span>{nav}</header><main>{main}</main></body></html>\n",
        esc(title)
    )
}

/// The value of cookie `name` in the request, if any.
fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, on `path`, `Secure` when the issuer is https; `max_age` 0 deletes.
fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age: Option<i64>) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if state.config.issuer.starts_with("https://") {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        let _ = write!(c, "; Max-Age={age}");
    }
    c
}

/// The live session of this request, or [`ConsoleError::SignedOut`]; with the CSRF token its pages embed.
async fn session(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    touch: bool,
    page: bool,
) -> Result<(Session, String), ConsoleError> {
    let Some(id) = cookie(req, SESSION_COOKIE) else {
        return Err(ConsoleError::SignedOut { page });
    };
    let csrf = cookie(req, CSRF_COOKIE).unwrap_or_default();
    let (db, cfg) = (state.db.clone(), state.config.console.clone());
    let found = super::blocking(move || Ok(console::check(&db, &cfg, &id, touch)?)).await?;
    let Some(session) = found else {
        return Err(ConsoleError::SignedOut { page });
    };
    Ok((session, csrf))
}

/// A form field that must be this session's CSRF token.
fn check_csrf(session: &Session, presented: Option<&str>) -> Result<(), ConsoleError> {
    if session.csrf_ok(presented.unwrap_or_default()) {
        Ok(())
    } else {
        tracing::info!(credential.name = %session.credential, "console request refused: missing or wrong CSRF token");
        Err(ConsoleError::Csrf)
    }
}

async fn root() -> HttpResponse {
    redirect("/console")
}

async fn app_js() -> HttpResponse {
    secured(
        HttpResponse::Ok()
            .content_type("text/javascript; charset=utf-8")
            .body(APP_JS),
    )
}

async fn console_css() -> HttpResponse {
    secured(
        HttpResponse::Ok()
            .content_type("text/css; charset=utf-8")
            .body(CONSOLE_CSS),
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Sign-in and sign-out.

fn sign_in_page(state: &AppState, message: Option<&str>, status: StatusCode) -> HttpResponse {
    let nonce = console::sign_in_nonce();
    let note = message.map_or_else(String::new, |m| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(m))
    });
    let body = layout(
        "Sign in",
        None,
        &format!(
            "<h1>Sign in</h1>{note}<p>Use a credential with the <code>console</code> (or <code>admin</code>) scope: \
             <code>offboard credentials create --name NAME --scopes console</code>.</p>\
             <form method=\"post\" action=\"/console/sign-in\" class=\"signin\">\
             <input type=\"hidden\" name=\"nonce\" value=\"{nonce}\">\
             <label>Credential name <input name=\"name\" autocomplete=\"username\" required></label>\
             <label>Secret <input name=\"secret\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form>"
        ),
    );
    let mut res = html(status, body);
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        state,
        SIGN_IN_COOKIE,
        &nonce,
        "/console/sign-in",
        None,
    )) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

async fn sign_in_form(state: web::Data<AppState>) -> HttpResponse {
    sign_in_page(&state, None, StatusCode::OK)
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    nonce: String,
}

async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, ConsoleError> {
    let form = form.into_inner();
    let expected = cookie(&req, SIGN_IN_COOKIE).unwrap_or_default();
    if !console::same_token(&form.nonce, &expected) {
        return Ok(sign_in_page(
            &state,
            Some("The sign-in form expired or came from another site; try again."),
            StatusCode::FORBIDDEN,
        ));
    }
    let (db, cfg, failures) = (
        state.db.clone(),
        state.config.console.clone(),
        state.auth_failures.clone(),
    );
    let outcome = super::blocking(move || {
        Ok(console::sign_in(
            &db,
            &cfg,
            &failures,
            form.name.trim(),
            form.secret.trim(),
        ))
    })
    .await?;
    let session = match outcome {
        Ok(s) => s,
        Err(console::SignInError::Db(e)) => return Err(e.into()),
        Err(e) => {
            return Ok(sign_in_page(
                &state,
                Some(&e.to_string()),
                StatusCode::UNAUTHORIZED,
            ));
        }
    };
    let mut res = redirect("/console");
    for c in [
        set_cookie(&state, SESSION_COOKIE, &session.id, "/console", None),
        set_cookie(&state, CSRF_COOKIE, &session.csrf, "/console", None),
        set_cookie(&state, SIGN_IN_COOKIE, "", "/console/sign-in", Some(0)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (session, _) = session(&req, &state, false, true).await?;
    check_csrf(&session, form.csrf.as_deref())?;
    let db = state.db.clone();
    super::blocking(move || Ok(console::sign_out(&db, &session)?)).await?;
    let mut res = redirect("/console/sign-in");
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        if let Ok(v) = HeaderValue::from_str(&set_cookie(&state, name, "", "/console", Some(0))) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(res)
}

// ---------------------------------------------------------------------------------------------------------------
// The live view.

async fn live_view(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ConsoleError> {
    let (session, csrf) = session(&req, &state, true, true).await?;
    let main = "<h1>Live view</h1>\
        <p class=\"lead\">Each change to a user's access as it commits, then each stream's delivery of it. \
        <span id=\"feed-state\" class=\"state\">connecting…</span></p>\
        <table id=\"feed\" class=\"feed\"><thead><tr><th>Time</th><th>User</th><th>What ended it</th>\
        <th>Generation</th><th>By</th><th>Streams</th></tr></thead><tbody></tbody></table>";
    Ok(html(
        StatusCode::OK,
        layout("Live view", Some((&session, &csrf)), main),
    ))
}

/// Set when the process got SIGINT or SIGTERM: open live views end their streams, so a graceful shutdown does not
/// wait for them (the browser reconnects to the next instance with its `Last-Event-ID`).
static STOPPING: AtomicBool = AtomicBool::new(false);
static WATCH_SIGNALS: Once = Once::new();

/// Starts (once per process) the task that sets [`STOPPING`] on the signals that stop the server.
fn watch_for_shutdown() {
    WATCH_SIGNALS.call_once(|| {
        drop(actix_web::rt::spawn(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            STOPPING.store(true, Ordering::SeqCst);
        }));
    });
}

/// Formats one event for the stream.
fn sse_event(e: &FeedEvent) -> String {
    format!("id: {}\nevent: {}\ndata: {}\n\n", e.id, e.kind, e.data)
}

struct Feed {
    state: web::Data<AppState>,
    session_id: String,
    seen: i64,
    pending: VecDeque<Bytes>,
    last_sent: Instant,
    last_check: Instant,
    done: bool,
}

impl Feed {
    /// The next chunk of the stream: a pending event, else the next poll's, else a keep-alive; None at the end.
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Self)> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                self.last_sent = Instant::now();
                return Some((Ok(chunk), self));
            }
            if self.done || STOPPING.load(Ordering::SeqCst) {
                return None;
            }
            actix_web::rt::time::sleep(POLL).await;
            if self.last_check.elapsed() >= SESSION_CHECK {
                self.last_check = Instant::now();
                let (db, cfg, id) = (
                    self.state.db.clone(),
                    self.state.config.console.clone(),
                    self.session_id.clone(),
                );
                let live = super::blocking(move || Ok(console::check(&db, &cfg, &id, false)?)).await;
                if !matches!(live, Ok(Some(_))) {
                    self.pending
                        .push_back(Bytes::from_static(b"event: signed-out\ndata: {}\n\n"));
                    self.done = true;
                    continue;
                }
            }
            let (db, seen) = (self.state.db.clone(), self.seen);
            match super::blocking(move || Ok(console::feed_after(&db, seen)?)).await {
                Ok(page) => self.push(&page),
                Err(e) => tracing::warn!("live view: could not read the audit log: {e}"),
            }
            if self.pending.is_empty() && self.last_sent.elapsed() >= KEEP_ALIVE {
                self.pending.push_back(Bytes::from_static(b": keep-alive\n\n"));
            }
        }
    }

    fn push(&mut self, page: &FeedPage) {
        for e in &page.events {
            self.pending.push_back(Bytes::from(sse_event(e)));
        }
        if page.seen > self.seen {
            // Entries the feed does not show moved the log on: an event with only an id moves the viewer's
            // `Last-Event-ID` past them, so a reconnect does not scan them again.
            if page.events.last().is_none_or(|e| e.id < page.seen) {
                self.pending
                    .push_back(Bytes::from(format!("id: {}\n\n", page.seen)));
            }
            self.seen = page.seen;
        }
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<i64>,
}

async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let (_session, _) = session(&req, &state, false, false).await?;
    watch_for_shutdown();
    if STOPPING.load(Ordering::SeqCst) {
        return Ok(secured(
            HttpResponse::ServiceUnavailable()
                .force_close()
                .body("offboard is shutting down"),
        ));
    }
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.after)
        .filter(|n| *n >= 0);
    let db = state.db.clone();
    let first = super::blocking(move || {
        Ok(match resume {
            Some(after) => console::feed_resume(&db, after, BACKLOG)?,
            None => console::feed_recent(&db, BACKLOG)?,
        })
    })
    .await?;
    let mut feed = Feed {
        state: state.clone(),
        session_id: cookie(&req, SESSION_COOKIE).unwrap_or_default(),
        seen: resume.unwrap_or(0).min(first.seen),
        pending: VecDeque::new(),
        last_sent: Instant::now(),
        last_check: Instant::now(),
        done: false,
    };
    // Tells the browser how soon to reconnect, and opens the stream at once.
    feed.pending.push_back(Bytes::from_static(b"retry: 1000\n\n"));
    feed.push(&first);
    let stream = futures_util::stream::unfold(feed, Feed::next);
    Ok(secured(
        // The connection closes with the stream (at shutdown, or when the session ends): a browser reconnects on
        // a new one, so an idle keep-alive connection never holds a stopping server.
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("x-accel-buffering", "no"))
            .force_close()
            .streaming(stream),
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Users.

#[derive(Deserialize)]
struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
}

fn time_or_dash(t: Option<chrono::NaiveDateTime>) -> String {
    t.map_or_else(|| "—".to_owned(), crate::db::format_time)
}

async fn users(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let (session, csrf) = session(&req, &state, true, true).await?;
    let UsersQuery { q, status } = query.into_inner();
    crate::input::check("q", &q, crate::input::MAX_ID)
        .map_err(|e| ConsoleError::Status(StatusCode::BAD_REQUEST, e.to_string()))?;
    let Some(filter) = console::status_filter(&status) else {
        return Err(ConsoleError::Status(
            StatusCode::BAD_REQUEST,
            "status must be any, active, inactive or held".into(),
        ));
    };
    let db = state.db.clone();
    let query = q.clone();
    let found = super::blocking(move || console::search_users(&db, &query, filter)).await?;
    let mut main = format!(
        "<h1>Users</h1><form method=\"get\" action=\"/console/users\" class=\"search\">\
         <label>userName or email <input name=\"q\" value=\"{}\"></label> <label>Status <select name=\"status\">",
        esc(&q)
    );
    for s in ["any", "active", "inactive", "held"] {
        let selected = if s == status || (status.is_empty() && s == "any") {
            " selected"
        } else {
            ""
        };
        let _ = write!(main, "<option value=\"{s}\"{selected}>{s}</option>");
    }
    main.push_str(
        "</select></label> <button type=\"submit\">Search</button></form>\
         <table class=\"users\"><thead><tr><th>userName</th><th>Emails</th><th>Status</th><th>Hold</th>\
         <th>Generation</th><th>Groups</th><th>Live sessions</th><th>Last token use</th></tr></thead><tbody>",
    );
    for u in &found {
        let _ = write!(
            main,
            "<tr><td><a href=\"/console/users/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.id),
            esc(&u.user_name),
            esc(&u.emails.join(", ")),
            if u.active { "active" } else { "inactive" },
            u.hold.as_ref().map_or_else(String::new, |h| esc(&h.reason)),
            u.generation,
            esc(&u.groups.join(", ")),
            u.live_sessions,
            time_or_dash(u.last_token_use),
        );
    }
    if found.is_empty() {
        main.push_str("<tr><td colspan=\"8\">No user matches.</td></tr>");
    }
    main.push_str("</tbody></table>");
    Ok(html(
        StatusCode::OK,
        layout("Users", Some((&session, &csrf)), &main),
    ))
}

#[derive(Deserialize)]
struct UserQuery {
    done: Option<String>,
    /// `1`: verify the whole audit chain and show the result with the report.
    verify: Option<String>,
}

/// The audit-chain verification as a paragraph of the user page.
fn verification_html(v: &crate::audit::verify::Verification) -> String {
    if v.ok {
        format!(
            "<p class=\"verified\" id=\"chain\">Audit chain verified: {} entries, {} to {}, intact (last hash \
             <code>{}</code>).</p>",
            v.entries,
            v.first_seq.unwrap_or_default(),
            v.last_seq.unwrap_or_default(),
            esc(v.last_hash.as_deref().unwrap_or_default())
        )
    } else {
        format!(
            "<p class=\"error\" id=\"chain\">Audit chain BROKEN at entry {}: {}</p>",
            v.first_bad_seq.unwrap_or_default(),
            esc(v.problem.as_deref().unwrap_or_default())
        )
    }
}

fn action_form(id: &str, csrf: &str, action: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/console/users/{}/{action}\" class=\"action\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Reason <input name=\"reason\" required maxlength=\"500\"></label> \
         <button type=\"submit\" data-action=\"{action}\">{label}</button></form>",
        esc(id),
        esc(csrf)
    )
}

async fn user(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<UserQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let (session, csrf) = session(&req, &state, true, true).await?;
    let id = path.into_inner();
    known_id(&id)?;
    let db = state.db.clone();
    let lookup = id.clone();
    let verify = query.verify.as_deref() == Some("1");
    let (line, report, verification) = super::blocking(move || {
        let report = match crate::audit::report::for_user_id(&db, &lookup) {
            Ok(r) => Some(r),
            Err(crate::audit::report::ReportError::NotFound) => None,
            Err(crate::audit::report::ReportError::Db(e)) => return Err(e.into()),
        };
        let verification = if verify && report.is_some() {
            let check = crate::keys::audit_signature_checker(&db).map_err(AppError::internal)?;
            Some(crate::audit::verify::run(&db, &check)?)
        } else {
            None
        };
        Ok((console::user_line(&db, &lookup)?, report, verification))
    })
    .await?;
    let Some(report) = report else {
        return Err(ConsoleError::Status(StatusCode::NOT_FOUND, "no such user".into()));
    };
    let mut main = format!("<h1>{}</h1>", esc(&report.user.user_name));
    if let Some(done) = query.done.as_deref() {
        let _ = write!(main, "<p class=\"done\" role=\"status\">{}</p>", esc(done));
    }
    match &line {
        Some(u) => {
            let _ = write!(
                main,
                "<dl class=\"user\"><dt>Status</dt><dd id=\"status\">{}</dd><dt>Hold</dt><dd>{}</dd>\
                 <dt>Generation</dt><dd id=\"generation\">{}</dd><dt>Emails</dt><dd>{}</dd><dt>Groups</dt><dd>{}</dd>\
                 <dt>Live sessions</dt><dd id=\"sessions\">{}</dd><dt>Last token use</dt><dd>{}</dd></dl>",
                if u.active { "active" } else { "inactive" },
                u.hold.as_ref().map_or_else(
                    || "none".to_owned(),
                    |h| format!("since {}: {}", crate::db::format_time(h.held_at), esc(&h.reason))
                ),
                u.generation,
                esc(&u.emails.join(", ")),
                esc(&u.groups.join(", ")),
                u.live_sessions,
                time_or_dash(u.last_token_use),
            );
            main.push_str("<h2>Actions</h2>");
            main.push_str(&action_form(&u.id, &csrf, "end-sessions", "End sessions"));
            if u.hold.is_some() {
                main.push_str(&action_form(&u.id, &csrf, "release", "Release hold"));
            } else {
                main.push_str(&action_form(&u.id, &csrf, "hold", "Hold (deactivate)"));
            }
        }
        None => main.push_str("<p>This user was deleted.</p>"),
    }
    main.push_str("<h2>Offboarding report</h2>");
    match &verification {
        Some(v) => main.push_str(&verification_html(v)),
        None => {
            let _ = write!(
                main,
                "<p><a href=\"/console/users/{}?verify=1\" id=\"verify\">Verify the audit chain</a> (reads the \
                 whole log) to prove these entries were not altered.</p>",
                urlencode_path(&id)
            );
        }
    }
    let _ = write!(
        main,
        "<pre class=\"report\">{}</pre>",
        esc(&crate::audit::report::to_text(&report))
    );
    Ok(html(
        StatusCode::OK,
        layout(&report.user.user_name, Some((&session, &csrf)), &main),
    ))
}

/// A user id no user can have (too long, a control character) is answered 404 before any query.
fn known_id(id: &str) -> Result<(), ConsoleError> {
    crate::input::check("user id", id, crate::input::MAX_ID)
        .map_err(|_| ConsoleError::Status(StatusCode::NOT_FOUND, "no such user".into()))
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
}

async fn user_action(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (session, _) = session(&req, &state, true, true).await?;
    check_csrf(&session, form.csrf.as_deref())?;
    let (id, action) = path.into_inner();
    known_id(&id)?;
    let reason = form.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ConsoleError::Status(
            StatusCode::BAD_REQUEST,
            "give a reason: 1 to 500 characters, no control characters".into(),
        ));
    }
    if !matches!(action.as_str(), "end-sessions" | "hold" | "release") {
        return Err(ConsoleError::Status(
            StatusCode::NOT_FOUND,
            "no such action".into(),
        ));
    }
    let db = state.db.clone();
    let (target, actor) = (id.clone(), session.credential.clone());
    let done = super::blocking(move || {
        crate::audit::set_actor(&actor);
        Ok(match action.as_str() {
            "end-sessions" => {
                let ended = user_cases::revoke_tokens(&db, &target, &reason)?;
                format!(
                    "Sessions ended: generation {} is now in force, {} login(s) revoked.",
                    ended.generation, ended.families_revoked
                )
            }
            "hold" => match user_cases::deactivate(&db, &target, &reason)? {
                user_cases::Held::Deactivated(g) => {
                    format!("Deactivated and held; generation {g} is now in force.")
                }
                user_cases::Held::HeldInactive => "The user was inactive already; it is now held.".to_owned(),
                user_cases::Held::AlreadyHeld => "The user was held already; nothing changed.".to_owned(),
            },
            _ => match user_cases::release(&db, &target, &reason)? {
                user_cases::Released::Reactivated => "Hold released; the user is active again.".to_owned(),
                user_cases::Released::StaysInactive => "Hold released; the user stays inactive.".to_owned(),
                user_cases::Released::NotHeld => "The user was not held; nothing changed.".to_owned(),
            },
        })
    })
    .await?;
    let query = serde_urlencoded::to_string([("done", done)]).unwrap_or_default();
    Ok(redirect(&format!(
        "/console/users/{}?{query}",
        urlencode_path(&id)
    )))
}

// ---------------------------------------------------------------------------------------------------------------
// Streams.

#[derive(Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

fn stream_error(e: crate::fanout::streams::StreamError) -> ConsoleError {
    use crate::fanout::streams::StreamError;
    match e {
        StreamError::NotFound(_) => ConsoleError::Status(StatusCode::NOT_FOUND, e.to_string()),
        StreamError::Invalid(_) | StreamError::Limit(_) => {
            ConsoleError::Status(StatusCode::BAD_REQUEST, e.to_string())
        }
        StreamError::Db(e) => e.into(),
        StreamError::Keys(e) => AppError::internal(e).into(),
    }
}

async fn streams_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DoneQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let (session, csrf) = session(&req, &state, true, true).await?;
    let db = state.db.clone();
    let list = web::block(move || crate::fanout::streams::list(&db))
        .await
        .map_err(AppError::internal)?
        .map_err(stream_error)?;
    let db = state.db.clone();
    let (buckets, truncated) =
        super::blocking(move || Ok(console::activity_by_hour(&db, CHART_HOURS)?)).await?;
    let mut main = String::from("<h1>Streams</h1>");
    if let Some(done) = query.done.as_deref() {
        let _ = write!(main, "<p class=\"done\" role=\"status\">{}</p>", esc(done));
    }
    main.push_str(
        "<table class=\"streams\"><thead><tr><th>Stream</th><th>Audience</th><th>Method</th><th>Status</th>\
         <th>Backlog</th><th>Delivered</th><th>Dead letters</th><th>Last latency</th><th></th></tr></thead><tbody>",
    );
    for s in &list {
        let latency = state
            .fanout
            .last_latency(&s.row.id)
            .map_or_else(|| "—".to_owned(), |secs| format!("{:.0} ms", secs * 1000.0));
        let status = match &s.row.status_reason {
            Some(reason) => format!("{} ({})", esc(&s.row.status), esc(reason)),
            None => esc(&s.row.status),
        };
        let retry = if s.dead > 0 {
            format!(
                "<form method=\"post\" action=\"/console/streams/{}/retry\" class=\"retry\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Retry dead letters</button></form>",
                esc(&s.row.id),
                esc(&csrf)
            )
        } else {
            String::new()
        };
        let health = if s.dead > 0 || s.row.status != "enabled" {
            "attention"
        } else {
            "healthy"
        };
        let _ = write!(
            main,
            "<tr class=\"{health}\" data-stream=\"{}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{status}</td>\
             <td>{}</td><td>{}</td><td class=\"dead\">{}</td><td>{latency}</td><td>{retry}</td></tr>",
            esc(&s.row.id),
            esc(&s.row.id),
            esc(&s.row.audience),
            esc(&s.row.delivery_method),
            s.pending,
            s.delivered,
            s.dead,
        );
    }
    if list.is_empty() {
        main.push_str("<tr><td colspan=\"9\">No stream yet.</td></tr>");
    }
    main.push_str("</tbody></table>");
    let _ = write!(
        main,
        "<h2>Last {CHART_HOURS} hours</h2><p class=\"lead\">Endings of access per hour (bars) and the median latency of \
         their deliveries (dots), UTC.</p>{}",
        chart_svg(&buckets, truncated)
    );
    Ok(html(
        StatusCode::OK,
        layout("Streams", Some((&session, &csrf)), &main),
    ))
}

/// The last hours' endings of access (bars) and median delivery latency (dots), as inline SVG: no script, no
/// inline style (the classes are in the style sheet).
fn chart_svg(buckets: &[console::HourBucket], truncated: bool) -> String {
    const W: usize = 720;
    const H: usize = 150;
    const TOP: usize = 14;
    const BOTTOM: usize = 22;
    let n = buckets.len().max(1);
    let slot = W / n;
    let plot = H - TOP - BOTTOM;
    let max_endings = buckets.iter().map(|b| b.endings).max().unwrap_or(0).max(1);
    let max_latency = buckets
        .iter()
        .filter_map(|b| b.median_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |v: u64, max: u64| usize::try_from(v * plot as u64 / max.max(1)).unwrap_or(plot);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"chart-title\">\
         <title id=\"chart-title\">Endings of access per hour (bars, up to {max_endings}) and median delivery latency \
         (dots, up to {max_latency} ms), last {} hours</title>",
        buckets.len()
    );
    for (i, b) in buckets.iter().enumerate() {
        let x = i * slot;
        let label = b.start.format("%H:00");
        let h = scale(u64::from(b.endings), u64::from(max_endings));
        let _ = write!(
            svg,
            "<g><title>{label} UTC: {} ending(s) of access{}</title>\
             <rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{h}\"></rect>",
            b.endings,
            b.median_ms.map_or_else(String::new, |m| format!(
                ", deliveries median {m} ms, slowest {} ms",
                b.max_ms.unwrap_or(m)
            )),
            x + 2,
            TOP + plot - h,
            slot.saturating_sub(4).max(1),
        );
        if let Some(m) = b.median_ms {
            let y = TOP + plot
                - scale(
                    u64::try_from(m).unwrap_or(0),
                    u64::try_from(max_latency).unwrap_or(1),
                );
            let _ = write!(
                svg,
                "<circle class=\"latency\" cx=\"{}\" cy=\"{y}\" r=\"3\"></circle>",
                x + slot / 2
            );
        }
        svg.push_str("</g>");
        if i % 3 == 0 || i + 1 == buckets.len() {
            let _ = write!(
                svg,
                "<text class=\"axis\" x=\"{}\" y=\"{}\">{label}</text>",
                x + 2,
                H - 6
            );
        }
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"2\" y=\"10\">{max_endings} ending(s)</text>\
         <text class=\"axis latency-axis\" x=\"{}\" y=\"10\">{max_latency} ms</text></svg>",
        W - 70
    );
    if truncated {
        svg.push_str("<p class=\"lead\">More entries than the chart reads fell in this window: the first hours are incomplete.</p>");
    }
    svg
}

async fn retry_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (session, _) = session(&req, &state, true, true).await?;
    check_csrf(&session, form.csrf.as_deref())?;
    let id = path.into_inner();
    crate::input::check("stream id", &id, crate::input::MAX_ID)
        .map_err(|e| ConsoleError::Status(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (db, actor) = (state.db.clone(), session.credential.clone());
    let ctx = super::audit_context();
    let n = web::block(move || {
        crate::audit::in_context(ctx, || {
            crate::audit::set_actor(&actor);
            crate::fanout::streams::retry_dead(&db, &id)
        })
    })
    .await
    .map_err(AppError::internal)?
    .map_err(stream_error)?;
    let query = serde_urlencoded::to_string([("done", format!("{n} dead-lettered SET(s) queued again."))])
        .unwrap_or_default();
    Ok(redirect(&format!("/console/streams?{query}")))
}

/// A path segment, percent-encoded (user ids are UUIDs, but nothing relies on it).
fn urlencode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("a\nb"), "a\u{fffd}b");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(urlencode_path("ab-1"), "ab-1");
        assert_eq!(urlencode_path("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn events_are_framed_as_sse() {
        let e = FeedEvent {
            id: 7,
            kind: "access",
            data: serde_json::json!({"a": "b\nc"}),
        };
        assert_eq!(sse_event(&e), "id: 7\nevent: access\ndata: {\"a\":\"b\\nc\"}\n\n");
    }
}
