//! A TCP proxy a test can cut: an endpoint that becomes unreachable and
//! comes back, as a network outage looks to an agent. While cut, every
//! connection open through it is shut down and new ones are closed as
//! soon as they are accepted.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A running proxy to one upstream address.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`: the upstream URL's scheme, the proxy's port.
    pub url: String,
    down: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections refused while cut.
    refused: Arc<AtomicUsize>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://host:port`).
    pub fn new(upstream: &str) -> Proxy {
        let target = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refused = Arc::new(AtomicUsize::new(0));
        let (d, l, r) = (down.clone(), live.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                {
                    let mut live = l.lock().unwrap();
                    live.retain(|s| s.peer_addr().is_ok());
                    live.push(client.try_clone().unwrap());
                    live.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            url: format!("http://127.0.0.1:{port}"),
            down,
            live,
            refused,
        }
    }

    /// Cuts the endpoint off: open connections are shut down, new ones
    /// closed at once.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// How many connections were refused while cut.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` on a thread of its own until either side ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
