//! `offboard users`: show a user's access, and the break-glass commands that end it.

use anyhow::Context;
use clap::Subcommand;
use offboard::config::Config;
use offboard::db::Db;
use offboard::lifecycle::users;

use serde_json::json;

use super::{fmt_time, json_time, json_time_opt, print_json};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// List live users by userName: id, active, whether an operator holds them inactive, token generation.
    List {
        /// Print JSON (an array of users) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a user's state, generation, groups, live logins and token activity per client.
    Show {
        /// The userName (case-insensitive).
        user_name: String,
        /// Print JSON (one object) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Break glass: deactivate a user now, as a SCIM `active:false` would (tokens die, logins end), and hold it
    /// inactive whatever the identity provider sends until `offboard users release`.
    Deactivate {
        /// The userName (case-insensitive).
        user_name: String,
        /// Why, for the log (required).
        #[arg(long)]
        reason: String,
    },
    /// Lift the hold of `deactivate`: the user takes the `active` the identity provider last asked for.
    Release {
        /// The userName (case-insensitive).
        user_name: String,
        /// Why, for the log.
        #[arg(long, default_value = "released by an administrator")]
        reason: String,
    },
    /// End every session of a user (generation bump, logins revoked); the account stays active.
    RevokeTokens {
        /// The userName (case-insensitive).
        user_name: String,
        /// Why, for the log.
        #[arg(long, default_value = "revoked by an administrator")]
        reason: String,
    },
}

pub fn run(config: &Config, cmd: UsersCommand) -> anyhow::Result<()> {
    let db = &super::open_db(config, 2)?;
    match cmd {
        UsersCommand::List { json } => list_users(db, json)?,
        UsersCommand::Show { user_name, json } => show_user(db, &user_name, json)?,
        UsersCommand::Deactivate { user_name, reason } => {
            if reason.trim().is_empty() {
                anyhow::bail!("--reason must say why");
            }
            let view = find_user(db, &user_name)?;
            match users::deactivate(db, &view.user.id, &reason).map_err(|e| anyhow::anyhow!("{e}"))? {
                users::Held::Deactivated(generation) => eprintln!(
                    "Deactivated and held `{}` ({}); token generation is now {generation}: every earlier token is \
                     dead and every login ended. The identity provider cannot reactivate it until `offboard users \
                     release`.",
                    view.user.user_name, view.user.id
                ),
                users::Held::HeldInactive => eprintln!(
                    "`{}` was inactive already; it is now held inactive until `offboard users release`.",
                    view.user.user_name
                ),
                users::Held::AlreadyHeld => {
                    eprintln!("`{}` is held already; nothing changed.", view.user.user_name);
                }
            }
        }
        UsersCommand::Release { user_name, reason } => {
            if reason.trim().is_empty() {
                anyhow::bail!("--reason must say why");
            }
            let view = find_user(db, &user_name)?;
            match users::release(db, &view.user.id, &reason).map_err(|e| anyhow::anyhow!("{e}"))? {
                users::Released::Reactivated => eprintln!(
                    "Released `{}`: the identity provider last asked for it to be active, so it is active again \
                     (tokens from before the hold stay dead).",
                    view.user.user_name
                ),
                users::Released::StaysInactive => eprintln!(
                    "Released `{}`: it stays inactive, as the identity provider last asked.",
                    view.user.user_name
                ),
                users::Released::NotHeld => {
                    eprintln!("`{}` is not held; nothing changed.", view.user.user_name);
                }
            }
        }
        UsersCommand::RevokeTokens { user_name, reason } => {
            let view = find_user(db, &user_name)?;
            let ended =
                users::revoke_tokens(db, &view.user.id, &reason).map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "Ended every session of `{}`: generation {} in force, {} login(s) revoked. The account stays active.",
                view.user.user_name, ended.generation, ended.families_revoked
            );
        }
    }
    Ok(())
}

fn find_user(db: &Db, user_name: &str) -> anyhow::Result<offboard::lifecycle::users::UserView> {
    users::find_by_user_name(db, user_name)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no live user with userName `{user_name}`"))
}

fn list_users(db: &Db, json: bool) -> anyhow::Result<()> {
    let (rows, holds) = db.read(|c| {
        let rows = offboard::db::repo::users::all_live(c)?;
        let holds = offboard::db::repo::users::all_holds(c)?;
        Ok::<_, anyhow::Error>((rows, holds))
    })?;
    let holds: std::collections::HashMap<_, _> = holds.into_iter().map(|h| (h.user_id.clone(), h)).collect();
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|u| {
                let hold = holds.get(&u.id).map(|h| {
                    json!({ "reason": h.reason, "heldAt": json_time(h.held_at), "idpActive": h.idp_active })
                });
                json!({
                    "userName": u.user_name,
                    "id": u.id,
                    "active": u.active,
                    "hold": hold,
                    "generation": u.token_generation,
                })
            })
            .collect();
        return print_json(&out.into());
    }
    if rows.is_empty() {
        eprintln!("no users yet: the identity provider creates them over SCIM");
        return Ok(());
    }
    println!(
        "{:<40} {:<36} {:<6} {:<5} GENERATION",
        "USERNAME", "ID", "ACTIVE", "HOLD"
    );
    for u in &rows {
        println!(
            "{:<40} {:<36} {:<6} {:<5} {}",
            u.user_name,
            u.id,
            u.active,
            if holds.contains_key(&u.id) { "held" } else { "-" },
            u.token_generation
        );
    }
    Ok(())
}

fn show_user(db: &Db, user_name: &str, json: bool) -> anyhow::Result<()> {
    let view = find_user(db, user_name)?;
    let u = &view.user;
    let access = users::access_of(db, &u.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        let hold = access.hold.as_ref().map(
            |h| json!({ "reason": h.reason, "heldAt": json_time(h.held_at), "idpActive": h.idp_active }),
        );
        let groups: Vec<_> = view
            .groups
            .iter()
            .map(|(id, name)| json!({ "id": id, "displayName": name }))
            .collect();
        let logins: Vec<_> = access
            .live_logins
            .iter()
            .map(|f| {
                json!({
                    "sid": f.sid,
                    "clientId": f.client_id,
                    "created": json_time(f.created),
                    "expiresAt": json_time(f.expires_at),
                })
            })
            .collect();
        let activity: Vec<_> = access
            .activity
            .iter()
            .map(|a| {
                json!({
                    "clientId": a.client_id,
                    "lastMintedAt": json_time_opt(a.last_minted_at),
                    "lastRefreshedAt": json_time_opt(a.last_refreshed_at),
                    "lastIntrospectedAt": json_time_opt(a.last_introspected_at),
                })
            })
            .collect();
        return print_json(&json!({
            "userName": u.user_name,
            "id": u.id,
            "active": u.active,
            "hold": hold,
            "generation": u.token_generation,
            "groups": groups,
            "lastModified": json_time(u.last_modified),
            "liveLogins": logins,
            "tokenActivity": activity,
        }));
    }
    println!("user        {} ({})", u.user_name, u.id);
    println!("active      {}", u.active);
    if let Some(h) = &access.hold {
        println!(
            "hold        since {} UTC: {} (the identity provider asks for active: {}; `offboard users release` \
             applies it)",
            fmt_time(h.held_at),
            h.reason,
            h.idp_active
        );
    }
    println!(
        "generation  {} (tokens with a lower tgen are dead)",
        u.token_generation
    );
    let groups: Vec<&str> = view.groups.iter().map(|(_, n)| n.as_str()).collect();
    println!(
        "groups      {}",
        if groups.is_empty() {
            "-".to_owned()
        } else {
            groups.join(", ")
        }
    );
    println!("last change {} UTC", fmt_time(u.last_modified));
    println!("live logins {}", access.live_logins.len());
    for f in &access.live_logins {
        println!(
            "  sid {}  client {}  since {}  until {}",
            f.sid,
            f.client_id,
            fmt_time(f.created),
            fmt_time(f.expires_at)
        );
    }
    println!("token activity (written every few seconds by the server):");
    if access.activity.is_empty() {
        println!("  none");
    }
    let t = |v: Option<chrono::NaiveDateTime>| v.map_or_else(|| "never".to_owned(), fmt_time);
    for a in &access.activity {
        println!(
            "  client {:<24} minted {:<20} refreshed {:<20} introspected {}",
            a.client_id,
            t(a.last_minted_at),
            t(a.last_refreshed_at),
            t(a.last_introspected_at)
        );
    }
    Ok(())
}
