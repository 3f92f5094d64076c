//! An ACP client for the tests: the `agent-client-protocol` crate's client side, with every
//! `session/update` it receives (parsed into the crate's typed `SessionNotification`, so a
//! wrongly shaped update fails the test) collected in order.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::SessionNotification;
use agent_client_protocol::{Agent, ByteStreams, Client};
use serde_json::Value;
use tokio::sync::mpsc;

/// The updates received so far, as JSON (the crate's own serialisation of what it parsed).
pub struct Updates(mpsc::UnboundedReceiver<SessionNotification>);

impl Updates {
    /// Every update received until now (the dispatch loop hands notifications over before the
    /// response that follows them, so after a request returns, its updates are here).
    pub fn drain(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(n) = self.0.try_recv() {
            out.push(serde_json::to_value(&n).expect("a notification serialises"));
        }
        out
    }

    /// Waits (bounded) for the next update.
    pub async fn next(&mut self, what: &str) -> Value {
        let n = tokio::time::timeout(Duration::from_secs(30), self.0.recv())
            .await
            .unwrap_or_else(|_| panic!("no session/update within 30 s while waiting for {what}"))
            .expect("the connection is open");
        serde_json::to_value(&n).expect("a notification serialises")
    }
}

/// Runs `body` as an ACP client over `outgoing` / `incoming`.
pub async fn drive<OB, IB, F, Fut, T>(outgoing: OB, incoming: IB, body: F) -> Result<T, agent_client_protocol::Error>
where
    OB: futures::AsyncWrite + Send + 'static,
    IB: futures::AsyncRead + Send + 'static,
    F: FnOnce(ConnectionTo<Agent>, Updates) -> Fut,
    Fut: Future<Output = Result<T, agent_client_protocol::Error>>,
{
    let (tx, rx) = mpsc::unbounded_channel();
    Client
        .v1()
        .name("asm-acp-test")
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                let _ = tx.send(n);
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .connect_with(ByteStreams::new(outgoing, incoming), async move |cx: ConnectionTo<Agent>| {
            body(cx, Updates(rx)).await
        })
        .await
}

/// The `update` objects of notifications, without the `_meta` the agent adds.
pub fn updates_only(notifications: &[Value]) -> Vec<Value> {
    notifications.iter().map(|n| n["update"].clone()).collect()
}
