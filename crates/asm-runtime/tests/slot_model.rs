//! A model of the SessionServer's queue and slot accounting, checked against the real server
//! with proptest: random submits, releases (success, failure, panic) and cancels of queued and
//! in-flight runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;

use proptest::prelude::*;

use asm_core::{ErrorCode, RunId, RunInput, RunStatus};
use asm_ports::{RunQuery, SessionStore};
use asm_runtime::{
    ConcurrencyLimiter, LimiterConfig, NewSession, RunOptions, ServerConfig, SessionServer, ShutdownPolicy,
};
use asm_store_memory::InMemorySessionStore;

use common::{GatedAdapter, Outcome, WAIT, all_events, assert_log_invariants};

const SLOTS: usize = 2;
const QUEUE: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Submit,
    /// Release the n-th in-flight run (modulo) with an outcome.
    Release(usize, u8),
    /// Cancel the n-th queued run (modulo).
    CancelQueued(usize),
    /// Cancel the n-th in-flight run (modulo).
    CancelInFlight(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Submit),
        3 => (0usize..4, 0u8..3).prop_map(|(i, o)| Op::Release(i, o)),
        1 => (0usize..4).prop_map(Op::CancelQueued),
        1 => (0usize..4).prop_map(Op::CancelInFlight),
    ]
}

#[derive(Default)]
struct Model {
    in_flight: Vec<RunId>,
    queue: VecDeque<RunId>,
    accepted: Vec<(RunId, RunStatus)>,
}

impl Model {
    /// A slot freed: the queue head (FIFO) takes it.
    fn free(&mut self, run: &RunId) {
        self.in_flight.retain(|r| r != run);
        if self.in_flight.len() < SLOTS
            && let Some(next) = self.queue.pop_front()
        {
            self.in_flight.push(next);
        }
    }

    fn set(&mut self, run: &RunId, status: RunStatus) {
        if let Some(entry) = self.accepted.iter_mut().find(|(r, _)| r == run) {
            entry.1 = status;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_server_matches_the_slot_model(ops in proptest::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = InMemorySessionStore::new();
            let (adapter, gates, _started) = GatedAdapter::new();
            let limiter = ConcurrencyLimiter::new(LimiterConfig::default().max_parallel_runs(SLOTS)).unwrap();
            let server = SessionServer::start(
                ServerConfig::new(store.clone(), adapter)
                    .create(NewSession::new("model"))
                    .max_concurrent_runs(SLOTS)
                    .max_queued_runs(QUEUE)
                    .limiter(limiter.clone()),
            )
            .await
            .unwrap();
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Submit => {
                        let result = server.submit_run(RunInput::user("wait"), RunOptions::default()).await;
                        if model.in_flight.len() + model.queue.len() >= SLOTS + QUEUE {
                            prop_assert_eq!(result.unwrap_err().code(), ErrorCode::MaxRunsExceeded);
                        } else {
                            let run = result.unwrap();
                            model.accepted.push((run.clone(), RunStatus::Pending));
                            if model.in_flight.len() < SLOTS {
                                model.in_flight.push(run);
                            } else {
                                model.queue.push_back(run);
                            }
                        }
                    }
                    Op::Release(i, outcome) if !model.in_flight.is_empty() => {
                        let run = model.in_flight[i % model.in_flight.len()].clone();
                        let (outcome, status, code) = match outcome {
                            0 => (Outcome::Succeed, RunStatus::Completed, None),
                            1 => (Outcome::Fail, RunStatus::Failed, Some(ErrorCode::ProviderError)),
                            _ => (Outcome::Panic, RunStatus::Failed, Some(ErrorCode::InternalError)),
                        };
                        gates.release(&run, outcome);
                        let result = tokio::time::timeout(WAIT, server.await_run(&run, WAIT)).await.unwrap();
                        prop_assert_eq!(result.err().map(|e| e.code()), code);
                        model.set(&run, status);
                        model.free(&run);
                    }
                    Op::CancelQueued(i) if !model.queue.is_empty() => {
                        let run = model.queue.remove(i % model.queue.len()).unwrap();
                        server.cancel_run(&run).await.unwrap();
                        model.set(&run, RunStatus::Cancelled);
                    }
                    Op::CancelInFlight(i) if !model.in_flight.is_empty() => {
                        let run = model.in_flight[i % model.in_flight.len()].clone();
                        server.cancel_run(&run).await.unwrap();
                        let err = server.await_run(&run, WAIT).await.unwrap_err();
                        prop_assert_eq!(err.code(), ErrorCode::Cancelled);
                        model.set(&run, RunStatus::Cancelled);
                        model.free(&run);
                    }
                    _ => {}
                }
                let status = server.status().await.unwrap();
                prop_assert_eq!(&status.in_flight_runs, &model.in_flight);
                prop_assert_eq!(status.queued_runs.iter().collect::<Vec<_>>(), model.queue.iter().collect::<Vec<_>>());
                prop_assert_eq!(limiter.status().active_runs, model.in_flight.len());
            }

            // Everything accepted is stored with the modelled status; nothing else is stored.
            for (run, status) in &model.accepted {
                let stored = store.get_run(run).await.unwrap().status;
                if *status == RunStatus::Pending && model.in_flight.contains(run) {
                    // launched: it may or may not have reached `running` yet
                    prop_assert!(matches!(stored, RunStatus::Pending | RunStatus::Running), "{}", stored);
                } else {
                    prop_assert_eq!(stored, *status);
                }
            }
            let stored = store.list_runs(server.session_id(), &RunQuery::new()).await.unwrap();
            prop_assert_eq!(stored.len(), model.accepted.len());

            server.shutdown_with(ShutdownPolicy::Cancel).await.unwrap();
            prop_assert_eq!(limiter.status().active_runs, 0);
            for run in store.list_runs(server.session_id(), &RunQuery::new()).await.unwrap() {
                prop_assert!(run.status.is_terminal(), "{} left {}", run.id, run.status);
            }
            assert_log_invariants(&all_events(&store, server.session_id()).await);
            Ok(())
        })?;
    }
}
