//! RequestAuthentication: JWT extraction and verification with Envoy's
//! `jwt_authn` semantics as Istio configures it (one provider per
//! `jwtRule`, `requires_any` of them or a missing token): a request without
//! a token passes (authorization decides); a token that fails gets 401
//! with Envoy's message (`Jwt is expired`, `Jwt verification fails`, ...).
//! Signatures are verified by `jsonwebtoken` (RS/PS 256-512, ES256/384,
//! EdDSA, HS with `oct` keys); time and issuer are checked first, as
//! Envoy does, so an expired token says `Jwt is expired`.
//!
//! Verified tokens are cached per workload policy set, as Envoy's
//! `jwt_cache_config` does (its default size, [`TOKEN_CACHE_SIZE`]): the key
//! is the whole token and where it was found, the value the claims and
//! header edits; `exp` / `nbf` are checked again on every hit, and a hit
//! whose key set has since changed (a `jwksUri` refresh) is verified again.
pub mod jwks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, Validation};
use strait_config::snapshot::RequestAuthn;

use self::jwks::KeySource;
use super::attrs::HeaderLookup;

/// Envoy's clock skew allowance (`clock_skew_seconds`, default 60).
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Verified tokens kept per policy set (Envoy's `jwt_cache_size` default).
pub const TOKEN_CACHE_SIZE: usize = 100;

/// Envoy's status texts (`jwt_verify_lib/status.cc`), the 401 bodies.
pub mod status {
    /// Malformed token.
    pub const BAD_FORMAT: &str =
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections";
    /// Header not base64url JSON.
    pub const BAD_HEADER: &str = "Jwt header is an invalid JSON";
    /// Payload not base64url JSON.
    pub const BAD_PAYLOAD: &str = "Jwt payload is an invalid JSON";
    /// `exp` in the past.
    pub const EXPIRED: &str = "Jwt is expired";
    /// `nbf` in the future.
    pub const NOT_YET_VALID: &str = "Jwt not yet valid";
    /// No rule for `iss`.
    pub const UNKNOWN_ISSUER: &str = "Jwt issuer is not configured";
    /// `aud` not accepted.
    pub const AUDIENCE: &str = "Audiences in Jwt are not allowed";
    /// Bad signature.
    pub const VERIFICATION: &str = "Jwt verification fails";
    /// No key with the token's `kid` / `alg`.
    pub const NO_KEY: &str = "Jwks doesn't have key to match kid or alg from Jwt";
    /// Keys not available.
    pub const JWKS_FETCH: &str = "Jwks remote fetch is failed";
    /// Unsupported `alg`.
    pub const BAD_ALG: &str = "Jwt header [alg] field value is invalid";
    /// No token where `presence: REQUIRED`.
    pub const MISSING: &str = "Jwt is missing";
}

/// A verified token, as authorization sees it.
#[derive(Clone, Debug)]
pub struct JwtIdentity {
    /// `iss/sub` (`request.auth.principal`, `requestPrincipals`).
    pub principal: String,
    /// The payload's claims. A space-delimited string claim (`scope`,
    /// `permission`, `spaceDelimitedClaims`) holding several values is a
    /// list of the whole string and each value, so a rule value matches
    /// either, as Istio's generated matcher does.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Where a token was found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    Header(HeaderName, String),
    Param(String),
    Cookie(String),
}

/// One `jwtRule`.
#[derive(Debug)]
struct Provider {
    issuer: String,
    audiences: Vec<String>,
    keys: KeySource,
    locations: Vec<Location>,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(String, HeaderName)>,
    forward: bool,
    /// Claims matched as space-separated lists (Istio's `scope`,
    /// `permission`, plus `spaceDelimitedClaims`).
    space_delimited: Vec<String>,
    /// `presence: REQUIRED`.
    required: bool,
}

/// Claims Istio always treats as space-delimited.
pub const SPACE_DELIMITED_DEFAULT: [&str; 2] = ["scope", "permission"];

/// Istio's default JWKS fetch timeout (`jwtRules[].timeout`).
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// A change the proxy makes to the request after a token verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Remove the header that carried the token (`forwardOriginalToken:
    /// false`, the default).
    Remove(HeaderName),
    /// Set a header (`outputPayloadToHeader`, `outputClaimToHeaders`).
    Set(HeaderName, HeaderValue),
}

/// The outcome of authentication.
#[derive(Debug)]
pub enum AuthnResult {
    /// No token in any configured location: passes, no principal.
    NoToken,
    /// A token verified.
    Verified(Arc<JwtIdentity>, Vec<HeaderEdit>),
    /// A token failed: 401 with this body.
    Failed(&'static str),
}

/// A verified token in the cache.
struct Cached {
    identity: Arc<JwtIdentity>,
    edits: Vec<HeaderEdit>,
    exp: Option<u64>,
    nbf: Option<u64>,
    /// The provider that verified it, and the key set it used (a hit with
    /// another set current is verified again).
    provider: usize,
    keys: Arc<jwks::KeySet>,
}

/// Cache key: the token and the (provider, location) it was found at.
type CacheKey = (String, u32);

/// The RequestAuthentication rules of a workload (every `jwtRule` of every
/// RequestAuthentication that selects it).
pub struct Authn {
    providers: Vec<Provider>,
    /// Configuration problems (bad header names, unparsable inline JWKS),
    /// for `strait x authz check`.
    pub problems: Vec<String>,
    cache: quick_cache::sync::Cache<CacheKey, Arc<Cached>>,
}

impl Default for Authn {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            problems: Vec::new(),
            cache: quick_cache::sync::Cache::new(TOKEN_CACHE_SIZE),
        }
    }
}

impl std::fmt::Debug for Authn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authn")
            .field("providers", &self.providers)
            .field("problems", &self.problems)
            .field("cached_tokens", &self.cache.len())
            .finish()
    }
}

/// Envoy's time checks: `exp` passed (with skew), `nbf` ahead (with skew).
fn check_time(exp: Option<u64>, nbf: Option<u64>) -> Result<(), &'static str> {
    let t = now();
    if exp.is_some_and(|exp| t > exp.saturating_add(CLOCK_SKEW_SECS)) {
        return Err(status::EXPIRED);
    }
    if nbf.is_some_and(|nbf| t.saturating_add(CLOCK_SKEW_SECS) < nbf) {
        return Err(status::NOT_YET_VALID);
    }
    Ok(())
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The value of cookie `name` in `Cookie` header value(s).
fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split([';', ',']).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v.trim_matches('"'))
    })
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

impl Authn {
    /// Builds the providers of `ras`. `timeout`: JWKS fetch timeout.
    pub fn new(ras: &[&RequestAuthn]) -> Self {
        let mut out = Authn::default();
        for ra in ras {
            for (i, r) in ra.jwt_rules.iter().enumerate() {
                let at = format!("{} jwtRules[{i}]", ra.name);
                let keys = match (&r.jwks, &r.jwks_uri) {
                    (Some(inline), _) => KeySource::Inline(
                        jwks::KeySet::parse(inline)
                            .map(Arc::new)
                            .map_err(|e| e.to_string()),
                    ),
                    (None, Some(uri)) => KeySource::Remote(jwks::remote(
                        uri,
                        r.timeout_ms.map_or(JWKS_TIMEOUT, Duration::from_millis),
                    )),
                    (None, None) => KeySource::Inline(Err("no jwks or jwksUri".into())),
                };
                if let KeySource::Inline(Err(e)) = &keys {
                    out.problems.push(format!("{at}: jwks: {e}"));
                }
                let mut locations = Vec::new();
                for h in &r.from_headers {
                    match HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()) {
                        Ok(n) => locations.push(Location::Header(n, h.prefix.clone())),
                        Err(_) => out
                            .problems
                            .push(format!("{at}: fromHeaders: bad header name {:?}", h.name)),
                    }
                }
                locations.extend(r.from_params.iter().cloned().map(Location::Param));
                locations.extend(r.from_cookies.iter().cloned().map(Location::Cookie));
                if locations.is_empty() {
                    locations.push(Location::Header(
                        http::header::AUTHORIZATION,
                        "Bearer ".into(),
                    ));
                    locations.push(Location::Param("access_token".into()));
                }
                let header = |n: &str| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes());
                let payload_header = match r.output_payload_to_header.as_deref().map(header) {
                    Some(Ok(h)) => Some(h),
                    Some(Err(_)) => {
                        out.problems
                            .push(format!("{at}: outputPayloadToHeader: bad header name"));
                        None
                    }
                    None => None,
                };
                let claim_headers = r
                    .output_claim_to_headers
                    .iter()
                    .filter_map(|(claim, h)| Some((claim.clone(), header(h).ok()?)))
                    .collect();
                out.providers.push(Provider {
                    issuer: r.issuer.clone(),
                    audiences: r.audiences.clone(),
                    keys,
                    locations,
                    payload_header,
                    claim_headers,
                    forward: r.forward_original_token,
                    space_delimited: SPACE_DELIMITED_DEFAULT
                        .iter()
                        .map(|c| c.to_string())
                        .chain(r.space_delimited_claims.iter().cloned())
                        .collect(),
                    required: r.presence_required,
                });
            }
        }
        out
    }

    /// Whether any provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Finds the first token in the configured locations.
    fn find<'h>(
        &self,
        headers: &'h dyn HeaderLookup,
        query: Option<&'h str>,
    ) -> Option<(String, &Location, u32)> {
        for (pi, p) in self.providers.iter().enumerate() {
            for (li, loc) in p.locations.iter().enumerate() {
                let tok = match loc {
                    Location::Header(n, prefix) => headers.joined(n).and_then(|v| {
                        let v = v.trim();
                        let rest = if prefix.is_empty() {
                            Some(v)
                        } else if v.len() >= prefix.len()
                            && v.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
                        {
                            Some(&v[prefix.len()..])
                        } else {
                            None
                        };
                        rest.map(|t| t.trim().to_string())
                    }),
                    Location::Param(name) => {
                        query.and_then(|q| query_param(q, name)).map(str::to_string)
                    }
                    Location::Cookie(name) => headers
                        .joined(&http::header::COOKIE)
                        .and_then(|c| cookie(&c, name).map(str::to_string)),
                };
                if let Some(t) = tok.filter(|t| !t.is_empty()) {
                    return Some((t, loc, ((pi as u32) << 16) | li as u32));
                }
            }
        }
        None
    }

    /// Authenticates a request: its headers and query string. A token
    /// verified before (and still in the cache) is not verified again; its
    /// `exp` / `nbf` are.
    pub fn authenticate(&self, headers: &dyn HeaderLookup, query: Option<&str>) -> AuthnResult {
        let Some((token, loc, at)) = self.find(headers, query) else {
            if self.providers.iter().any(|p| p.required) {
                return AuthnResult::Failed(status::MISSING);
            }
            return AuthnResult::NoToken;
        };
        let key = (token, at);
        if let Some(c) = self.cache.get(&key) {
            let current = self.providers[c.provider].keys.keys();
            if current.is_some_and(|k| Arc::ptr_eq(&k, &c.keys)) {
                return match check_time(c.exp, c.nbf) {
                    Ok(()) => AuthnResult::Verified(c.identity.clone(), c.edits.clone()),
                    Err(why) => {
                        self.cache.remove(&key);
                        AuthnResult::Failed(why)
                    }
                };
            }
        }
        match self.verify(&key.0, loc) {
            Ok(c) => {
                let r = AuthnResult::Verified(c.identity.clone(), c.edits.clone());
                self.cache.insert(key, Arc::new(c));
                r
            }
            Err(s) => AuthnResult::Failed(s),
        }
    }

    /// Number of verified tokens cached (tests, `authz check`).
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    fn verify(&self, token: &str, loc: &Location) -> Result<Cached, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(status::BAD_FORMAT);
        };
        let header: serde_json::Value = b64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(status::BAD_HEADER)?;
        let claims: serde_json::Map<String, serde_json::Value> = b64(payload)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(status::BAD_PAYLOAD)?;
        let alg: Algorithm = header
            .get("alg")
            .and_then(|a| a.as_str())
            .and_then(|a| a.parse().ok())
            .ok_or(status::BAD_ALG)?;
        let kid = header.get("kid").and_then(|k| k.as_str());
        // Time first, as Envoy does (no signature work for stale tokens).
        let exp = claims.get("exp").and_then(|e| e.as_u64());
        let nbf = claims.get("nbf").and_then(|e| e.as_u64());
        check_time(exp, nbf)?;
        let iss = claims.get("iss").and_then(|i| i.as_str()).unwrap_or("");
        let (pi, p) = self
            .providers
            .iter()
            .enumerate()
            .find(|(_, p)| p.issuer == iss && p.locations.contains(loc))
            .ok_or(status::UNKNOWN_ISSUER)?;
        if !p.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => p.audiences.contains(a),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .any(|a| p.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err(status::AUDIENCE);
            }
        }
        let keys = p.keys.keys().ok_or(status::JWKS_FETCH)?;
        let mut candidates = keys
            .keys
            .iter()
            .filter(|k| {
                k.fits(alg) && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(status::NO_KEY);
        }
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.leeway = CLOCK_SKEW_SECS;
        v.validate_aud = false;
        v.validate_nbf = true;
        let verified = candidates
            .any(|k| jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &v).is_ok());
        if !verified {
            return Err(status::VERIFICATION);
        }
        let sub = claims.get("sub").and_then(|s| s.as_str()).unwrap_or("");
        let principal = format!("{iss}/{sub}");
        let mut edits = Vec::new();
        if !p.forward {
            if let Location::Header(n, _) = loc {
                edits.push(HeaderEdit::Remove(n.clone()));
            }
        }
        if let Some(h) = &p.payload_header {
            if let Ok(v) = HeaderValue::from_str(payload) {
                edits.push(HeaderEdit::Set(h.clone(), v));
            }
        }
        for (claim, h) in &p.claim_headers {
            let text = match claims.get(claim) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                _ => None,
            };
            if let Some(v) = text.and_then(|t| HeaderValue::from_str(&t).ok()) {
                edits.push(HeaderEdit::Set(h.clone(), v));
            }
        }
        let mut claims = claims;
        for name in &p.space_delimited {
            let split = match claims.get(name) {
                Some(serde_json::Value::String(v)) if v.contains(char::is_whitespace) => {
                    let mut all = vec![serde_json::Value::String(v.clone())];
                    all.extend(
                        v.split_whitespace()
                            .map(|x| serde_json::Value::String(x.to_string())),
                    );
                    all
                }
                _ => continue,
            };
            claims.insert(name.clone(), serde_json::Value::Array(split));
        }
        Ok(Cached {
            identity: Arc::new(JwtIdentity { principal, claims }),
            edits,
            exp,
            nbf,
            provider: pi,
            keys,
        })
    }
}
