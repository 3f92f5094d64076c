//! Every port is implemented for `Arc<T>` and `Box<T>` of any implementation (`dyn` included),
//! forwarding each method, so a shared or boxed handle can be passed wherever a port is taken.
//! `clippy::missing_trait_methods` is denied on the forwarding impls: a method added to a trait
//! with a default body must be forwarded too, or the wrapper would silently use the default.

use std::sync::Arc;

use async_trait::async_trait;

use asm_core::{Capability, Event, Result, Run, RunId, Session, SessionId, StoredEvent};

use crate::{
    ApprovalHandler, ApprovalRequest, ApprovalVerdict, ArtifactStore, EventQuery, EventSearch, EventSink,
    ExecuteOutcome, ExecuteRequest, ExecutionRecord, HealthReport, HookAction, MaintenanceReport, MaintenanceStore,
    Page, ProviderAdapter, QueryStore, RetentionPolicy, RunContext, RunFinish, RunHook, RunQuery, RunSearch,
    SessionLeases, SessionQuery, SessionSearch, SessionStats, SessionStore, StoreCapabilities, UsageQuery, UsageReport,
};

macro_rules! forward_ports {
    ($($ptr:ident),*) => {$(
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<S: SessionStore + ?Sized> SessionStore for $ptr<S> {
            async fn save_session(&self, session: &Session) -> Result<()> {
                (**self).save_session(session).await
            }
            async fn get_session(&self, id: &SessionId) -> Result<Session> {
                (**self).get_session(id).await
            }
            async fn list_sessions(&self, query: &SessionQuery) -> Result<Page<Session>> {
                (**self).list_sessions(query).await
            }
            async fn delete_session(&self, id: &SessionId) -> Result<()> {
                (**self).delete_session(id).await
            }
            async fn save_run(&self, run: &Run) -> Result<()> {
                (**self).save_run(run).await
            }
            async fn get_run(&self, id: &RunId) -> Result<Run> {
                (**self).get_run(id).await
            }
            async fn list_runs(&self, session_id: &SessionId, query: &RunQuery) -> Result<Vec<Run>> {
                (**self).list_runs(session_id, query).await
            }
            async fn append(&self, events: Vec<Event>, expected_last_sequence: Option<u64>) -> Result<Vec<StoredEvent>> {
                (**self).append(events, expected_last_sequence).await
            }
            async fn get_events(&self, session_id: &SessionId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
                (**self).get_events(session_id, query).await
            }
            async fn latest_sequence(&self, session_id: &SessionId) -> Result<u64> {
                (**self).latest_sequence(session_id).await
            }
            async fn flush(&self, record: ExecutionRecord) -> Result<Vec<StoredEvent>> {
                (**self).flush(record).await
            }
            fn capabilities(&self) -> StoreCapabilities {
                (**self).capabilities()
            }
            fn leases(&self) -> Option<&dyn SessionLeases> {
                (**self).leases()
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<S: QueryStore + ?Sized> QueryStore for $ptr<S> {
            async fn search_sessions(&self, query: &SessionSearch) -> Result<Page<Session>> {
                (**self).search_sessions(query).await
            }
            async fn search_runs(&self, query: &RunSearch) -> Result<Page<Run>> {
                (**self).search_runs(query).await
            }
            async fn usage_summary(&self, query: &UsageQuery) -> Result<UsageReport> {
                (**self).usage_summary(query).await
            }
            async fn search_events(&self, query: &EventSearch) -> Result<Page<StoredEvent>> {
                (**self).search_events(query).await
            }
            async fn count_events(&self, query: &EventSearch) -> Result<u64> {
                (**self).count_events(query).await
            }
            async fn get_session_stats(&self, session_id: &SessionId) -> Result<SessionStats> {
                (**self).get_session_stats(session_id).await
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<S: MaintenanceStore + ?Sized> MaintenanceStore for $ptr<S> {
            async fn prune_events(&self, session_id: &SessionId, sequences: &[u64]) -> Result<u64> {
                (**self).prune_events(session_id, sequences).await
            }
            async fn clean_orphans(&self, dry_run: bool) -> Result<u64> {
                (**self).clean_orphans(dry_run).await
            }
            async fn health_check(&self) -> Result<HealthReport> {
                (**self).health_check().await
            }
            async fn run_maintenance(&self, policy: &RetentionPolicy) -> Result<MaintenanceReport> {
                (**self).run_maintenance(policy).await
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<A: ProviderAdapter + ?Sized> ProviderAdapter for $ptr<A> {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn capabilities(&self) -> Vec<Capability> {
                (**self).capabilities()
            }
            async fn execute(&self, request: ExecuteRequest, sink: EventSink) -> Result<ExecuteOutcome> {
                (**self).execute(request, sink).await
            }
            fn validate_config(&self) -> Result<()> {
                (**self).validate_config()
            }
            fn supports_native_resume(&self) -> bool {
                (**self).supports_native_resume()
            }
            fn supports_native_fork(&self) -> bool {
                (**self).supports_native_fork()
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<H: RunHook + ?Sized> RunHook for $ptr<H> {
            async fn on_start(&self, ctx: &RunContext) -> Result<HookAction> {
                (**self).on_start(ctx).await
            }
            async fn on_event(&self, ctx: &RunContext, event: &Event) -> Result<HookAction> {
                (**self).on_event(ctx, event).await
            }
            async fn on_finish(&self, ctx: &RunContext, finish: &RunFinish) -> Result<HookAction> {
                (**self).on_finish(ctx, finish).await
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: ApprovalHandler + ?Sized> ApprovalHandler for $ptr<T> {
            async fn decide(&self, request: &ApprovalRequest) -> Result<ApprovalVerdict> {
                (**self).decide(request).await
            }
        }

        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: ArtifactStore + ?Sized> ArtifactStore for $ptr<T> {
            async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
                (**self).put(key, bytes).await
            }
            async fn get(&self, key: &str) -> Result<Vec<u8>> {
                (**self).get(key).await
            }
            async fn delete(&self, key: &str) -> Result<()> {
                (**self).delete(key).await
            }
            async fn list(&self, prefix: &str) -> Result<Vec<String>> {
                (**self).list(prefix).await
            }
        }
    )*};
}

forward_ports!(Arc, Box);

#[cfg(test)]
mod tests {
    use super::*;

    fn takes_store(_: impl SessionStore) {}
    fn takes_adapter(_: impl ProviderAdapter) {}
    fn takes_hook(_: impl RunHook) {}
    fn takes_artifacts(_: impl ArtifactStore) {}
    fn takes_maintenance(_: impl MaintenanceStore) {}

    #[allow(dead_code)]
    fn every_port_accepts_shared_and_boxed_handles(
        store: Box<dyn SessionStore>,
        adapter: Arc<dyn ProviderAdapter>,
        hook: Box<dyn RunHook>,
        shared_hook: Arc<dyn RunHook>,
        artifacts: Arc<dyn ArtifactStore>,
        shared_maintenance: Arc<dyn MaintenanceStore>,
        boxed_maintenance: Box<dyn MaintenanceStore>,
    ) {
        takes_store(store);
        takes_adapter(adapter);
        takes_hook(hook);
        takes_hook(shared_hook);
        takes_artifacts(artifacts);
        takes_maintenance(shared_maintenance);
        takes_maintenance(boxed_maintenance);
    }
}
