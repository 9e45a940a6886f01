//! A TCP proxy on 127.0.0.1 that a test can cut in both directions: cutting closes every
//! connection through it and refuses new ones until it is healed — a network partition of
//! one link, while the hosts on either end keep running and keep every other connection.

use std::sync::Arc;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One proxied link; dropping it stops the proxy.
#[derive(Debug)]
pub struct LinkProxy {
    pub address: String,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: String) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let (cut, _) = watch::channel(false);
        let cut = Arc::new(cut);
        let task = {
            let cut = cut.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if *cut.borrow() {
                        drop(inbound); // refused while cut
                        continue;
                    }
                    let mut cut_rx = cut.subscribe();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let mut inbound = inbound;
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        tokio::select! {
                            _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut_rx.wait_for(|c| *c) => {} // cut: both ends closed
                        }
                    });
                }
            })
        };
        LinkProxy { address, cut, task }
    }

    // send_replace: the state changes even when no connection is open to hear it
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_replace(true);
    }
}
