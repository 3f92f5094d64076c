//! Memory of idle SessionServers: 100,000 servers, each attached to its own session of one
//! in-memory store, measured as live heap bytes (a counting global allocator) and RSS growth.
//! The sessions are created before the measurement starts, so only the servers are counted.
//!
//! `cargo bench -p asm-runtime --bench server_memory` (prints a markdown table)
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use asm_runtime::{NewSession, ServerConfig, SessionManager, SessionServer};
use asm_store_memory::InMemorySessionStore;
use asm_testkit::ScriptedAdapter;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const SERVERS: usize = 100_000;

fn live_bytes() -> i128 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i128 - s.bytes_deallocated as i128 + s.bytes_reallocated as i128
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes us means: skip.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"server_memory".contains(a.as_str())) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let manager = SessionManager::new(InMemorySessionStore::new(), ScriptedAdapter::new());
        let mut sessions = Vec::with_capacity(SERVERS);
        for _ in 0..SERVERS {
            let session = manager.start_session(NewSession::new("idle")).await.unwrap();
            manager.activate_session(&session.id).await.unwrap();
            sessions.push(session.id);
        }
        let mut servers: Vec<SessionServer> = Vec::with_capacity(SERVERS);
        let (heap_before, rss_before) = (live_bytes(), rss_bytes());
        let started = Instant::now();
        for id in &sessions {
            servers.push(
                SessionServer::start(ServerConfig::from_manager(manager.clone()).attach(id.clone())).await.unwrap(),
            );
        }
        let start_time = started.elapsed();
        // Every task has run at least once and is parked on its inbox.
        for server in &servers {
            server.status().await.unwrap();
        }
        let (heap_after, rss_after) = (live_bytes(), rss_bytes());
        let heap_per_server = (heap_after - heap_before) as f64 / SERVERS as f64;
        let rss_per_server = match (rss_before, rss_after) {
            (Some(b), Some(a)) => format!("{:.0}", (a.saturating_sub(b)) as f64 / SERVERS as f64),
            _ => "n/a".to_owned(),
        };

        let stopped = Instant::now();
        for server in &servers {
            server.shutdown().await.unwrap();
        }
        let stop_time = stopped.elapsed();
        drop(servers);
        let heap_left = (live_bytes() - heap_before) as f64 / SERVERS as f64;

        println!("| idle SessionServers | {SERVERS} |");
        println!("|---|---|");
        println!("| live heap per server | {heap_per_server:.0} bytes |");
        println!("| RSS growth per server | {rss_per_server} bytes |");
        println!("| start (attach) per server | {:.1} us |", start_time.as_secs_f64() * 1e6 / SERVERS as f64);
        println!("| shutdown per server | {:.1} us |", stop_time.as_secs_f64() * 1e6 / SERVERS as f64);
        println!("| heap per server left after shutdown | {heap_left:.0} bytes |");
    });
}
