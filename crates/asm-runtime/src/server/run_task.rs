//! One run's task: executes it and always reports its end to the server.

use super::*;

// ----- run tasks -------------------------------------------------------------------------------

/// Reports a run as finished (with an internal error) if its task ends without reporting, for
/// example when it is aborted.
pub(super) struct FinishGuard {
    pub(super) core: Arc<Core>,
    pub(super) run_id: RunId,
    pub(super) claim: Arc<ActiveRun>,
    pub(super) reported: bool,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.core.settings.manager.release_claim(&self.run_id, &self.claim);
        if !self.reported {
            let error = Error::new(ErrorCode::InternalError, "run task ended without a result");
            self.core.send(Command::Finished(Box::new(Finished { run_id: self.run_id.clone(), result: Err(error) })));
        }
    }
}

pub(super) async fn run_task(core: Arc<Core>, run_id: RunId, options: RunOptions, claim: Arc<ActiveRun>) {
    let mut guard = FinishGuard { core: core.clone(), run_id: run_id.clone(), claim: claim.clone(), reported: false };
    let manager = core.settings.manager.clone();
    let outcome = AssertUnwindSafe(manager.execute_claimed(&run_id, options, claim.clone())).catch_unwind().await;
    let result = match outcome {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => reconcile(&core, &run_id, error, &claim).await,
        Err(panic) => {
            let error =
                Error::new(ErrorCode::InternalError, format!("run task panicked: {}", panic_message(panic.as_ref())));
            tracing::error!(%run_id, %error, "run task panicked");
            end_in_store(&core, &run_id, &error).await;
            // The panic may have come after the run's end was stored: the store has the truth.
            let store = core.settings.manager.store();
            match store.get_run(&run_id).await {
                Ok(run) if run.status.is_terminal() => result_from_store(store, run).await,
                _ => Err(error),
            }
        }
    };
    guard.reported = true;
    core.send(Command::Finished(Box::new(Finished { run_id, result })));
}

/// The outcome of a run whose execution returned `error`, as the store has it: a cancel or
/// another executor may have ended it first; a run whose execution never started must not stay
/// pending.
pub(super) async fn reconcile(core: &Core, run_id: &RunId, error: Error, claim: &ActiveRun) -> Result<RunResult> {
    let store = core.settings.manager.store();
    match store.get_run(run_id).await {
        Ok(run) if run.status.is_terminal() => result_from_store(store, run).await,
        Ok(run) if run.status == RunStatus::Pending => {
            let error = if claim.cancel_request().is_some() {
                Error::new(ErrorCode::Cancelled, "run cancelled")
            } else {
                error
            };
            end_in_store(core, run_id, &error).await;
            Err(error)
        }
        _ => Err(error),
    }
}

/// Best effort: ends a run that is not terminal yet with `error` and its terminal event.
pub(super) async fn end_in_store(core: &Core, run_id: &RunId, error: &Error) {
    let store = core.settings.manager.store();
    let Ok(mut run) = store.get_run(run_id).await else { return };
    let read_status = run.status;
    if run.status.is_terminal() || run.fail(error.clone()).is_err() {
        return;
    }
    let mut event = terminal_event(&run, error, None);
    if read_status == RunStatus::Running
        && let Ok(reported) = crate::execution::stored_usage_events(store, &run).await
    {
        crate::execution::keep_reported_usage(&mut run, &mut event, &reported);
    }
    if let Err(store_error) =
        store.flush(ExecutionRecord::new(run).events(vec![event]).expect_status(read_status)).await
    {
        tracing::warn!(%store_error, %run_id, "could not record the end of a run");
    }
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
