//! Group commit of every write of events and runs: appends and flushes (run saves are flushes),
//! fenced or not.
//!
//! Writes go to a queue; writer tasks (two by default) each take every append waiting (up to
//! `max_group`) and commit them together with **one statement** (`asm_append_group`): one round
//! trip and one WAL flush for the whole group, set-based on the server. With one append waiting
//! it is the same statement for one append: one round trip. A writer that gathered a small group
//! while the other writer's commit is in flight waits for that commit first (its callers then
//! send their next appends), so groups stay large under load without any timer.
//!
//! `asm_append_group` declines (SQLSTATE `ASM01`, everything rolled back) when an append needs
//! its own answer: a refusal (compare-and-append, unknown session, an event after a run's end)
//! or events stored already (a retry). The group then goes through `asm_write`, one call per
//! append in one pipelined transaction, which answers each append on its own. An error raised by
//! one append (input PostgreSQL cannot hold, a race with a concurrent delete or a concurrent
//! append of the same id) makes the appends commit one by one, so only the culprit fails.
//! Connection failures are retried with backoff, the whole group at once: safe, because every
//! append is idempotent by event id.
//!
//! Fencing: a write of a session owned through [`SessionLeases`](asm_ports::SessionLeases)
//! carries its lease. A group holding fenced writes runs in one pipelined transaction: `BEGIN`,
//! one statement checking every fencing token of the group (`asm_check_fence` per lease row, in
//! session order, each row held `FOR SHARE` until the commit), the group's statement, `COMMIT`:
//! still one round trip and one WAL flush. A stale token aborts the whole transaction (SQLSTATE
//! `ASM02`); the group then commits one by one, and the stale owner's writes get
//! [`ErrorCode::LeaseLost`] while the others are written.
//! A group holding a flush goes straight to the per-write path (`asm_write`, one transaction).

use std::sync::Arc;

use asm_core::{Error, ErrorCode, Result, StoredEvent};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use crate::db::{Db, is_group_fallback, split_group};
use crate::options::RetryPolicy;
use crate::retry::Retry;
use crate::write::{Outcome, Write};

/// One queued append and where its answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) write: Write,
    pub(crate) reply: oneshot::Sender<Result<Vec<StoredEvent>>>,
}

/// The queue side kept by the store handle; dropping it ends the writer tasks.
#[derive(Debug)]
pub(crate) struct Queue {
    tx: mpsc::Sender<Request>,
}

impl Queue {
    /// Starts `writers` tasks on the current runtime.
    pub(crate) fn start(db: &Arc<Db>, writers: usize, max_group: usize, retry: RetryPolicy) -> Self {
        // Bounded: a caller waits for room instead of growing the queue without limit.
        let (tx, rx) = mpsc::channel(max_group.saturating_mul(writers).max(64));
        let rx = Arc::new(Mutex::new(rx));
        let commits = Arc::new(Commits::default());
        for _ in 0..writers {
            tokio::spawn(writer(Arc::clone(db), Arc::clone(&rx), Arc::clone(&commits), max_group, retry));
        }
        Self { tx }
    }

    pub(crate) async fn submit(&self, write: Write) -> Result<Vec<StoredEvent>> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { write, reply })
            .await
            .map_err(|_| Error::new(ErrorCode::InternalError, "the store's writer tasks have stopped"))?;
        answer.await.map_err(|_| Error::new(ErrorCode::InternalError, "a writer task stopped before answering"))?
    }
}

/// How many times a writer yields while gathering a group.
const MAX_GATHER_YIELDS: usize = 8;

/// Commits in flight, so that a writer does not start a small commit beside a running one.
#[derive(Debug, Default)]
struct Commits {
    in_flight: AtomicUsize,
    done: Notify,
}

/// Takes what is queued (up to `max_group` in all); then yields so that callers just answered
/// (woken on this worker, queued behind this task) can send their next append, until a yield
/// brings nothing new. No timer: an append that arrives alone is committed at once.
async fn gather(rx: &mut mpsc::Receiver<Request>, group: &mut Vec<Request>, max_group: usize) {
    for _ in 0..MAX_GATHER_YIELDS {
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        if group.len() >= max_group {
            return;
        }
        let before = group.len();
        tokio::task::yield_now().await;
        if rx.is_empty() && group.len() == before {
            return;
        }
    }
}

async fn writer(
    db: Arc<Db>,
    rx: Arc<Mutex<mpsc::Receiver<Request>>>,
    commits: Arc<Commits>,
    max_group: usize,
    retry: RetryPolicy,
) {
    loop {
        let group = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut group = vec![first];
            gather(&mut rx, &mut group, max_group).await;
            // A small group while another commit runs: wait for that commit, whose callers
            // then send their next appends, and take those too. Groups stay large under load
            // (one commit's WAL flush overlaps the next group's gathering), and an append on an
            // idle store still goes at once.
            if group.len() < max_group {
                let done = commits.done.notified();
                let mut done = std::pin::pin!(done);
                done.as_mut().enable();
                if commits.in_flight.load(Ordering::SeqCst) > 0 {
                    done.await;
                    gather(&mut rx, &mut group, max_group).await;
                }
            }
            commits.in_flight.fetch_add(1, Ordering::SeqCst);
            group
        };
        commit_group(&db, group, retry).await;
        commits.in_flight.fetch_sub(1, Ordering::SeqCst);
        commits.done.notify_waiters();
    }
}

/// Commits a group and answers every request in it.
async fn commit_group(db: &Db, mut group: Vec<Request>, policy: RetryPolicy) {
    // Head rows are always taken in session order, so two groups never wait for each other in
    // a cycle; appends of one session keep their arrival order (stable sort).
    group.sort_by_key(|a| a.write.batch.session_uuid);
    let (writes, replies): (Vec<Write>, Vec<_>) = group.into_iter().map(|q| (q.write, q.reply)).unzip();

    // 1. The fast path: the whole group in one statement.
    let mut retry = Retry::new(policy, "append");
    // A flush (a run write) has no place in the set-based statement: such a group goes through
    // asm_write, still in one transaction.
    let fallback = if writes.iter().any(Write::is_flush) {
        Fallback::PerAppend
    } else {
        loop {
            match db.append_group(&writes).await {
                Ok(bases) => {
                    for ((write, reply), base) in writes.into_iter().zip(replies).zip(bases) {
                        let outcome = Outcome::Written { base, stored: Default::default() };
                        answer_request(db, Request { write, reply }, Ok(outcome));
                    }
                    return;
                }
                // An append needs its own answer (a refusal, or events stored already).
                Err(e) if is_group_fallback(&e) => break Fallback::PerAppend,
                // One append holds something the server refused, raced a concurrent writer, or
                // carries a stale fencing token (ASM02): each gets its own answer.
                Err(e) if split_group(&e) => break Fallback::OneByOne,
                Err(e) => {
                    if let Err(e) = retry.next(e).await {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                        return;
                    }
                }
            }
        }
    };

    // 2. Every append through asm_write, which answers each one: together in one transaction,
    //    or one by one when one of them raises.
    if fallback == Fallback::PerAppend && writes.len() > 1 {
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
                return;
            }
            Err(Some(error)) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                return;
            }
            Err(None) => {}
        }
    }
    for (write, reply) in writes.into_iter().zip(replies) {
        let answer = commit_one(db, &write, policy).await;
        answer_request(db, Request { write, reply }, answer);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fallback {
    PerAppend,
    OneByOne,
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
