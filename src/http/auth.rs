//! Access rules of the HTTP server, as one middleware: reads (`GET`/`HEAD`) from loopback need
//! no token; any write, and any request from beyond loopback, needs `Authorization: Bearer
//! <http.token>` (compared in constant time; never logged). No token sent → 401
//! `token_required`; a wrong one → 403 `token_invalid`; a write while no token is configured →
//! 403 `writes_disabled`. The page's static files and `/healthz` carry no data and stay open.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The configured token (None = writes over HTTP are off).
#[derive(Clone, Default)]
pub struct Access {
    token: Option<Arc<[u8]>>,
}

impl Access {
    /// Rules for this token.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.into_bytes().into_boxed_slice())),
        }
    }

    /// Whether `given` is the configured token (constant time in the token's content).
    fn matches(&self, given: &[u8]) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| bool::from(t.ct_eq(given)))
    }

    /// The verdict for one request: Ok to go on, or the error to answer with.
    pub fn check(
        &self,
        peer: SocketAddr,
        method: &Method,
        authorization: Option<&[u8]>,
    ) -> Result<(), ApiError> {
        let read = matches!(*method, Method::GET | Method::HEAD);
        let given = authorization.map(|h| h.strip_prefix(b"Bearer ").unwrap_or(b""));
        match given {
            Some(t) if self.matches(t) => return Ok(()),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "token_invalid",
                    "the bearer token does not match http.token",
                ));
            }
            None => {}
        }
        if read && peer.ip().is_loopback() {
            return Ok(());
        }
        if self.token.is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "writes_disabled",
                "no http.token is configured: only reads from loopback are allowed",
            ));
        }
        let what = if read {
            "access from beyond loopback"
        } else {
            "this write"
        };
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_required",
            format!("{what} needs Authorization: Bearer <http.token>"),
        ))
    }
}

/// The middleware applying [`Access::check`].
pub async fn require(
    State(access): State<Access>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    match access.check(peer, req.method(), auth.as_deref()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:5000";
    const LAN: &str = "192.168.1.20:5000";

    fn code(r: Result<(), ApiError>) -> Option<&'static str> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn the_rules_in_one_table() {
        let a = Access::new(Some("0123456789abcdef".into()));
        let good = Some(&b"Bearer 0123456789abcdef"[..]);
        let bad = Some(&b"Bearer 0123456789abcdeX"[..]);
        type Case<'a> = (&'a str, Method, Option<&'a [u8]>, Option<&'a str>);
        let cases: [Case; 8] = [
            (LOCAL, Method::GET, None, None),
            (LOCAL, Method::POST, None, Some("token_required")),
            (LOCAL, Method::POST, good, None),
            (LOCAL, Method::POST, bad, Some("token_invalid")),
            (LOCAL, Method::GET, bad, Some("token_invalid")),
            (LAN, Method::GET, None, Some("token_required")),
            (LAN, Method::GET, good, None),
            (
                LAN,
                Method::PUT,
                Some(&b"Basic abc"[..]),
                Some("token_invalid"),
            ),
        ];
        for (peer, m, auth, want) in cases {
            assert_eq!(
                code(a.check(peer.parse().unwrap(), &m, auth)),
                want,
                "{peer} {m} {auth:?}"
            );
        }
    }

    #[test]
    fn without_a_token_only_loopback_reads_pass() {
        let a = Access::new(None);
        assert_eq!(
            code(a.check(LOCAL.parse().unwrap(), &Method::GET, None)),
            None
        );
        assert_eq!(
            code(a.check(LOCAL.parse().unwrap(), &Method::POST, None)),
            Some("writes_disabled")
        );
        assert_eq!(
            code(a.check(LOCAL.parse().unwrap(), &Method::POST, Some(b"Bearer "))),
            Some("token_invalid")
        );
    }
}
