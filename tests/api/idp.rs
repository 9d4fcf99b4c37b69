//! A trusted IdP for the token exchange and Global Token Revocation tests: an Ed25519 key, its JWKS file, and the
//! `TrustedIssuer` that trusts it.

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use offboard::config::{MappedAttribute, TrustedIssuer};
use serde_json::{Value, json};

const KID: &str = "idp-key-1";

pub struct Idp {
    _dir: tempfile::TempDir,
    pub key: EncodingKey,
    pub issuer: TrustedIssuer,
}

impl Idp {
    /// `issuer` for tokens with audience `audience`, mapping `claim` to `attribute`; Global Token Revocation off.
    pub fn new(issuer: &str, audience: &str, attribute: MappedAttribute, claim: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 =
            aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&aws_lc_rs::rand::SystemRandom::new())
                .unwrap();
        let key = EncodingKey::from_ed_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).unwrap();
        jwk.common.key_id = Some(KID.into());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let path = dir.path().join("idp-jwks.json");
        std::fs::write(&path, json!({"keys": [jwk]}).to_string()).unwrap();
        Self {
            _dir: dir,
            key,
            issuer: TrustedIssuer {
                issuer: issuer.into(),
                audience: audience.into(),
                jwks_file: Some(path),
                jwks_uri: None,
                claim: claim.into(),
                attribute,
                tenant_id: None,
                global_token_revocation: false,
                require_email_verified: true,
                match_emails: vec!["primary".into()],
            },
        }
    }

    /// `claims` signed with the IdP's key, typed `JWT`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(KID.into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    /// `claims` signed with the IdP's key, typed `typ` (untyped when `None`).
    pub fn sign_typed(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(KID.into());
        h.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

/// Now, in seconds since the Unix epoch (for `iat` and `exp`).
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}
