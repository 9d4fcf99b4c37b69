//! The revocation state a guard holds: per subject the minimum generation, per session (`sid`) ended, per `jti`
//! revoked, per `kid` compromised. Every entry carries `until` (seconds since the epoch): after it no token the
//! entry kills can still be accepted, and [`Revocations::prune`] drops it. Every change only tightens (a
//! generation never goes down, an `until` never moves earlier), so applying the same news twice, or old news after
//! newer, changes nothing: the snapshot and the feed may overlap.

use std::collections::HashMap;

/// Why the revocation state refuses a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Signed by a key declared compromised.
    Key,
    /// Revoked by its `jti`.
    Token,
    /// Its login (`sid`) ended.
    Session,
    /// Its `tgen` is below the user's minimum generation.
    Generation,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Revocations {
    /// `sub` → (minimum generation, until).
    subjects: HashMap<String, (i64, i64)>,
    sessions: HashMap<String, i64>,
    tokens: HashMap<String, i64>,
    keys: HashMap<String, i64>,
}

fn later(slot: &mut i64, until: i64) {
    *slot = (*slot).max(until);
}

impl Revocations {
    /// Every token of `sub` with a `tgen` below `min_tgen` is dead until `until`.
    pub fn raise(&mut self, sub: &str, min_tgen: i64, until: i64) {
        let e = self.subjects.entry(sub.to_owned()).or_insert((min_tgen, until));
        e.0 = e.0.max(min_tgen);
        later(&mut e.1, until);
    }

    pub fn end_session(&mut self, sid: &str, until: i64) {
        later(self.sessions.entry(sid.to_owned()).or_insert(until), until);
    }

    pub fn revoke_token(&mut self, jti: &str, until: i64) {
        later(self.tokens.entry(jti.to_owned()).or_insert(until), until);
    }

    pub fn compromise_key(&mut self, kid: &str, until: i64) {
        later(self.keys.entry(kid.to_owned()).or_insert(until), until);
    }

    pub fn key_compromised(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The compromised kids held.
    pub fn compromised_kids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// The minimum generation known for `sub`, if any.
    pub fn min_generation(&self, sub: &str) -> Option<i64> {
        self.subjects.get(sub).map(|(g, _)| *g)
    }

    /// Whether the state kills a token with these claims.
    pub fn refuses(
        &self,
        kid: &str,
        jti: &str,
        sid: Option<&str>,
        sub: &str,
        tgen: Option<i64>,
    ) -> Option<Revoked> {
        if self.keys.contains_key(kid) {
            return Some(Revoked::Key);
        }
        if self.tokens.contains_key(jti) {
            return Some(Revoked::Token);
        }
        if let (Some(t), Some(min)) = (tgen, self.min_generation(sub))
            && t < min
        {
            return Some(Revoked::Generation);
        }
        sid.filter(|s| self.sessions.contains_key(*s))
            .map(|_| Revoked::Session)
    }

    /// Adds every entry of `other` (a snapshot read again): like applying each, it only tightens.
    pub fn merge(&mut self, other: Self) {
        for (sub, (g, until)) in other.subjects {
            self.raise(&sub, g, until);
        }
        for (sid, until) in other.sessions {
            self.end_session(&sid, until);
        }
        for (jti, until) in other.tokens {
            self.revoke_token(&jti, until);
        }
        for (kid, until) in other.keys {
            self.compromise_key(&kid, until);
        }
    }

    /// Drops the entries whose `until` is before `now` (seconds since the epoch).
    pub fn prune(&mut self, now: i64) {
        self.subjects.retain(|_, (_, until)| *until >= now);
        self.sessions.retain(|_, until| *until >= now);
        self.tokens.retain(|_, until| *until >= now);
        self.keys.retain(|_, until| *until >= now);
    }

    /// How many entries of each kind: (subjects, sessions, tokens, keys).
    pub fn len(&self) -> (usize, usize, usize, usize) {
        (
            self.subjects.len(),
            self.sessions.len(),
            self.tokens.len(),
            self.keys.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_only_tighten_and_expire() {
        let mut r = Revocations::default();
        r.raise("u", 3, 100);
        r.raise("u", 1, 50);
        assert_eq!(r.min_generation("u"), Some(3), "a generation never goes down");
        assert_eq!(r.refuses("k", "j", None, "u", Some(2)), Some(Revoked::Generation));
        assert_eq!(r.refuses("k", "j", None, "u", Some(3)), None);
        assert_eq!(r.refuses("k", "j", None, "svc", None), None);
        r.end_session("s", 80);
        r.revoke_token("j2", 90);
        r.compromise_key("k2", 200);
        assert_eq!(
            r.refuses("k", "j", Some("s"), "u", Some(3)),
            Some(Revoked::Session)
        );
        assert_eq!(r.refuses("k", "j2", None, "u", Some(3)), Some(Revoked::Token));
        assert_eq!(r.refuses("k2", "j", None, "u", Some(3)), Some(Revoked::Key));
        r.prune(85);
        assert_eq!(
            r.len(),
            (1, 0, 1, 1),
            "the session ended at 80 is gone; the rest stay"
        );
        r.prune(150);
        assert_eq!(r.len(), (0, 0, 0, 1));
    }
}
