//! ACP prompt content blocks -> the text of one user message.

use serde_json::{Value, json};

use asm_provider_acp::jsonrpc::{INVALID_PARAMS, RpcError};

/// Joins the prompt's blocks (one per line): `text` as it is, `resource_link` as a Markdown
/// link, an embedded text `resource` as its text inside `<resource uri="...">` tags. Images,
/// audio and binary resources are refused (`-32602`, `data.reason = "unsupported_content"`):
/// the providers behind this agent take text.
pub(crate) fn prompt_text(blocks: &[Value]) -> Result<String, RpcError> {
    let mut parts = Vec::with_capacity(blocks.len());
    for block in blocks {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or_default();
        let str_of = |key: &str| block.get(key).and_then(Value::as_str);
        match kind {
            "text" => parts.push(str_of("text").ok_or_else(|| invalid("a text block without text"))?.to_owned()),
            "resource_link" => {
                let uri = str_of("uri").ok_or_else(|| invalid("a resource_link block without uri"))?;
                let name = str_of("name").unwrap_or(uri);
                parts.push(format!("[{name}]({uri})"));
            }
            "resource" => {
                let resource = block.get("resource").ok_or_else(|| invalid("a resource block without resource"))?;
                let uri = resource.get("uri").and_then(Value::as_str).unwrap_or_default();
                match resource.get("text").and_then(Value::as_str) {
                    Some(text) => parts.push(format!("<resource uri=\"{uri}\">\n{text}\n</resource>")),
                    None => return Err(unsupported("binary resource")),
                }
            }
            "image" | "audio" => return Err(unsupported(kind)),
            other => return Err(unsupported(if other.is_empty() { "untyped block" } else { other })),
        }
    }
    let text = parts.join("\n");
    if text.trim().is_empty() {
        return Err(invalid("the prompt has no text"));
    }
    Ok(text)
}

fn invalid(message: &str) -> RpcError {
    RpcError {
        code: INVALID_PARAMS,
        message: message.to_owned(),
        data: Some(json!({"code": "validation_error", "reason": "invalid_prompt"})),
    }
}

fn unsupported(kind: &str) -> RpcError {
    RpcError {
        code: INVALID_PARAMS,
        message: format!("{kind} content is not supported by this agent (promptCapabilities: text, embedded text)"),
        data: Some(json!({"code": "validation_error", "reason": "unsupported_content", "type": kind})),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn joins_text_links_and_resources() {
        let text = prompt_text(&[
            json!({"type": "text", "text": "look at"}),
            json!({"type": "resource_link", "uri": "file:///a.rs", "name": "a.rs"}),
            json!({"type": "resource", "resource": {"uri": "file:///b.rs", "text": "fn b() {}"}}),
        ])
        .unwrap();
        assert_eq!(text, "look at\n[a.rs](file:///a.rs)\n<resource uri=\"file:///b.rs\">\nfn b() {}\n</resource>");
    }

    #[test]
    fn refuses_images_and_empty_prompts() {
        let error = prompt_text(&[json!({"type": "image", "data": "", "mimeType": "image/png"})]).unwrap_err();
        assert_eq!((error.code, error.data.unwrap()["type"].clone()), (INVALID_PARAMS, json!("image")));
        assert_eq!(prompt_text(&[]).unwrap_err().code, INVALID_PARAMS);
    }
}
