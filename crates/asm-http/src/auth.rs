//! Bearer-token authentication, compared in constant time.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::{ApiError, ApiServer};

/// The cookie the web view stores the token in, so that its `EventSource` (which cannot send
/// headers) authenticates. Accepted on `GET` requests only, so a forged cross-site form cannot
/// change anything even where a browser would send the cookie.
pub(crate) const TOKEN_COOKIE: &str = "asm_token";

/// The configured token.
pub(crate) struct Token(Vec<u8>);

impl Token {
    pub(crate) fn new(token: String) -> Self {
        Self(token.into_bytes())
    }

    /// Whether `candidate` is the token. The time taken depends on the token's length only:
    /// the candidate is cut or padded to that length and compared with `subtle`, and the
    /// length check is folded in without a branch.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        let mut padded = vec![0u8; self.0.len()];
        let n = candidate.len().min(padded.len());
        padded[..n].copy_from_slice(&candidate[..n]);
        let same_len = (candidate.len() as u64).ct_eq(&(self.0.len() as u64));
        (padded.as_slice().ct_eq(self.0.as_slice()) & same_len).into()
    }
}

/// Middleware of the `/v1` routes: lets a request through when no token is configured or it
/// carries the token (`Authorization: Bearer`, or the cookie on `GET`), else 401.
pub(crate) async fn require_token(State(api): State<ApiServer>, request: Request, next: Next) -> Response {
    let Some(token) = &api.inner().token else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let cookie = (request.method() == Method::GET)
        .then(|| {
            headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
                |pair| {
                    pair.trim().strip_prefix(TOKEN_COOKIE).and_then(|rest| rest.strip_prefix('=')).map(str::to_owned)
                },
            )
        })
        .flatten();
    let ok = bearer.is_some_and(|b| token.matches(b.as_bytes()))
        || cookie.is_some_and(|c| token.matches(decode_cookie(&c).as_bytes()));
    if ok { next.run(request).await } else { ApiError::unauthorized().into_response() }
}

/// Undoes the `encodeURIComponent` the web view applies to the cookie value.
fn decode_cookie(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            let byte = high * 16 + low;
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        let token = Token::new("s3cret".into());
        assert!(token.matches(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"s3cret\0"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn cookie_decoding() {
        assert_eq!(decode_cookie("a%20b%3D"), "a b=");
        assert_eq!(decode_cookie("plain"), "plain");
        assert_eq!(decode_cookie("bad%zz%4"), "bad%zz%4");
    }
}
