//! Client credentials: HS256 JWTs minted by the loadgen itself from
//! `--token-secret` (claims `sub`, `workspaces`, `exp`, what Switchboard and the
//! Node reference with `JWT_SECRET` both verify), or, without a secret, the
//! user id as a plain token (the Node reference without `JWT_SECRET` accepts it).

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    workspaces: &'a [&'a str],
    exp: u64,
}

/// Mints the token of each client.
pub struct Minter {
    key: Option<EncodingKey>,
    header: Header,
    exp: u64,
}

impl Minter {
    pub fn new(secret: Option<&str>, ttl_secs: u64) -> anyhow::Result<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            key: secret
                .map(|s| EncodingKey::from_secret(s.as_bytes()))
                .transpose()?,
            header: Header::default(),
            exp: now + ttl_secs,
        })
    }

    /// The token of user `sub`, allowed into `workspaces`.
    pub fn token(&self, sub: &str, workspaces: &[&str]) -> anyhow::Result<String> {
        match &self.key {
            Some(key) => Ok(encode(
                &self.header,
                &Claims {
                    sub,
                    workspaces,
                    exp: self.exp,
                },
                key,
            )?),
            None => Ok(sub.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_hs256() {
        let m = Minter::new(Some("s"), 60).expect("minter");
        let t = m.token("7", &["w1"]).unwrap_or_default();
        assert_eq!(t.split('.').count(), 3);
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.required_spec_claims = ["exp", "sub"].iter().map(|s| s.to_string()).collect();
        let d = jsonwebtoken::decode::<serde_json::Value>(
            &t,
            &jsonwebtoken::DecodingKey::from_secret(b"s").expect("key"),
            &v,
        );
        let claims = d.map(|d| d.claims).unwrap_or_default();
        assert_eq!(claims["sub"], "7");
        assert_eq!(claims["workspaces"][0], "w1");
        assert_eq!(
            Minter::new(None, 60)
                .expect("minter")
                .token("9", &[])
                .unwrap_or_default(),
            "9"
        );
    }
}
