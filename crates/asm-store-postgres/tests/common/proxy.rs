//! A loopback TCP proxy between a store and the test server that can cut every connection and
//! refuse new ones, and restore them: the fault injector of the connection tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// New connections are relayed (else closed at once).
    open: AtomicBool,
    /// The next request a connection sends marks it; the marked connection's next reply is
    /// swallowed and everything is cut: the server did the work, the client never hears of it.
    armed: AtomicBool,
    /// Bumped by every cut: relays end when it changes.
    epoch: watch::Sender<u64>,
    cuts: AtomicU64,
    cut_done: Notify,
}

impl Shared {
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.armed.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
        self.cuts.fetch_add(1, Ordering::SeqCst);
        self.cut_done.notify_waiters();
    }
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.epoch.send_modify(|e| *e += 1);
    }
}

impl Proxy {
    /// A proxy on 127.0.0.1 to the test server (which must be reachable over TCP).
    pub async fn start() -> Self {
        let config: tokio_postgres::Config = super::url().parse().expect("a valid ASM_TEST_POSTGRES_URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("the proxy tests need a TCP server address in ASM_TEST_POSTGRES_URL, got {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve the test server")
            .next()
            .expect("an address for the test server");
        assert!(upstream.ip().is_loopback(), "the proxy only relays to a loopback server, not {upstream}");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            open: AtomicBool::new(true),
            armed: AtomicBool::new(false),
            epoch: watch::channel(0).0,
            cuts: AtomicU64::new(0),
            cut_done: Notify::new(),
        });
        let accept = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if accept.open.load(Ordering::SeqCst) {
                    tokio::spawn(relay(client, Arc::clone(&accept)));
                } else {
                    drop(client);
                }
            }
        });
        Self { addr, shared, task }
    }

    /// A connection string for the test server through this proxy.
    pub fn url(&self) -> String {
        let config: tokio_postgres::Config = super::url().parse().expect("a valid ASM_TEST_POSTGRES_URL");
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or(user);
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.addr.port())
    }

    /// Cuts every connection now and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }

    /// Arms a cut right after the server answers the next request: the request is done by the
    /// server (an append committed), its answer lost, and every connection cut.
    pub fn cut_after_next_request(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// Waits for the next cut (armed or not).
    pub async fn cut_happened(&self, since: u64) {
        loop {
            let notified = self.shared.cut_done.notified();
            if self.cuts() > since {
                return;
            }
            notified.await;
        }
    }

    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

async fn relay(mut client: TcpStream, shared: Arc<Shared>) {
    let Ok(mut server) = TcpStream::connect(shared.upstream).await else { return };
    let mut epoch = shared.epoch.subscribe();
    epoch.mark_unchanged();
    let marked = AtomicBool::new(false);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let to_server = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if shared.armed.load(Ordering::SeqCst) {
                marked.store(true, Ordering::SeqCst);
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let to_client = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if marked.load(Ordering::SeqCst) {
                // The server answered the marked request: swallow the answer, cut everything.
                shared.cut();
                return Ok(());
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
        _ = epoch.changed() => {}
    }
}
