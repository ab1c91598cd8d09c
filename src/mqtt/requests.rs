//! The bridge request/response API: `<base>/bridge/request/<action>` → `<base>/bridge/response/
//! <action>` with `{"status","data","error","transaction"}`. A registry maps action names to async
//! handlers so other modules (jobs, tempo) plug in with one `register` call. No broker I/O here;
//! the bridge loop calls `RequestRouter::handle` and publishes the result.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::control::Fleet;

/// An action handler: takes the request JSON (object, `transaction` removed) and returns `data`
/// or an error message.
pub type Handler = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;

/// Wraps an async closure as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, String>> + Send + 'static,
{
    Arc::new(move |v| Box::pin(f(v)))
}

/// Wraps an async closure over a typed request as a [`Handler`]: the payload is deserialised into
/// `Req` (one that does not fit is answered `invalid request: …` without calling `f`), and the
/// answer is serialised as `data`.
pub fn typed_handler<Req, Resp, F, Fut>(f: F) -> Handler
where
    Req: serde::de::DeserializeOwned,
    Resp: serde::Serialize,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Resp, String>> + Send + 'static,
{
    Arc::new(move |v| {
        let call = serde_json::from_value::<Req>(v)
            .map(&f)
            .map_err(|e| format!("invalid request: {e}"));
        Box::pin(async move {
            let answer = call?.await?;
            serde_json::to_value(answer).map_err(|e| e.to_string())
        })
    })
}

/// Registry of bridge actions.
#[derive(Clone, Default)]
pub struct RequestRouter {
    handlers: BTreeMap<String, Handler>,
}

impl RequestRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// A router with the built-in actions: `devices/list` (from the fleet), `config/get` (returns
    /// `redacted_config` as given) and `devices/discover` (`discover`, or an error
    /// "discovery not configured" when None).
    pub fn with_builtins(fleet: Fleet, redacted_config: Value, discover: Option<Handler>) -> Self {
        let mut r = Self::new();
        r.register(
            "devices/list",
            handler(move |_| {
                let fleet = fleet.clone();
                async move { Ok(devices_json(&fleet)) }
            }),
        );
        let config = Arc::new(redacted_config);
        r.register(
            "config/get",
            handler(move |_| {
                let c = config.clone();
                async move { Ok((*c).clone()) }
            }),
        );
        r.register(
            "devices/discover",
            discover.unwrap_or_else(|| {
                handler(|_| async { Err("discovery not configured".to_string()) })
            }),
        );
        r
    }

    /// Adds or replaces the handler of `action` (e.g. `jobs/list`).
    pub fn register(&mut self, action: &str, handler: Handler) -> &mut Self {
        self.handlers.insert(action.to_string(), handler);
        self
    }

    /// Registered action names, sorted.
    pub fn actions(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    /// Runs one request and returns the response payload (never fails).
    pub async fn handle(&self, action: &str, payload: Result<&str, String>) -> Value {
        let parsed = match payload {
            Ok(text) => parse_request(text),
            Err(e) => Err((e, None)),
        };
        let (request, transaction) = match parsed {
            Ok(x) => x,
            Err((e, t)) => return response(Err(e), t),
        };
        let Some(h) = self.handlers.get(action) else {
            return response(
                Err(format!(
                    "unknown action '{action}' (known: {})",
                    self.actions().join(", ")
                )),
                transaction,
            );
        };
        response(h(request).await, transaction)
    }
}

type ParseError = (String, Option<Value>);

fn parse_request(text: &str) -> Result<(Value, Option<Value>), ParseError> {
    if text.is_empty() {
        return Ok((json!({}), None));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut m)) => {
            let t = m.remove("transaction");
            Ok((Value::Object(m), t))
        }
        Ok(_) => Err(("request must be a JSON object".into(), None)),
        Err(e) => Err((format!("request is not JSON: {e}"), None)),
    }
}

/// Builds `{"status","data","error","transaction"}`.
pub fn response(result: Result<Value, String>, transaction: Option<Value>) -> Value {
    match result {
        Ok(data) => {
            json!({"status": "ok", "data": data, "error": null, "transaction": transaction})
        }
        Err(e) => {
            json!({"status": "error", "data": null, "error": e, "transaction": transaction})
        }
    }
}

/// `devices/list` data: id, model, firmware, address, reachability of every battery.
pub fn devices_json(fleet: &Fleet) -> Value {
    Value::Array(
        fleet
            .iter()
            .map(|b| {
                let info = b.info();
                let health = b.health();
                json!({
                    "id": b.id(),
                    "model": info.as_ref().map(|i| i.model.clone()),
                    "firmware": info.as_ref().map(|i| i.firmware),
                    "ble_mac": info.as_ref().map(|i| i.ble_mac.clone()),
                    "address": info.as_ref().map(|i| i.address.clone()),
                    "reachable": health.reachable,
                    "last_seen": health.last_seen,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_echoes_transaction_and_refuses_unknown() {
        let mut r = RequestRouter::with_builtins(Fleet::default(), json!({"a": 1}), None);
        r.register("echo", handler(|v| async move { Ok(json!({ "got": v })) }));
        let v = r.handle("echo", Ok(r#"{"x":1,"transaction":"t9"}"#)).await;
        assert_eq!(v["status"], "ok");
        assert_eq!(v["data"]["got"], json!({"x": 1}));
        assert_eq!(v["transaction"], "t9");
        let v = r.handle("config/get", Ok("")).await;
        assert_eq!(v["data"], json!({"a": 1}));
        let v = r.handle("devices/discover", Ok("{}")).await;
        assert_eq!(v["error"], "discovery not configured");
        let v = r.handle("nope", Ok(r#"{"transaction":5}"#)).await;
        assert_eq!(v["status"], "error");
        assert_eq!(v["transaction"], 5);
        assert!(v["error"].as_str().unwrap().contains("devices/list"));
        let v = r.handle("echo", Ok("[1]")).await;
        assert_eq!(v["status"], "error");
        let v = r
            .handle("echo", Err("payload is not valid UTF-8".into()))
            .await;
        assert_eq!(v["error"], "payload is not valid UTF-8");
        assert_eq!(r.handle("devices/list", Ok("")).await["data"], json!([]));
    }

    #[tokio::test]
    async fn a_typed_handler_answers_a_payload_that_does_not_fit_without_calling_it() {
        #[derive(serde::Deserialize)]
        struct Req {
            n: Option<u32>,
        }
        let mut r = RequestRouter::new();
        r.register(
            "double",
            typed_handler(|req: Req| async move {
                req.n
                    .map(|n| n * 2)
                    .ok_or_else(|| "missing \"n\"".to_string())
            }),
        );
        let v = r.handle("double", Ok(r#"{"n":21,"transaction":1}"#)).await;
        assert_eq!(
            (v["status"].clone(), v["data"].clone()),
            (json!("ok"), json!(42))
        );
        let v = r.handle("double", Ok("")).await;
        assert_eq!(v["error"], "missing \"n\"");
        let v = r.handle("double", Ok(r#"{"n":"x"}"#)).await;
        let error = v["error"].as_str().unwrap();
        assert!(
            error.starts_with("invalid request: invalid type"),
            "{error}"
        );
    }
}
