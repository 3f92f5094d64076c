//! The commands.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use futures::StreamExt;
use serde_json::{Value, json};

use asm_core::{
    Event, EventJson, EventKind, Run, RunId, RunInput, RunStatus, Session, SessionId, SessionStatus, StoredEvent,
    TokenUsage, TranscriptBuilder, TranscriptOptions,
};
use asm_ports::{DynSessionStore, EventQuery, RunQuery, SessionQuery};
use asm_render::{ColourChoice, JsonlSink, RenderOptions, RendererKind, Rendering, TerminalSink};
use asm_runtime::{Continuation, ForkPoint, NewSession, RunOptions, SessionManager, StreamOptions};

use crate::cli::{self, Cli, Command, OutputArgs};
use crate::config::{self, Config};
use crate::error::{CliError, CliResult};
use crate::provider::{self, ProviderFlags};
use crate::store::{self, ServeFile, ServeInfo, StoreUrl};

/// The first line of an export file.
const EXPORT_FORMAT: &str = "asm-export/1";
/// Events per store read or write when paging.
const PAGE: usize = 500;

/// Where the command runs: home, config and store URL.
struct Ctx {
    home: PathBuf,
    config: Config,
    url: StoreUrl,
}

impl Ctx {
    fn new(store_flag: Option<String>) -> CliResult<Self> {
        let home = config::asm_home()?;
        let config = Config::load(&home)?;
        let url = match store_flag.or_else(|| config.store.clone()) {
            Some(url) => StoreUrl::parse(&url)?,
            None => StoreUrl::Redb(home.join("sessions.redb")),
        };
        Ok(Self { home, config, url })
    }

    async fn store(&self) -> CliResult<DynSessionStore> {
        store::open(&self.url, &self.home).await
    }

    /// A manager for commands that never execute a run (its adapter is never called).
    fn manager(&self, store: DynSessionStore) -> CliResult<SessionManager> {
        let name = self.config.provider.as_deref().unwrap_or("claude");
        let adapter = provider::build(name, &self.config, &ProviderFlags::default())
            .or_else(|_| provider::build("claude", &self.config, &ProviderFlags::default()))?;
        Ok(SessionManager::from_shared(store, adapter))
    }
}

/// Runs the command; `Ok` is the exit status.
pub(crate) async fn dispatch(cli: Cli) -> CliResult<u8> {
    if let Command::Completions(args) = &cli.command {
        let mut out = Vec::new();
        clap_complete::generate(args.shell, &mut Cli::command(), "asm", &mut out);
        write_out(&String::from_utf8_lossy(&out))?;
        return Ok(0);
    }
    let ctx = Ctx::new(cli.store)?;
    match cli.command {
        Command::Run(args) => {
            let flags = ProviderFlags { model: args.model.as_deref(), cwd: args.cwd.as_deref() };
            let target = Target::New { agent: args.agent.clone() };
            run_prompt(&ctx, target, args.provider.as_deref(), &flags, &args.output, args.prompt.join(" ")).await
        }
        Command::Resume(args) => {
            let flags = ProviderFlags { model: args.model.as_deref(), cwd: args.cwd.as_deref() };
            let target = Target::Existing(parse_session(&args.session)?);
            run_prompt(&ctx, target, args.provider.as_deref(), &flags, &args.output, args.prompt.join(" ")).await
        }
        Command::Sessions(args) => sessions(&ctx, &args).await,
        Command::Show(args) => show(&ctx, &args).await,
        Command::Events(args) => events(&ctx, &args).await,
        Command::Transcript(args) => transcript(&ctx, &args).await,
        Command::Export(args) => export(&ctx, &args).await,
        Command::Import(args) => import(&ctx, &args).await,
        Command::Fork(args) => fork(&ctx, &args).await,
        Command::Cancel(args) => cancel(&ctx, &args).await,
        Command::Serve(args) => serve(&ctx, &args).await,
        Command::Acp(args) => acp(&ctx, &args).await,
        Command::Completions(_) => Ok(0),
    }
}

// ----- helpers ---------------------------------------------------------------------------------

fn write_out(text: &str) -> CliResult<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn json_line(value: &impl serde::Serialize) -> CliResult<String> {
    let mut line = serde_json::to_string(value).map_err(|e| CliError::new("internal_error", e.to_string()))?;
    line.push('\n');
    Ok(line)
}

fn parse_session(text: &str) -> CliResult<SessionId> {
    SessionId::parse(text).map_err(|e| {
        CliError::new("session_not_found", format!("no session {text:?}: {}", e.message()))
            .hint("session ids look like ses_...; list them with `asm sessions`")
    })
}

fn parse_run(text: &str) -> CliResult<RunId> {
    RunId::parse(text).map_err(|e| {
        CliError::new("run_not_found", format!("no run {text:?}: {}", e.message()))
            .hint("run ids look like run_...; see a session's runs with `asm show SESSION`")
    })
}

fn parse_kind(text: &str) -> CliResult<EventKind> {
    EventKind::parse(text).map_err(|e| {
        CliError::from(e).hint("kinds are snake_case names such as message_streamed, tool_call_started, run_completed")
    })
}

fn parse_status(text: &str) -> CliResult<SessionStatus> {
    serde_json::from_value(Value::String(text.to_owned())).map_err(|_| {
        CliError::validation(format!("unknown session status {text:?}"))
            .hint("one of pending, active, paused, completed, failed, cancelled")
    })
}

fn preview(text: &str, max: usize) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn dollars(cost: Option<f64>) -> String {
    cost.map_or_else(|| "-".to_owned(), |c| format!("${c:.4}"))
}

/// All events of a session matching `query` (paged), in order.
async fn all_events(store: &DynSessionStore, id: &SessionId, mut query: EventQuery) -> CliResult<Vec<StoredEvent>> {
    let mut out = Vec::new();
    loop {
        let page = store.get_events(id, &query.clone().limit(PAGE)).await?;
        let Some(last) = page.last().map(StoredEvent::sequence) else { break };
        let full = page.len() == PAGE;
        out.extend(page);
        if !full {
            break;
        }
        query = query.after(last);
    }
    Ok(out)
}

/// Ctrl-C (SIGINT), registered when created: a signal arriving any time after is seen, never
/// the default "die" disposition.
struct Interrupt(Option<tokio::signal::unix::Signal>);

impl Interrupt {
    fn new() -> Self {
        Self(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok())
    }

    /// The next Ctrl-C (never, when signals cannot be handled).
    async fn recv(&mut self) {
        if let Some(signal) = &mut self.0
            && signal.recv().await.is_some()
        {
            return;
        }
        futures::future::pending::<()>().await;
    }
}

// ----- run / resume ----------------------------------------------------------------------------

enum Target {
    New { agent: Option<String> },
    Existing(SessionId),
}

async fn run_prompt(
    ctx: &Ctx,
    target: Target,
    provider_flag: Option<&str>,
    flags: &ProviderFlags<'_>,
    output: &OutputArgs,
    prompt: String,
) -> CliResult<u8> {
    if prompt.trim().is_empty() {
        return Err(CliError::validation("the prompt is empty"));
    }
    let store = ctx.store().await?;
    let existing = match &target {
        Target::New { .. } => None,
        Target::Existing(id) => Some(store.get_session(id).await?),
    };
    let recorded = existing.as_ref().and_then(|s| s.metadata.get("provider")).and_then(Value::as_str);
    let provider_name = provider::choose(provider_flag, recorded, &ctx.config)?;
    let adapter = provider::build(&provider_name, &ctx.config, flags)?;
    adapter.validate_config().map_err(|e| {
        if e.code().category() == asm_core::ErrorCategory::Validation {
            return CliError::from(e);
        }
        CliError::from(e).hint(format!(
            "is the {provider_name} CLI installed and on PATH (or set [providers.{provider_name}] cli in config.toml)?"
        ))
    })?;
    let manager = SessionManager::from_shared(store.clone(), adapter);

    let (session_id, after, options) = match (target, existing) {
        (Target::New { agent }, _) => {
            let session =
                manager.start_session(NewSession::new(agent.unwrap_or_else(|| provider_name.clone()))).await?;
            manager.activate_session(&session.id).await?;
            (session.id, 0, RunOptions::new())
        }
        (Target::Existing(_), Some(session)) => {
            if matches!(session.status, SessionStatus::Pending | SessionStatus::Paused) {
                manager.activate_session(&session.id).await?;
            }
            let after = store.latest_sequence(&session.id).await?;
            (session.id, after, RunOptions::new().continuation(Continuation::Auto))
        }
        (Target::Existing(id), None) => {
            return Err(CliError::new("session_not_found", format!("session {id} not found")));
        }
    };
    let mut interrupt = Interrupt::new();
    let run = manager.start_run(&session_id, RunInput::user(prompt), options.clone()).await?;

    let printer = spawn_printer(manager.clone(), session_id.clone(), run.id.clone(), after, output);
    let mut execution = {
        let manager = manager.clone();
        let run_id = run.id.clone();
        tokio::spawn(async move { manager.execute_run(&run_id, options).await })
    };
    let mut interrupted = false;
    let executed = loop {
        tokio::select! {
            done = &mut execution => break done,
            () = interrupt.recv(), if !interrupted => {
                interrupted = true;
                if let Err(error) = manager.cancel_run(&run.id).await {
                    tracing::debug!(%error, "cancel after Ctrl-C");
                }
            }
        }
    };
    // The terminal event is stored by now (when the run started at all): the printer reaches
    // it promptly; it is stopped if it does not (a run that failed before it started).
    let mut printer = printer;
    let rendering = match tokio::time::timeout(Duration::from_secs(5), &mut printer).await {
        Ok(Ok(Ok(rendering))) => Some(rendering),
        Ok(Ok(Err(error))) => return Err(error),
        Ok(Err(_)) => None,
        Err(_) => {
            printer.abort();
            None
        }
    };
    let stored = store.get_run(&run.id).await?;
    if let Some(mut rendering) = rendering {
        rendering.write(&format!("\x1b[2msession {} · run {} · {}\x1b[0m\n", session_id, run.id, stored.status))?;
        rendering.finish()?;
    }
    let exec_error = match executed {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(CliError::from(error)),
        Err(join) => Some(CliError::new("internal_error", format!("the run task ended abnormally: {join}"))),
    };
    match stored.status {
        RunStatus::Completed => Ok(0),
        RunStatus::Cancelled => Err(CliError::new("cancelled", format!("run {} was cancelled", run.id)).status(130)),
        RunStatus::Failed | RunStatus::Timeout => Err(match &stored.error {
            Some(error) => CliError::new(error.code().as_str(), error.message()),
            None => {
                exec_error.unwrap_or_else(|| CliError::new("run_failed", format!("run {} {}", run.id, stored.status)))
            }
        }
        .hint(format!("see its events with `asm events {session_id} --run {}`", run.id))),
        _ => Err(exec_error
            .unwrap_or_else(|| CliError::new("internal_error", format!("run {} ended as {}", run.id, stored.status)))),
    }
}

/// Prints every stored event of the session after `after` until the run's terminal event.
fn spawn_printer(
    manager: SessionManager,
    session_id: SessionId,
    run_id: RunId,
    after: u64,
    output: &OutputArgs,
) -> tokio::task::JoinHandle<CliResult<Rendering>> {
    let mut rendering = new_rendering(output.json, &output.render);
    tokio::spawn(async move {
        let mut stream =
            manager.stream_session_events(&session_id, StreamOptions::after(after).wait(Duration::from_secs(5)));
        while let Some(item) = stream.next().await {
            let event = item?;
            rendering.event(&event)?;
            if event.run_id.as_ref() == Some(&run_id) && event.kind.is_run_terminal() {
                break;
            }
        }
        Ok(rendering)
    })
}

fn new_rendering(json: bool, style: &str) -> Rendering {
    let kind = RendererKind::parse(style).unwrap_or_default();
    let mut rendering = Rendering::new(kind.build(RenderOptions::new()));
    if json {
        rendering.add_sink(JsonlSink::new(io::stdout()));
    } else {
        rendering.add_sink(TerminalSink::stdout(ColourChoice::Auto));
    }
    rendering
}

// ----- inspection ------------------------------------------------------------------------------

async fn sessions(ctx: &Ctx, args: &cli::SessionsArgs) -> CliResult<u8> {
    if args.limit == 0 {
        return Err(CliError::validation("--limit must be at least 1"));
    }
    let store = ctx.store().await?;
    let mut query = SessionQuery::new().limit(PAGE);
    if let Some(status) = &args.status {
        query = query.status(parse_status(status)?);
    }
    if let Some(agent) = &args.agent {
        query = query.agent(agent.clone());
    }
    // Pages come oldest first; keep the newest `limit`.
    let mut newest: VecDeque<Session> = VecDeque::new();
    loop {
        let page = store.list_sessions(&query).await?;
        for session in page.items {
            if newest.len() == args.limit {
                newest.pop_front();
            }
            newest.push_back(session);
        }
        match page.next_cursor {
            Some(cursor) => query = query.cursor(cursor),
            None => break,
        }
    }
    let mut out = String::new();
    if !args.json && !newest.is_empty() {
        out += &format!("{:<36}  {:<9}  {:<16}  {:<8}  {}\n", "ID", "STATUS", "AGENT", "PROVIDER", "CREATED");
    }
    for session in newest.iter().rev() {
        if args.json {
            out += &json_line(session)?;
        } else {
            let provider = session.metadata.get("provider").and_then(Value::as_str).unwrap_or("-");
            out += &format!(
                "{:<36}  {:<9}  {:<16}  {:<8}  {}\n",
                session.id.as_str(),
                session.status.as_str(),
                preview(&session.agent_id, 16),
                provider,
                session.created_at.format("%Y-%m-%d %H:%M:%S")
            );
        }
    }
    write_out(&out)?;
    Ok(0)
}

fn totals(runs: &[Run]) -> (TokenUsage, Option<f64>) {
    let mut usage = TokenUsage::default();
    let mut cost: Option<f64> = None;
    for run in runs {
        usage += run.token_usage;
        if let Some(c) = run.cost_usd {
            cost = Some(cost.unwrap_or(0.0) + c);
        }
    }
    (usage, cost)
}

async fn show(ctx: &Ctx, args: &cli::ShowArgs) -> CliResult<u8> {
    let store = ctx.store().await?;
    let id = parse_session(&args.session)?;
    let session = store.get_session(&id).await?;
    let runs = store.list_runs(&id, &RunQuery::new()).await?;
    let (usage, cost) = totals(&runs);
    if args.json {
        write_out(&json_line(
            &json!({"session": session, "runs": runs, "token_usage": usage, "total_cost_usd": cost}),
        )?)?;
        return Ok(0);
    }
    let provider = session.metadata.get("provider").and_then(Value::as_str).unwrap_or("-");
    let mut out = format!(
        "session   {}\nstatus    {}\nagent     {}\nprovider  {provider}\ncreated   {}\n",
        session.id,
        session.status,
        session.agent_id,
        session.created_at.to_rfc3339()
    );
    if let Some(parent) = &session.parent_session_id {
        out += &format!("parent    {parent}\n");
    }
    out += &format!("runs      {}\n", runs.len());
    for run in &runs {
        out += &format!(
            "  {}  {:<9}  tokens {}/{}  {}  {}\n",
            run.id,
            run.status.as_str(),
            run.token_usage.input_tokens,
            run.token_usage.output_tokens,
            dollars(run.cost_usd),
            run.created_at.format("%Y-%m-%d %H:%M:%S")
        );
        if let Some(error) = &run.error {
            out += &format!("      error: [{}] {}\n", error.code(), preview(error.message(), 200));
        }
    }
    out += &format!("usage     {} in / {} out\ncost      {}\n", usage.input_tokens, usage.output_tokens, dollars(cost));
    write_out(&out)?;
    Ok(0)
}

fn event_text(event: &StoredEvent) -> String {
    let data = if event.data.is_empty() { String::new() } else { Value::Object(event.data.clone()).to_string() };
    format!(
        "{:>6}  {}  {:<22}  {}\n",
        event.sequence(),
        event.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        event.kind.as_str(),
        preview(&data, 120)
    )
}

async fn events(ctx: &Ctx, args: &cli::EventsArgs) -> CliResult<u8> {
    if args.limit == Some(0) {
        return Err(CliError::validation("--limit must be at least 1"));
    }
    let store = ctx.store().await?;
    let id = parse_session(&args.session)?;
    store.get_session(&id).await?;
    let mut filter = EventQuery::new();
    for kind in &args.kinds {
        filter = filter.kind(parse_kind(kind)?);
    }
    if let Some(run) = &args.run {
        filter = filter.run(parse_run(run)?);
    }
    let print = |event: &StoredEvent| -> CliResult<()> {
        if args.json { write_out(&json_line(&event.to_json())?) } else { write_out(&event_text(event)) }
    };
    let mut printed = 0usize;
    if !args.follow {
        let events = match args.limit {
            Some(limit) => store.get_events(&id, &filter.after(args.after).limit(limit)).await?,
            None => all_events(&store, &id, filter.after(args.after)).await?,
        };
        for event in &events {
            print(event)?;
        }
        return Ok(0);
    }
    let manager = ctx.manager(store)?;
    let mut interrupt = Interrupt::new();
    let mut stream = manager.stream_session_events(&id, StreamOptions::after(args.after).filter(filter));
    loop {
        tokio::select! {
            () = interrupt.recv() => return Ok(0),
            item = stream.next() => match item {
                Some(event) => {
                    print(&event?)?;
                    printed += 1;
                    if args.limit == Some(printed) {
                        return Ok(0);
                    }
                }
                None => return Ok(0),
            },
        }
    }
}

async fn transcript(ctx: &Ctx, args: &cli::SessionArg) -> CliResult<u8> {
    let store = ctx.store().await?;
    let id = parse_session(&args.session)?;
    store.get_session(&id).await?;
    let events = all_events(&store, &id, EventQuery::new()).await?;
    let transcript = TranscriptBuilder::new(TranscriptOptions::default()).from_events(&id, &events);
    let mut out = String::new();
    for message in &transcript.messages {
        let role =
            serde_json::to_value(message.role).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let mut body = message.content.clone().unwrap_or_default();
        if let Some(name) = &message.tool_name {
            if let Some(input) = &message.tool_input {
                body = format!("{body}[tool {name} {}]", preview(&Value::Object(input.clone()).to_string(), 200));
            } else if let Some(output) = &message.tool_output {
                let text = output.as_str().map_or_else(|| output.to_string(), str::to_owned);
                body = format!("{body}[{name} result] {}", preview(&text, 500));
            } else {
                body = format!("{body}[tool {name}]");
            }
        }
        out += &format!("{role}: {}\n", body.trim_end());
    }
    write_out(&out)?;
    Ok(0)
}

// ----- export / import -------------------------------------------------------------------------

async fn export(ctx: &Ctx, args: &cli::ExportArgs) -> CliResult<u8> {
    let store = ctx.store().await?;
    let id = parse_session(&args.session)?;
    let session = store.get_session(&id).await?;
    let runs = store.list_runs(&id, &RunQuery::new()).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| CliError::new("io_error", format!("cannot create {}: {e}", path.display())))?,
        )),
        None => Box::new(io::BufWriter::new(io::stdout())),
    };
    out.write_all(json_line(&json!({"format": EXPORT_FORMAT, "session": session}))?.as_bytes())?;
    for run in &runs {
        out.write_all(json_line(&json!({"run": run}))?.as_bytes())?;
    }
    let mut query = EventQuery::new();
    let mut count = 0u64;
    loop {
        let page = store.get_events(&id, &query.clone().limit(PAGE)).await?;
        for event in &page {
            out.write_all(json_line(&event.to_json())?.as_bytes())?;
        }
        count += page.len() as u64;
        match page.last().map(StoredEvent::sequence) {
            Some(last) if page.len() == PAGE => query = query.after(last),
            _ => break,
        }
    }
    out.flush()?;
    if let Some(path) = &args.output {
        write_out(&format!("exported session {id} ({} runs, {count} events) to {}\n", runs.len(), path.display()))?;
    }
    Ok(0)
}

/// The parsed content of an export file.
struct Export {
    session: Session,
    runs: Vec<Run>,
    events: Vec<Event>,
}

fn read_export(args: &cli::ImportArgs) -> CliResult<Export> {
    let name = args.file.display().to_string();
    let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(io::BufReader::new(io::stdin()))
    } else {
        Box::new(io::BufReader::new(
            std::fs::File::open(&args.file)
                .map_err(|e| CliError::new("io_error", format!("cannot open {name}: {e}")))?,
        ))
    };
    let bad = |line: usize, why: String| {
        CliError::new("invalid_format", format!("{name}:{line}: {why}"))
            .hint("import reads files written by `asm export`")
    };
    let mut session: Option<Session> = None;
    let mut runs = Vec::new();
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| bad(number, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| bad(number, e.to_string()))?;
        if session.is_none() {
            if value.get("format").and_then(Value::as_str) != Some(EXPORT_FORMAT) {
                return Err(bad(number, format!("the first line must be the {EXPORT_FORMAT} header")));
            }
            let parsed = serde_json::from_value(value.get("session").cloned().unwrap_or(Value::Null))
                .map_err(|e| bad(number, format!("session: {e}")))?;
            session = Some(parsed);
        } else if let Some(run) = value.get("run") {
            runs.push(serde_json::from_value::<Run>(run.clone()).map_err(|e| bad(number, format!("run: {e}")))?);
        } else {
            let json: EventJson = serde_json::from_value(value).map_err(|e| bad(number, format!("event: {e}")))?;
            events.push(Event::from(json));
        }
    }
    let session = session.ok_or_else(|| bad(1, "the file is empty".into()))?;
    for (index, event) in events.iter().enumerate() {
        if event.session_id != session.id {
            return Err(bad(
                0,
                format!("event {} belongs to session {}, not {}", event.id, event.session_id, session.id),
            ));
        }
        if event.sequence != Some(index as u64 + 1) {
            return Err(bad(
                0,
                format!("event sequences must be 1, 2, 3, ...; event {} has {:?}", index + 1, event.sequence),
            ));
        }
    }
    if let Some(run) = runs.iter().find(|r| r.session_id != session.id) {
        return Err(bad(0, format!("run {} belongs to session {}", run.id, run.session_id)));
    }
    Ok(Export { session, runs, events })
}

async fn import(ctx: &Ctx, args: &cli::ImportArgs) -> CliResult<u8> {
    let export = read_export(args)?;
    let store = ctx.store().await?;
    let id = export.session.id.clone();
    match store.get_session(&id).await {
        Ok(_) => {
            return Err(CliError::new("already_exists", format!("session {id} already exists in this store"))
                .hint("import into another --store, or fork the existing session"));
        }
        Err(error) if error.code() == asm_core::ErrorCode::SessionNotFound => {}
        Err(error) => return Err(error.into()),
    }
    store.save_session(&export.session).await?;
    let restored = restore(&store, &export).await;
    if let Err(error) = restored {
        if let Err(cleanup) = store.delete_session(&id).await {
            tracing::warn!(%cleanup, "could not remove the partly imported session");
        }
        return Err(error);
    }
    write_out(&format!("imported session {id} ({} runs, {} events)\n", export.runs.len(), export.events.len()))?;
    Ok(0)
}

/// Appends the events (the store numbers them 1, 2, ... again, checked) and then the runs,
/// so that terminal runs do not refuse their own events.
async fn restore(store: &DynSessionStore, export: &Export) -> CliResult<()> {
    for chunk in export.events.chunks(PAGE) {
        let batch: Vec<Event> = chunk
            .iter()
            .map(|event| {
                let mut event = event.clone();
                event.sequence = None;
                event
            })
            .collect();
        let stored = store.append(batch, Some(chunk[0].sequence.unwrap_or(1) - 1)).await?;
        for (original, stored) in chunk.iter().zip(&stored) {
            if stored.sequence != original.sequence || stored.session_id != original.session_id {
                return Err(CliError::new(
                    "invalid_operation",
                    format!(
                        "event {} was stored as sequence {:?}, not {:?}",
                        original.id, stored.sequence, original.sequence
                    ),
                )
                .hint("an event id of this file is already stored in another session"));
            }
        }
    }
    for run in &export.runs {
        store.save_run(run).await?;
    }
    Ok(())
}

// ----- fork / cancel ---------------------------------------------------------------------------

async fn fork(ctx: &Ctx, args: &cli::ForkArgs) -> CliResult<u8> {
    let store = ctx.store().await?;
    let id = parse_session(&args.session)?;
    let point = match &args.run {
        Some(run) => ForkPoint::after_run(parse_run(run)?),
        None => ForkPoint::Latest,
    };
    let manager = ctx.manager(store)?;
    let forked = manager.fork_session(&id, point).await?;
    manager.activate_session(&forked.session.id).await?;
    write_out(&format!(
        "{}\nforked from {id} at sequence {} ({} events, {} runs copied)\n",
        forked.session.id, forked.parent_sequence, forked.events_copied, forked.runs_copied
    ))?;
    Ok(0)
}

async fn cancel(ctx: &Ctx, args: &cli::CancelArgs) -> CliResult<u8> {
    let store = ctx.store().await?;
    let run_id = parse_run(&args.run)?;
    let manager = ctx.manager(store)?;
    manager.cancel_run(&run_id).await?;
    write_out(&format!("cancelled {run_id}\n"))?;
    Ok(0)
}

// ----- serve -----------------------------------------------------------------------------------

async fn serve(ctx: &Ctx, args: &cli::ServeArgs) -> CliResult<u8> {
    let addr: SocketAddr = args.listen.parse().map_err(|_| {
        CliError::validation(format!("invalid --listen address {:?}", args.listen)).hint("for example 127.0.0.1:7377")
    })?;
    if args.token.as_deref() == Some("") {
        return Err(CliError::validation("--token is empty"));
    }
    asm_http::check_listen_addr(addr, args.token.is_some())?;
    let store = ctx.store().await?;
    let mut names: Vec<&str> = provider::PROVIDERS.to_vec();
    if let Some(default) = ctx.config.provider.as_deref()
        && let Some(index) = names.iter().position(|n| *n == default)
    {
        names.swap(0, index);
    }
    let mut builder = asm_http::ApiServer::builder().shared_store(store);
    for name in names {
        builder = builder.shared_adapter(name, provider::build(name, &ctx.config, &ProviderFlags::default())?);
    }
    let api = builder.token_opt(args.token.clone()).build()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::new("listen_failed", format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let store_name = match &ctx.url {
        StoreUrl::Redb(path) | StoreUrl::Sled(path) => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()).display().to_string()
        }
        StoreUrl::Memory => "memory:".to_owned(),
        StoreUrl::Postgres(_) => "postgres".to_owned(),
    };
    let info = ServeInfo { pid: std::process::id(), listen: local.to_string(), store: store_name };
    let _serve_file = ServeFile::write(&ctx.url.serve_dir(&ctx.home), &info)?;
    write_out(&format!("asm serve listening on http://{local} (store {})\n", info.store))?;
    api.serve(listener, shutdown_signal()).await?;
    Ok(0)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = Interrupt::new();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                () = interrupt.recv() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => interrupt.recv().await,
    }
}

// ----- acp -------------------------------------------------------------------------------------

/// `asm acp`: the ACP agent on stdin / stdout until stdin ends (then every run it started is
/// cancelled and awaited, so no provider process is left). Nothing else is printed on stdout;
/// logs go to stderr (`ASM_LOG`).
async fn acp(ctx: &Ctx, args: &cli::AcpArgs) -> CliResult<u8> {
    let store = ctx.store().await?;
    let provider_name = provider::choose(args.provider.as_deref(), None, &ctx.config)?;
    let flags = ProviderFlags { model: args.model.as_deref(), cwd: args.cwd.as_deref() };
    let adapter = provider::build(&provider_name, &ctx.config, &flags)?;
    adapter.validate_config().map_err(|e| {
        if e.code().category() == asm_core::ErrorCategory::Validation {
            return CliError::from(e);
        }
        CliError::from(e).hint(format!(
            "is the {provider_name} CLI installed and on PATH (or set [providers.{provider_name}] cli in config.toml)?"
        ))
    })?;
    let manager = SessionManager::from_shared(store, adapter);
    let server = asm_acp_agent::AcpAgentServer::new(manager)
        .agent_id(args.agent.clone().unwrap_or_else(|| provider_name.clone()))
        .agent_info("asm", env!("CARGO_PKG_VERSION"));
    server.serve(tokio::io::stdin(), tokio::io::stdout()).await?;
    Ok(0)
}
