//! A TCP relay between a test's expert and a device that can cut every live
//! connection at once (a pulled cable: both ends see the stream end, with no
//! TLS close and no `Bye`) and refuse new ones for a while (the cable still
//! out), or send new ones to another device (a machine taking over the
//! address). Plain threads, so a test needs no runtime of its own.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use shoulder_proto::invite::Invitation;

/// See the module docs. Dropping it stops accepting and cuts what is live.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    /// Where new connections go.
    to: Arc<Mutex<SocketAddr>>,
    /// Both sockets of every relayed connection, for [`Relay::cut`].
    live: Arc<Mutex<Vec<TcpStream>>>,
    refuse: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `to`.
    pub fn start(to: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let relay = Self {
            addr: listener.local_addr()?,
            to: Arc::new(Mutex::new(to)),
            live: Arc::default(),
            refuse: Arc::default(),
            accepted: Arc::default(),
            stop: Arc::default(),
        };
        let (to, live, refuse, accepted, stop) = (
            relay.to.clone(),
            relay.live.clone(),
            relay.refuse.clone(),
            relay.accepted.clone(),
            relay.stop.clone(),
        );
        thread::Builder::new().name("relay".into()).spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if refuse.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close
                }
                let to = *lock(&to);
                let Ok(device) = TcpStream::connect(to) else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let _ = relay_pair(client, device, &live);
            }
        })?;
        Ok(relay)
    }

    /// Where the expert connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections relayed so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Ends every live connection at both ends.
    pub fn cut(&self) {
        for s in lock(&self.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Refuses (accepts and closes at once) new connections while `on`.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    /// Sends new connections to `to`; live ones stay where they are.
    pub fn retarget(&self, to: SocketAddr) {
        *lock(&self.to) = to;
    }

    /// Points an invitation at the relay instead of the device.
    pub fn redirect(&self, inv: &mut Invitation) {
        inv.addresses.clear();
        inv.addresses
            .push(shoulder_proto::text("127.0.0.1"))
            .expect("one address fits");
        inv.port = self.addr.port();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        self.cut();
    }
}

/// Copies both ways on two threads; remembers both sockets for a cut.
fn relay_pair(
    client: TcpStream,
    device: TcpStream,
    live: &Mutex<Vec<TcpStream>>,
) -> io::Result<()> {
    let mut l = lock(live);
    l.push(client.try_clone()?);
    l.push(device.try_clone()?);
    drop(l);
    for (from, to) in [(client.try_clone()?, device.try_clone()?), (device, client)] {
        thread::Builder::new()
            .name("relay-copy".into())
            .spawn(move || {
                let (mut from, to) = (from, to);
                let _ = io::copy(&mut from, &mut &to);
                // One side ended: end the other as well.
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
            })?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
