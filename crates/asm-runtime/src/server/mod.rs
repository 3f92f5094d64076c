//! [`SessionServer`]: one task per session that queues, schedules and tracks its runs, and fans
//! its events out to subscribers.
//!
//! - `config`: [`ServerConfig`], [`RunOptions`], [`ServerStatus`], [`ShutdownPolicy`];
//! - `handle`: the cloneable [`SessionServer`] handle; every operation is a command to the task;
//! - `shared`: the `Core` the handle, the task and the run tasks share, and the commands;
//! - `actor`: the task itself (queue, slots, results, awaiters, shutdown);
//! - `run_task`: one run's task, which always reports the run's end to the actor.

mod actor;
mod config;
mod handle;
mod run_task;
mod shared;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use asm_core::{
    Error, ErrorCode, EventKind, Result, Run, RunId, RunInput, RunStatus, Session, SessionId, SessionStatus,
};
use asm_ports::{DynSessionStore, EventQuery, ExecutionRecord, ProviderAdapter, RunQuery, SessionStore};

use crate::execution::terminal_event;
use crate::limiter::{ConcurrencyLimiter, RunPermit};
use crate::manager::{ActiveRun, SessionManager};
use crate::options::{NewSession, RunOptions, RunResult};
use crate::ownership::{LeaseKeeper, Ownership, fenced};
use crate::subscription::{EventSubscription, Hub, SubscribeOptions};
use crate::{ControlOperations, TranscriptCache};

use self::actor::*;
use self::run_task::*;
pub(crate) use self::shared::Core;
use self::shared::*;

use self::config::*;
pub use self::config::{ServerConfig, ServerStatus, ShutdownPolicy};
pub use self::handle::SessionServer;
use self::handle::*;
