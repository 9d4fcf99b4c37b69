//! The SCIM round the `fanout` and `fanout_cost` benchmarks time: create a user, then deactivate it. Included by
//! them with `#[path = "common/deactivate.rs"] mod deactivate;`.

use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Creates the user `leaver{round}@example.com` over SCIM at `base` (`…/scim/v2`) and deactivates it with a
/// `PATCH`; the user's id, and when the deactivation was sent and answered (a `200`, or an error).
pub fn create_and_deactivate(
    client: &reqwest::blocking::Client,
    base: &str,
    scim: &str,
    round: usize,
) -> anyhow::Result<(String, Instant, Instant)> {
    let res = client
        .post(format!("{base}/Users"))
        .bearer_auth(scim)
        .header("Content-Type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": format!("leaver{round}@example.com")})
            .to_string(),
        )
        .send()?;
    let id = res
        .json::<Value>()?
        .get("id")
        .and_then(Value::as_str)
        .context("no id")?
        .to_owned();
    let sent = Instant::now();
    let res = client
        .patch(format!("{base}/Users/{id}"))
        .bearer_auth(scim)
        .header("Content-Type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "path": "active", "value": false}]})
            .to_string(),
        )
        .send()?;
    let answered = Instant::now();
    if res.status() != 200 {
        bail!("deactivation answered {}", res.status());
    }
    Ok((id, sent, answered))
}
