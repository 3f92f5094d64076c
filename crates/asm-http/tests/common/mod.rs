//! Shared by the integration tests: a real server on 127.0.0.1:0 and a small SSE client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use asm_http::{ApiServer, ApiServerBuilder};

/// A server listening on an ephemeral loopback port.
pub struct Running {
    pub addr: SocketAddr,
    pub api: ApiServer,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<asm_core::Result<()>>>,
}

impl Running {
    pub async fn start(builder: ApiServerBuilder) -> Self {
        let api = builder.build().expect("valid server configuration");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = api.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Self { addr, api, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits (bounded) until `serve` returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("serve returns within 20 s of the shutdown signal")
                .expect("serve task did not panic")
                .expect("serve ends without error");
        }
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.expect("connect to the server");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.expect("request sent")
}

pub fn request(method: &str, addr: SocketAddr, path: &str, body: Option<serde_json::Value>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path).header("host", addr.to_string());
    let bytes = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&json).expect("json"))
        }
        None => Bytes::new(),
    };
    builder.body(Full::new(bytes)).expect("request")
}

/// Sends a JSON request and returns (status, JSON body).
pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let response = send(addr, request(method, addr, path, body)).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value =
        if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
    (status, value)
}

/// One parsed Server-Sent Events frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

/// A streaming SSE client.
pub struct SseClient {
    body: Incoming,
    buffer: Vec<u8>,
    /// Where the unparsed part of `buffer` starts (parsed frames are dropped in bulk).
    start: usize,
    pub status: u16,
    pub content_type: String,
}

impl SseClient {
    pub async fn connect(addr: SocketAddr, path: &str, last_event_id: Option<u64>) -> Self {
        let mut builder =
            Request::builder().uri(path).header("host", addr.to_string()).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id.to_string());
        }
        let response = send(addr, builder.body(Full::new(Bytes::new())).expect("request")).await;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        Self { body: response.into_body(), buffer: Vec::new(), start: 0, status, content_type }
    }

    /// The next frame (comments included), or `None` when the stream ended.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer[self.start..].windows(2).position(|w| w == b"\n\n") {
                let raw = &self.buffer[self.start..self.start + end];
                self.start += end + 2;
                let text = std::str::from_utf8(raw).expect("SSE is UTF-8").to_owned();
                let mut frame = Frame::default();
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        frame.comment = Some(comment.trim().to_owned());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => frame.id = Some(value.to_owned()),
                            "event" => frame.event = Some(value.to_owned()),
                            "data" => data.push(value.to_owned()),
                            _ => {}
                        }
                    }
                }
                frame.data = data.join("\n");
                return Some(frame);
            }
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(bytes) = frame.into_data() {
                        self.buffer.extend_from_slice(&bytes);
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next event frame (skipping comments), within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Frame {
        tokio::time::timeout(timeout, async {
            loop {
                let frame = self.next_frame().await.expect("the event stream ended early");
                if frame.comment.is_none() {
                    return frame;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no SSE event within {timeout:?}"))
    }
}

/// Waits (bounded, through the event stream) for the run's terminal event, then returns the
/// run as `GET /v1/runs/{id}` shows it.
pub async fn await_terminal(addr: SocketAddr, session_id: &str, run_id: &str) -> serde_json::Value {
    let path =
        format!("/v1/sessions/{session_id}/events/stream?kind=run_completed,run_failed,run_cancelled,run_timeout");
    let mut stream = SseClient::connect(addr, &path, None).await;
    assert_eq!(stream.status, 200);
    loop {
        let frame = stream.next_event(Duration::from_secs(20)).await;
        let event: serde_json::Value = serde_json::from_str(&frame.data).expect("event JSON");
        if event["run_id"] == run_id {
            break;
        }
    }
    let (status, run) = json(addr, "GET", &format!("/v1/runs/{run_id}"), None).await;
    assert_eq!(status, 200, "{run}");
    run
}

/// Resident set size of this process, in KiB (Linux `/proc/self/status`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .expect("VmRSS in /proc/self/status")
}
