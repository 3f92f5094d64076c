//! The JSON-RPC 2.0 subset ACP uses over stdio: one message per line, requests, responses
//! and notifications in both directions.

use serde_json::{Value, json};

/// The ACP protocol version this client speaks (sent in `initialize`; an agent answering with
/// another version is refused).
pub const PROTOCOL_VERSION: u64 = 1;

/// JSON-RPC error code: the method does not exist (or is not enabled on this client).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC error code: invalid method parameters (a path outside the run's cwd, a missing
/// field).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC error code: the request failed on this side (an I/O error reading a file).
pub const INTERNAL_ERROR: i64 = -32603;
/// ACP error code: the agent needs authentication first.
pub const AUTH_REQUIRED: i64 = -32000;
/// JSON-RPC error code: the line is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error code: JSON, but not a valid JSON-RPC 2.0 request.
pub const INVALID_REQUEST: i64 = -32600;
/// ACP error code: a named resource (a session) does not exist.
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// The error code (`-32601`, ...).
    pub code: i64,
    /// A short description.
    pub message: String,
    /// Structured details, when any.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    fn from_value(v: &Value) -> Option<Self> {
        let obj = v.as_object()?;
        Some(Self {
            code: obj.get("code")?.as_i64()?,
            message: obj.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
            data: obj.get("data").cloned(),
        })
    }

    /// The error as its JSON-RPC object `{code, message, data?}`.
    pub fn to_value(&self) -> Value {
        let mut v = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            v["data"] = data.clone();
        }
        v
    }
}

/// One line read from the peer (the agent, or for an agent, the client).
#[derive(Debug)]
pub enum Incoming {
    /// Not JSON-RPC (not JSON, or JSON without `jsonrpc`): kept as a raw event.
    Raw {
        /// `not_json` or `not_jsonrpc`.
        reason: &'static str,
        /// The line's `type`, when it was a JSON object with one.
        line_type: Option<String>,
    },
    /// Claims to be JSON-RPC but is not a valid message.
    Malformed(String),
    /// A response to one of our requests.
    Response {
        /// The id of the request answered.
        id: Value,
        /// Its `result`, or its `error`.
        result: Result<Value, RpcError>,
    },
    /// A request from the peer (fs, permission, terminal, ... from an agent; `session/prompt`,
    /// ... from a client).
    Request {
        /// The request id (a string or a number).
        id: Value,
        /// The method.
        method: String,
        /// The params (`Null` when absent).
        params: Value,
    },
    /// A notification from the peer (`session/update`, `session/cancel`, ...).
    Notification {
        /// The method.
        method: String,
        /// The params (`Null` when absent).
        params: Value,
    },
}

/// Classifies one line.
pub fn parse(line: &str) -> Incoming {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return Incoming::Raw { reason: "not_json", line_type: None };
    };
    let Some(obj) = value.as_object() else {
        return Incoming::Raw { reason: "not_jsonrpc", line_type: None };
    };
    let Some(version) = obj.get("jsonrpc") else {
        let line_type = obj.get("type").and_then(Value::as_str).map(str::to_owned);
        return Incoming::Raw { reason: "not_jsonrpc", line_type };
    };
    if version != "2.0" {
        return Incoming::Malformed(format!("unsupported jsonrpc version {version}"));
    }
    let id = obj.get("id").filter(|id| id.is_string() || id.is_number()).cloned();
    match (obj.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => {
            Incoming::Request { id, method: method.clone(), params: obj.get("params").cloned().unwrap_or(Value::Null) }
        }
        (Some(Value::String(method)), None) if !obj.contains_key("id") => {
            Incoming::Notification { method: method.clone(), params: obj.get("params").cloned().unwrap_or(Value::Null) }
        }
        (Some(_), _) => Incoming::Malformed("a message with an invalid method or id".into()),
        (None, Some(id)) => match (obj.get("result"), obj.get("error")) {
            (Some(result), None) => Incoming::Response { id, result: Ok(result.clone()) },
            (None, Some(error)) => match RpcError::from_value(error) {
                Some(e) => Incoming::Response { id, result: Err(e) },
                None => Incoming::Malformed("a response whose error is not a JSON-RPC error object".into()),
            },
            _ => Incoming::Malformed("a response needs exactly one of result and error".into()),
        },
        (None, None) => Incoming::Malformed("a message with neither method nor a valid id".into()),
    }
}

/// A request line (without the newline).
pub fn request(id: u64, method: &str, params: Value) -> String {
    let mut v = json!({ "jsonrpc": "2.0", "id": id, "method": method });
    v["params"] = params;
    v.to_string()
}

/// A notification line (without the newline).
pub fn notification(method: &str, params: Value) -> String {
    let mut v = json!({ "jsonrpc": "2.0", "method": method });
    v["params"] = params;
    v.to_string()
}

/// A response line (without the newline).
pub fn response(id: &Value, result: Result<Value, RpcError>) -> String {
    match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string(),
        Err(e) => json!({ "jsonrpc": "2.0", "id": id, "error": e.to_value() }).to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        assert!(matches!(parse("hello"), Incoming::Raw { reason: "not_json", .. }));
        assert!(matches!(parse(r#"{"type":"x"}"#), Incoming::Raw { reason: "not_jsonrpc", line_type: Some(_) }));
        assert!(matches!(parse(r#"{"jsonrpc":"1.0","id":1,"result":{}}"#), Incoming::Malformed(_)));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","id":1}"#), Incoming::Malformed(_)));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","id":1,"result":null}"#), Incoming::Response { .. }));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"auth"}}"#),
            Incoming::Response { result: Err(RpcError { code: -32000, .. }), .. }
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":"a","method":"fs/read_text_file"}"#),
            Incoming::Request { .. }
        ));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","method":"session/update"}"#), Incoming::Notification { .. }));
        assert!(matches!(parse(r#"{"jsonrpc":"2.0","method":7}"#), Incoming::Malformed(_)));
    }

    #[test]
    fn builds_lines() {
        let line = response(&json!(3), Err(RpcError::new(INVALID_PARAMS, "no")));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"]["code"], INVALID_PARAMS);
        assert_eq!(serde_json::from_str::<Value>(&request(1, "m", json!({}))).unwrap()["id"], 1);
    }
}
