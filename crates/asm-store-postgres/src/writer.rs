//! Group commit of appends.
//!
//! Appends go to a queue; a few writer tasks each take every append waiting (up to
//! `max_group`) and commit them together in one pipelined transaction on one connection: one
//! round trip and one WAL flush for the whole group. With one append waiting, it is a single
//! statement in autocommit mode: one round trip. Refusals (compare-and-append, unknown session,
//! an event after a run's end) are per append and leave the others of the group alone; an
//! error raised by one append (bad input PostgreSQL cannot hold, a race with a concurrent
//! delete or a concurrent append of the same id) rolls the group back, and its appends are then
//! committed one by one so that only the culprit fails. Connection failures are retried with
//! backoff, the whole group at once: safe, because every append is idempotent by event id.

use std::sync::Arc;

use asm_core::{Error, ErrorCode, Event, Result};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::{Db, split_group};
use crate::options::RetryPolicy;
use crate::retry::Retry;
use crate::write::{Outcome, Write};

/// One queued append and where its answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) write: Write,
    pub(crate) reply: oneshot::Sender<Result<Vec<Event>>>,
}

/// The queue side kept by the store handle; dropping it ends the writer tasks.
#[derive(Debug)]
pub(crate) struct Queue {
    tx: mpsc::Sender<Request>,
}

impl Queue {
    /// Starts `writers` tasks on the current runtime.
    pub(crate) fn start(db: Arc<Db>, writers: usize, max_group: usize, retry: RetryPolicy) -> Self {
        // Bounded: a caller waits for room instead of growing the queue without limit.
        let (tx, rx) = mpsc::channel(max_group.saturating_mul(writers).max(64));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers {
            tokio::spawn(writer(Arc::clone(&db), Arc::clone(&rx), max_group, retry));
        }
        Self { tx }
    }

    pub(crate) async fn submit(&self, write: Write) -> Result<Vec<Event>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { write, reply })
            .await
            .map_err(|_| Error::new(ErrorCode::InternalError, "the store's writer tasks have stopped"))?;
        answer.await.map_err(|_| Error::new(ErrorCode::InternalError, "a writer task stopped before answering"))?
    }
}

async fn writer(db: Arc<Db>, rx: Arc<Mutex<mpsc::Receiver<Request>>>, max_group: usize, retry: RetryPolicy) {
    loop {
        let group = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut group = vec![first];
            while group.len() < max_group {
                match rx.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            group
        };
        commit_group(&db, group, retry).await;
    }
}

/// Commits a group and answers every request in it.
async fn commit_group(db: &Db, mut group: Vec<Request>, policy: RetryPolicy) {
    // Head rows are always taken in session order, so two groups never wait for each other in
    // a cycle; appends of one session keep their arrival order (stable sort).
    group.sort_by(|a, b| a.write.batch.session_uuid.cmp(&b.write.batch.session_uuid));
    if group.len() == 1 {
        if let Some(request) = group.pop() {
            let answer = commit_one(db, &request.write, policy).await;
            answer_request(db, request, answer);
        }
        return;
    }
    let writes: Vec<Write> = Vec::new();
    let (writes, replies): (Vec<Write>, Vec<_>) = group.into_iter().fold((writes, Vec::new()), |(mut w, mut r), q| {
        w.push(q.write);
        r.push(q.reply);
        (w, r)
    });
    let mut retry = Retry::new(policy, "append");
    let result = loop {
        match db.write_group(&writes, retry.failures() > 0).await {
            Ok(outcomes) => break Ok(outcomes),
            Err(e) if split_group(&e) => break Err(None),
            Err(e) => {
                if let Err(e) = retry.next(e).await {
                    break Err(Some(e));
                }
            }
        }
    };
    match result {
        Ok(outcomes) => {
            for ((write, reply), outcome) in writes.into_iter().zip(replies).zip(outcomes) {
                answer_request(db, Request { write, reply }, Ok(outcome));
            }
        }
        Err(Some(error)) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        // One append of the group failed: commit them one by one.
        Err(None) => {
            for (write, reply) in writes.into_iter().zip(replies) {
                let answer = commit_one(db, &write, policy).await;
                answer_request(db, Request { write, reply }, answer);
            }
        }
    }
}

async fn commit_one(db: &Db, write: &Write, policy: RetryPolicy) -> Result<Outcome> {
    let mut retry = Retry::new(policy, "append");
    loop {
        match db.write_one(write, retry.failures() > 0).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) => retry.next(e).await?,
        }
    }
}

fn answer_request(db: &Db, request: Request, answer: Result<Outcome>) {
    let Request { write, reply } = request;
    let answer = match answer {
        Ok(Outcome::Written { base, stored }) => {
            let session = write.batch.session_uuid;
            let wrote_new = stored.len() < write.unique_len();
            let events = write.finish(base, stored);
            if wrote_new {
                // Local readers need not wait for the NOTIFY round trip.
                db.waiters.wake(&session);
            }
            Ok(events)
        }
        Ok(Outcome::Refused(e)) | Err(e) => Err(e),
    };
    let _ = reply.send(answer);
}
