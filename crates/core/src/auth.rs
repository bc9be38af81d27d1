//! Who a user is: JSON Web Tokens (HS256 with the configured secret, RS256 with
//! an optional public key), their claims, and minting tokens for the CLI and
//! dev mode. Access to a workspace also depends on memberships in the Store;
//! that check is in `chat.rs`'s callers, not here.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims Switchboard reads from a user token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id: 1 to [`MAX_USER_ID`] characters once verified.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Workspaces the token grants access to, if any: an array of ids (role
    /// `member`) or an object of ids to roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<WorkspaceClaim>,
}

/// The `workspaces` claim, in either of its two forms.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum WorkspaceClaim {
    /// `["w1", "w2"]`: each with role `member`.
    Ids(Vec<String>),
    /// `{ "w1": "viewer", "w2": "admin" }`.
    Roles(std::collections::BTreeMap<String, Role>),
}

impl WorkspaceClaim {
    fn into_grants(self) -> Vec<(String, Role)> {
        match self {
            WorkspaceClaim::Ids(ids) => ids.into_iter().map(|id| (id, Role::Member)).collect(),
            WorkspaceClaim::Roles(roles) => roles.into_iter().collect(),
        }
    }
}

/// What a user may do in a workspace.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives everything and may read history, presence and documents, and
    /// move its read position; sends nothing (no message, typing, edit,
    /// deletion, reaction or document update).
    Viewer,
    /// Reads and writes (the default).
    #[default]
    Member,
    /// A member who may also delete other users' messages.
    Admin,
}

impl Role {
    /// The role's name on the wire: `viewer`, `member` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    /// The role a name stands for.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether it may send messages, typing, edits, reactions, document updates.
    pub fn can_write(self) -> bool {
        self != Role::Viewer
    }
}

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The token's `sub`: 1 to [`MAX_USER_ID`] characters.
    pub id: String,
    /// Display name from the token, if any.
    pub name: Option<String>,
    /// Workspaces the token itself grants, with their roles.
    pub workspaces: Vec<(String, Role)>,
    /// When the token expires, in seconds since the Unix epoch: the end of
    /// every connection it opened unless refreshed.
    pub expires_at: u64,
}

impl User {
    /// Whether the token itself lists `workspace`. A membership in the Store
    /// can grant access too; that is not checked here.
    pub fn token_grants(&self, workspace: &str) -> bool {
        self.token_role(workspace).is_some()
    }

    /// The role the token itself gives in `workspace`, if it lists it.
    pub fn token_role(&self, workspace: &str) -> Option<Role> {
        self.workspaces
            .iter()
            .find(|(w, _)| w == workspace)
            .map(|(_, role)| *role)
    }
}

/// Why a token was refused, or an [`Authenticator`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// From jsonwebtoken: the token is malformed, badly signed, expired or
    /// lacks `exp` or `sub`; or, when building or minting, a key or token failed.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// Signed with an algorithm other than HS256, or RS256 without a public key.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// `exp` has come (a token is valid while the time is before `exp`).
    #[error("token expired")]
    Expired,
    /// `sub` is empty or longer than [`MAX_USER_ID`] characters.
    #[error("token subject missing or too long")]
    Subject,
    /// The RS256 public key given to [`Authenticator::new`] is not a valid PEM RSA key.
    #[error("bad RS256 public key: {0}")]
    PublicKey(jsonwebtoken::errors::Error),
}

/// Longest user id accepted in `sub`.
pub const MAX_USER_ID: usize = 128;

/// Verifies user tokens and mints them.
#[derive(Clone)]
pub struct Authenticator {
    secret: Vec<u8>,
    hs256: DecodingKey,
    rs256: Option<DecodingKey>,
}

impl Authenticator {
    /// HS256 with `secret`; RS256 too when a PEM public key is given.
    pub fn new(secret: &[u8], rs256_public_pem: Option<&[u8]>) -> Result<Self, AuthError> {
        let rs256 = rs256_public_pem
            .map(DecodingKey::from_rsa_pem)
            .transpose()
            .map_err(AuthError::PublicKey)?;
        Ok(Self {
            secret: secret.to_vec(),
            hs256: DecodingKey::from_secret(secret)?,
            rs256,
        })
    }

    /// Checks signature, algorithm, `exp` (no leeway) and `sub`.
    pub fn verify(&self, token: &str) -> Result<User, AuthError> {
        let header = jsonwebtoken::decode_header(token)?;
        let key = match header.alg {
            Algorithm::HS256 => &self.hs256,
            Algorithm::RS256 => self.rs256.as_ref().ok_or(AuthError::Algorithm)?,
            _ => return Err(AuthError::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)?.claims;
        if claims.sub.is_empty() || claims.sub.chars().count() > MAX_USER_ID {
            return Err(AuthError::Subject);
        }
        // A token is valid while now < exp, to the second: the server closes a
        // connection at exp, and the same token must not open another.
        let now = u64::try_from(crate::time::now_millis() / 1000).unwrap_or(0);
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        Ok(User {
            id: claims.sub,
            name: claims.name,
            workspaces: claims
                .workspaces
                .map(WorkspaceClaim::into_grants)
                .unwrap_or_default(),
            expires_at: claims.exp,
        })
    }

    /// Mints an HS256 token valid for `ttl_secs`.
    pub fn mint(
        &self,
        sub: &str,
        name: Option<&str>,
        workspaces: &[String],
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        let now = crate::time::now_millis() as u64 / 1000;
        let claims = Claims {
            sub: sub.to_owned(),
            exp: now + ttl_secs,
            name: name.map(str::to_owned),
            workspaces: (!workspaces.is_empty()).then(|| WorkspaceClaim::Ids(workspaces.to_vec())),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret)?,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(b"test-secret", None).unwrap()
    }

    #[test]
    fn accepts_a_token_it_minted() {
        let token = auth()
            .mint("alice", Some("Alice"), &["w1".into()], 60)
            .unwrap();
        let user = auth().verify(&token).unwrap();
        assert_eq!(user.id, "alice");
        assert_eq!(user.name.as_deref(), Some("Alice"));
        assert!(user.token_grants("w1") && !user.token_grants("w2"));
        assert_eq!(user.token_role("w1"), Some(Role::Member));
    }

    #[test]
    fn reads_roles_from_the_object_form_of_the_claim() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({
                "sub": "alice", "exp": 9_999_999_999u64,
                "workspaces": { "w1": "viewer", "w2": "admin", "w3": "member" }
            }),
            &EncodingKey::from_secret(b"test-secret").unwrap(),
        )
        .unwrap();
        let user = auth().verify(&token).unwrap();
        assert_eq!(user.token_role("w1"), Some(Role::Viewer));
        assert_eq!(user.token_role("w2"), Some(Role::Admin));
        assert_eq!(user.token_role("w3"), Some(Role::Member));
        assert_eq!(user.token_role("w4"), None);
        assert_eq!(user.expires_at, 9_999_999_999);
        let unknown_role = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "sub": "a", "exp": 9_999_999_999u64, "workspaces": { "w1": "owner" } }),
            &EncodingKey::from_secret(b"test-secret").unwrap(),
        )
        .unwrap();
        assert!(auth().verify(&unknown_role).is_err());
    }

    #[test]
    fn refuses_forged_expired_and_unsigned_tokens() {
        let other = Authenticator::new(b"other-secret", None).unwrap();
        assert!(auth()
            .verify(&other.mint("alice", None, &[], 60).unwrap())
            .is_err());

        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                exp: 1,
                name: None,
                workspaces: None,
            },
            &EncodingKey::from_secret(b"test-secret").unwrap(),
        )
        .unwrap();
        assert!(auth().verify(&expired).is_err());

        // alg: none, with a valid payload and no signature.
        let payload = "eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0";
        assert!(auth()
            .verify(&format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."))
            .is_err());
        assert!(auth().verify("not a token").is_err());
        assert!(auth().verify("").is_err());
    }

    #[test]
    fn refuses_tokens_without_a_subject() {
        let no_sub = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "exp": 9_999_999_999u64 }),
            &EncodingKey::from_secret(b"test-secret").unwrap(),
        )
        .unwrap();
        assert!(auth().verify(&no_sub).is_err());
        let empty = auth().mint("", None, &[], 60).unwrap();
        assert!(auth().verify(&empty).is_err());
    }
}
