//! A service protected by offboard-guard, with axum: `GET /hello` and a WebSocket at `/ws` (an echo) that is
//! closed the moment the user's token is revoked. Run it next to `offboard serve` with a poll stream:
//!
//! ```bash
//! SECRET=$(offboard credentials create --name svc-a --scopes ssf.manage)
//! STREAM=$(curl -s -X POST http://127.0.0.1:8080/ssf/streams -H "Authorization: Bearer $SECRET" -d '{}' | jq -r .stream_id)
//! OFFBOARD=http://127.0.0.1:8080 AUDIENCE=http://127.0.0.1:8080 STREAM=$STREAM SECRET=$SECRET LISTEN=127.0.0.1:8081 \
//!   cargo run -p offboard-guard --features axum --example axum_service
//! ```
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::{Extension, Router, response::Response, routing::get};
use offboard_guard::axum::{GuardLayer, Verified};
use offboard_guard::{Guard, GuardConfig, Refusal};

async fn hello(user: Verified) -> String {
    format!(
        "hello {}\n",
        user.preferred_username.as_deref().unwrap_or(&user.sub)
    )
}

/// The service: every route behind the guard.
pub fn app(guard: Guard) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .route("/ws", get(ws))
        .layer(Extension(guard.clone()))
        .layer(GuardLayer::new(guard))
}

/// A WebSocket echo that lives only as long as the token that opened it.
async fn ws(user: Verified, Extension(guard): Extension<Guard>, upgrade: WebSocketUpgrade) -> Response {
    let revoked = guard.watch(&user);
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        tokio::pin!(revoked);
        loop {
            tokio::select! {
                why = &mut revoked => {
                    let reason = match why {
                        Refusal::Stale(_) => "the revocation feed is stale",
                        _ => "the token is revoked",
                    };
                    let frame = CloseFrame { code: close_code::POLICY, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if socket.send(Message::Text(text)).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).map_err(|_| format!("set {k}"));
    let config = GuardConfig::new(env("OFFBOARD")?, env("AUDIENCE")?, env("STREAM")?, env("SECRET")?);
    let guard = Guard::start(config).await?;
    let listener = tokio::net::TcpListener::bind(env("LISTEN")?).await?;
    axum::serve(listener, app(guard)).await?;
    Ok(())
}
