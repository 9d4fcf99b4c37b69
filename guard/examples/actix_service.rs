//! A service protected by offboard-guard. Run it next to `offboard serve` with a poll stream:
//!
//! ```bash
//! SECRET=$(offboard credentials create --name svc-a --scopes ssf.manage)
//! STREAM=$(curl -s -X POST http://127.0.0.1:8080/ssf/streams -H "Authorization: Bearer $SECRET" -d '{}' | jq -r .stream_id)
//! OFFBOARD=http://127.0.0.1:8080 AUDIENCE=http://127.0.0.1:8080 STREAM=$STREAM SECRET=$SECRET LISTEN=127.0.0.1:8081 \
//!   cargo run -p offboard-guard --example actix_service
//! ```
use actix_web::{App, HttpServer, middleware::from_fn, web};
use offboard_guard::actix::{Verified, require};
use offboard_guard::{Guard, GuardConfig};

async fn hello(user: Verified) -> String {
    format!(
        "hello {}\n",
        user.preferred_username.as_deref().unwrap_or(&user.sub)
    )
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let env = |k: &str| std::env::var(k).map_err(|_| std::io::Error::other(format!("set {k}")));
    let config = GuardConfig::new(env("OFFBOARD")?, env("AUDIENCE")?, env("STREAM")?, env("SECRET")?);
    let guard = Guard::start(config).await.map_err(std::io::Error::other)?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(guard.clone()))
            .wrap(from_fn(require))
            .route("/hello", web::get().to(hello))
    });
    server.bind(env("LISTEN")?)?.run().await
}
