//! The real agent and the real client over the simulated network.
//!
//! [`netsim`](crate::netsim) runs both session machines over TLS on virtual
//! time. This module runs the programs themselves over the same smoltcp link
//! with the same faults, in real time: the agent's service
//! (`shoulder_agent::run_on` in the in-process agent,
//! [`Agent::on_streams`], with its TLS acceptor, authentication, capture
//! worker and session glue) and the client's whole connect, drive and
//! reconnect loop (`shoulder::client::run_via`). One thread owns both smoltcp
//! interfaces and the link and polls them every [`TICK`]; each TCP
//! connection reaches a program as a tokio byte stream ([`SimStream`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc as std_mpsc};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use shoulder::client::{self, ClientEvent, Dialer, Dialing, SharedView, Stream};
use shoulder_agent::backends::{Backends, Call};
use shoulder_agent::service::Incoming;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::msg::{Buttons, Pointer};
use shoulder_proto::session::device::InjectEvent;
use shoulder_proto::session::{ExpertState, UserAction};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::FaultInjector;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use crate::agent::Agent;
use crate::client_session::accept_all;
use crate::expert::{connect_options, control_granted, offer_target, viewing};
use crate::netsim::{Link, LinkConfig, Port};
use crate::pki::Pki;

/// The device's address on the simulated network.
pub const DEVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The expert's address.
pub const EXPERT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Where the agent listens.
pub const DEVICE_PORT: u16 = 7575;
/// How often the network thread moves packets and bytes: fine enough that
/// it adds well under a millisecond to a one-way delay.
pub const TICK: Duration = Duration::from_micros(500);
/// Bytes held between a socket and its program, each way (on top of the
/// socket's own buffers): a bound, like a kernel's socket buffer.
const PIPE_CAP: usize = 256 * 1024;
/// smoltcp socket buffers (the TCP windows).
const SOCKET_BUF: usize = 256 * 1024;
/// A connect that gets no answer gives up after this (as TCP's SYN retries
/// do, sooner).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection its program has closed is dropped after this even if the
/// link never delivers its FIN.
const LINGER: Duration = Duration::from_secs(10);
/// Connections queued for the agent before it accepts them.
const ACCEPT_QUEUE: usize = 8;

/// The state shared by a [`SimStream`] and the network thread.
#[derive(Debug, Default)]
struct Pipe {
    to_app: VecDeque<u8>,
    from_app: VecDeque<u8>,
    /// The program shut its side down or dropped the stream.
    app_closed: bool,
    /// Nothing more will arrive (FIN received and everything read, reset,
    /// or the network stopped).
    net_closed: bool,
    /// The connection was reset: writes fail, reads end with an error.
    reset: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Pipe {
    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }
    fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

fn lock<T>(p: &Mutex<T>) -> MutexGuard<'_, T> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// One TCP connection of the simulated network, as a program sees it.
#[derive(Debug)]
pub struct SimStream(Arc<Mutex<Pipe>>);

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut p = lock(&self.0);
        if !p.to_app.is_empty() {
            let (front, _) = p.to_app.as_slices();
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            p.to_app.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if p.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if p.net_closed {
            return Poll::Ready(Ok(()));
        }
        p.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = lock(&self.0);
        if p.reset || p.net_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = PIPE_CAP.saturating_sub(p.from_app.len());
        if room == 0 {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        p.from_app.extend(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0).app_closed = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        lock(&self.0).app_closed = true;
    }
}

type DialReply = oneshot::Sender<io::Result<Box<dyn Stream>>>;

/// Opens connections from the expert's side of the simulated network.
#[derive(Debug, Clone)]
pub struct SimDialer(std_mpsc::Sender<(SocketAddr, DialReply)>);

impl Dialer for SimDialer {
    fn dial(&self, addr: SocketAddr) -> Dialing<'_> {
        let tx = self.0.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            tx.send((addr, reply))
                .map_err(|_| io::Error::other("the simulated network is stopped"))?;
            answer
                .await
                .map_err(|_| io::Error::other("the simulated network is stopped"))?
        })
    }
}

/// The simulated network: runs until dropped.
#[derive(Debug)]
pub struct SimNet {
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    dialer: SimDialer,
    thread: Option<JoinHandle<()>>,
}

impl SimNet {
    /// Starts the network with `link`; connections to the device's
    /// [`DEVICE_PORT`] come out of the returned receiver (for
    /// `shoulder_agent::run_on`).
    pub fn start(link: LinkConfig, seed: u64) -> (Self, mpsc::Receiver<Incoming>) {
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (dial_tx, dial_rx) = std_mpsc::channel();
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
        let (d, s) = (down.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("simnet".into())
            .spawn(move || Network::new(link, seed).run(&d, &s, &dial_rx, &accept_tx))
            .expect("spawn the network thread");
        (
            Self {
                down,
                stop,
                dialer: SimDialer(dial_tx),
                thread: Some(thread),
            },
            accept_rx,
        )
    }

    /// Takes the link down (every packet lost) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn dialer(&self) -> SimDialer {
        self.dialer.clone()
    }

    /// The agent's address, as the expert dials it.
    pub fn device_addr() -> SocketAddr {
        SocketAddr::from((DEVICE_IP, DEVICE_PORT))
    }
}

impl Drop for SimNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection the network thread serves.
struct Conn {
    handle: SocketHandle,
    pipe: Arc<Mutex<Pipe>>,
    fin_sent: bool,
    /// When the program closed it (for [`LINGER`]).
    closed_at: Option<StdInstant>,
}

/// A connect under way.
struct Dialing2 {
    handle: SocketHandle,
    reply: DialReply,
    started: StdInstant,
}

/// One side: interface, port and sockets.
struct Side {
    iface: Interface,
    port: FaultInjector<Port>,
    sockets: SocketSet<'static>,
    conns: Vec<Conn>,
}

impl Side {
    fn new(link: &Rc<RefCell<Link>>, dir: usize, ip: Ipv4Addr, seed: u32) -> Self {
        let cfg = link.borrow().cfg.clone();
        let mut port = FaultInjector::new(
            Port {
                link: link.clone(),
                dir,
                checksums: cfg.verify_checksums,
            },
            seed,
        );
        port.set_drop_chance(cfg.loss_pct);
        port.set_corrupt_chance(cfg.corrupt_pct);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut port,
            Instant::from_millis(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
        });
        Self {
            iface,
            port,
            sockets: SocketSet::new(Vec::new()),
            conns: Vec::new(),
        }
    }

    fn socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUF]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUF]),
        )
    }

    fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.port, &mut self.sockets);
    }

    /// Moves bytes between sockets and programs; ends finished connections.
    fn pump(&mut self, now: StdInstant) {
        let mut buf = [0u8; 16 * 1024];
        let sockets = &mut self.sockets;
        self.conns.retain_mut(|c| {
            let sock = sockets.get_mut::<tcp::Socket>(c.handle);
            let mut p = lock(&c.pipe);
            while sock.can_send() && !p.from_app.is_empty() {
                let (front, _) = p.from_app.as_slices();
                match sock.send_slice(front) {
                    Ok(n) if n > 0 => {
                        p.from_app.drain(..n);
                        p.wake_writer();
                    }
                    _ => break,
                }
            }
            while sock.can_recv() && p.to_app.len() < PIPE_CAP {
                let room = (PIPE_CAP - p.to_app.len()).min(buf.len());
                match sock.recv_slice(&mut buf[..room]) {
                    Ok(n) if n > 0 => {
                        p.to_app.extend(&buf[..n]);
                        p.wake_reader();
                    }
                    _ => break,
                }
            }
            if p.app_closed && p.from_app.is_empty() && !c.fin_sent {
                sock.close();
                c.fin_sent = true;
                c.closed_at = Some(now);
            }
            let state = sock.state();
            let peer_done = !sock.may_recv() && !sock.can_recv();
            if !p.net_closed && (state == tcp::State::Closed || peer_done) {
                p.net_closed = true;
                // Closed without our FIN and without theirs: a reset.
                p.reset = state == tcp::State::Closed && !c.fin_sent;
                p.wake_reader();
                p.wake_writer();
            }
            let lingered = c.closed_at.is_some_and(|t| now - t > LINGER);
            let finished = p.app_closed
                && (matches!(state, tcp::State::Closed | tcp::State::TimeWait) || lingered);
            drop(p);
            if finished {
                sock.abort();
                sockets.remove(c.handle);
                return false;
            }
            true
        });
    }

    /// A stream for a socket that just got established.
    fn adopt(&mut self, handle: SocketHandle) -> SimStream {
        let pipe = Arc::new(Mutex::new(Pipe::default()));
        self.conns.push(Conn {
            handle,
            pipe: pipe.clone(),
            fin_sent: false,
            closed_at: None,
        });
        SimStream(pipe)
    }
}

/// Everything the network thread owns.
struct Network {
    link: Rc<RefCell<Link>>,
    device: Side,
    expert: Side,
    listener: SocketHandle,
    dialing: Vec<Dialing2>,
    next_port: u16,
}

impl Network {
    fn new(cfg: LinkConfig, seed: u64) -> Self {
        let link = Rc::new(RefCell::new(Link::new(cfg, seed)));
        let mut device = Side::new(&link, 0, DEVICE_IP, seed as u32 ^ 0xdead);
        let expert = Side::new(&link, 1, EXPERT_IP, seed as u32 ^ 0xbeef);
        let listener = Self::listen(&mut device);
        Self {
            link,
            device,
            expert,
            listener,
            dialing: Vec::new(),
            next_port: 49152,
        }
    }

    fn listen(device: &mut Side) -> SocketHandle {
        let mut s = Side::socket();
        let _ = s.listen(DEVICE_PORT);
        device.sockets.add(s)
    }

    fn run(
        mut self,
        down: &AtomicBool,
        stop: &AtomicBool,
        dials: &std_mpsc::Receiver<(SocketAddr, DialReply)>,
        accept: &mpsc::Sender<Incoming>,
    ) {
        let t0 = StdInstant::now();
        while !stop.load(Ordering::SeqCst) {
            let now = StdInstant::now();
            let now_us = (now - t0).as_micros() as i64;
            {
                let mut link = self.link.borrow_mut();
                link.down = down.load(Ordering::SeqCst);
                link.now_us = now_us;
                link.deliver(now_us);
            }
            let smol_now = Instant::from_micros(now_us);
            self.device.poll(smol_now);
            self.expert.poll(smol_now);
            while let Ok((addr, reply)) = dials.try_recv() {
                self.dial(addr, reply, now);
            }
            self.accept(accept);
            self.connect_progress(now);
            self.device.pump(now);
            self.expert.pump(now);
            self.device.poll(smol_now);
            self.expert.poll(smol_now);
            std::thread::sleep(TICK);
        }
        // Programs still holding streams see the end of them.
        for side in [&self.device, &self.expert] {
            for c in &side.conns {
                let mut p = lock(&c.pipe);
                p.net_closed = true;
                p.reset = true;
                p.wake_reader();
                p.wake_writer();
            }
        }
    }

    fn dial(&mut self, addr: SocketAddr, reply: DialReply, now: StdInstant) {
        let SocketAddr::V4(v4) = addr else {
            let _ = reply.send(Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "the simulated network is IPv4 only",
            )));
            return;
        };
        let mut s = Side::socket();
        s.set_timeout(Some(SmolDuration::from_micros(
            DIAL_TIMEOUT.as_micros() as u64
        )));
        self.next_port = if self.next_port == u16::MAX {
            49152
        } else {
            self.next_port + 1
        };
        let remote = (IpAddress::Ipv4(*v4.ip()), v4.port());
        if let Err(e) = s.connect(self.expert.iface.context(), remote, self.next_port) {
            let _ = reply.send(Err(io::Error::other(format!("connect: {e}"))));
            return;
        }
        let handle = self.expert.sockets.add(s);
        self.dialing.push(Dialing2 {
            handle,
            reply,
            started: now,
        });
    }

    fn connect_progress(&mut self, now: StdInstant) {
        let mut i = 0;
        while i < self.dialing.len() {
            let h = self.dialing[i].handle;
            let state = self.expert.sockets.get::<tcp::Socket>(h).state();
            let gave_up = self.dialing[i].reply.is_closed();
            if state == tcp::State::Established && !gave_up {
                let d = self.dialing.swap_remove(i);
                self.expert
                    .sockets
                    .get_mut::<tcp::Socket>(h)
                    .set_timeout(None);
                let stream = self.expert.adopt(h);
                if d.reply.send(Ok(Box::new(stream))).is_err() {
                    // The dialer stopped waiting; the stream's drop closes it.
                }
            } else if state == tcp::State::Closed || gave_up {
                let d = self.dialing.swap_remove(i);
                self.expert.sockets.get_mut::<tcp::Socket>(h).abort();
                self.expert.sockets.remove(h);
                let kind = if now - d.started >= DIAL_TIMEOUT {
                    io::ErrorKind::TimedOut
                } else {
                    io::ErrorKind::ConnectionRefused
                };
                let _ = d.reply.send(Err(kind.into()));
            } else {
                i += 1;
            }
        }
    }

    fn accept(&mut self, accept: &mpsc::Sender<Incoming>) {
        let sock = self.device.sockets.get::<tcp::Socket>(self.listener);
        if sock.state() != tcp::State::Established {
            return;
        }
        let peer = sock
            .remote_endpoint()
            .map(|e| match e.addr {
                IpAddress::Ipv4(a) => SocketAddr::from((a, e.port)),
            })
            .unwrap_or_else(|| SocketAddr::from((EXPERT_IP, 0)));
        let h = self.listener;
        self.listener = Self::listen(&mut self.device);
        let stream = self.device.adopt(h);
        // A full accept queue drops the connection, as a kernel backlog would.
        let _ = accept.try_send((Box::new(stream), peer));
    }
}

// --- whole sessions ----------------------------------------------------------

/// Longest wait for a step of a session (connect, consent, control).
const STEP: Duration = Duration::from_secs(30);

/// A whole offer session between the real agent and the real client over
/// the simulated network: the expert views, takes control, keeps it for
/// `duration` (with the link down for a while if `outage` says so), then a
/// key is sent and must reach the device.
#[derive(Debug, Clone)]
pub struct LiveScenario {
    pub name: &'static str,
    pub link: LinkConfig,
    /// The link goes down `.0` after control is granted, for `.1`.
    pub outage: Option<(Duration, Duration)>,
    pub duration: Duration,
    /// The agent's dead-peer timeout (15 s by default); shorter ones make
    /// outage scenarios quicker.
    pub peer_timeout: Duration,
    pub seed: u64,
}

/// What happened, from the expert's side and the device's.
#[derive(Debug, Clone, Default)]
pub struct LiveReport {
    pub name: &'static str,
    /// The expert had control at the end and a key then sent reached the
    /// device's input sink.
    pub survived: bool,
    /// Why the session ended early, if it did.
    pub ended: Option<String>,
    /// From the start until the first complete picture.
    pub first_picture: Option<Duration>,
    /// After the link came back: until the next complete picture.
    pub picture_back_after_outage: Option<Duration>,
    pub updates: u64,
    /// Bytes the expert received (TLS records), over all its connections.
    pub bytes_to_expert: u64,
    /// Complete updates after which the view was not a picture the device
    /// can show (must be zero).
    pub invalid_views: u64,
    /// Connections the client lost and came back from by itself.
    pub reconnects: u64,
    pub resumes: u64,
    /// Consent prompts on the device (2 when resumes need none).
    pub prompts: u64,
    /// Pointer moves the expert sent while in control, and those the
    /// device's input sink injected (fewer: the ones sent while the link
    /// was down or a resume was under way are dropped, not queued).
    pub pointer_sent: u64,
    pub pointer_injected: u64,
    /// Events the sink injected that the expert never sent (a corrupt or
    /// forged frame getting through; must be zero).
    pub foreign_input: u64,
    /// Injections refused for a consent no longer live (must be zero).
    pub refused_input: u64,
}

/// Whether `fb` is a picture of the agent's test pattern: one background
/// colour and exactly the 8×8 white square.
fn is_pattern_picture(fb: &Framebuffer) -> bool {
    let px = fb.pixels();
    let Some(bg) = px.get(0..3) else {
        return false;
    };
    let mut white = 0;
    for p in px.chunks_exact(4) {
        if p[..3] == *bg {
            continue;
        }
        if p[..3] == [255, 255, 255] {
            white += 1;
            continue;
        }
        return false;
    }
    white == 64
}

#[derive(Debug, Default)]
struct Seen {
    state: Option<ExpertState>,
    ended: Option<Option<shoulder::ClientError>>,
    first_picture: Option<StdInstant>,
    updates: Vec<StdInstant>,
    invalid_views: u64,
    reconnects: u64,
    resumes: u64,
}

async fn wait_for(seen: &Mutex<Seen>, within: Duration, cond: impl Fn(&Seen) -> bool) -> bool {
    let t0 = StdInstant::now();
    loop {
        {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            if cond(&s) {
                return true;
            }
            if s.ended.is_some() {
                return false;
            }
        }
        if t0.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `s` (needs a multi-threaded tokio runtime).
pub async fn run_live(s: &LiveScenario) -> LiveReport {
    let t_start = StdInstant::now();
    let dir = tempfile::Builder::new()
        .prefix("shoulder-netsim-live-")
        .tempdir()
        .expect("temporary directory");
    let pki = Pki::with_expert("Sim plant CA", "Ann Expert", 2).expect("test PKI");
    let ca = dir.path().join("plant-ca.crt");
    std::fs::write(&ca, pki.ca_pem.as_bytes()).expect("write the plant CA");
    let (backends, sink) = Backends::for_tests(320, 240);
    let (net, incoming) = SimNet::start(s.link.clone(), s.seed);
    let mut agent = Agent::on_streams(
        incoming,
        vec![SimNet::device_addr()],
        Some(&ca),
        backends,
        |c| {
            c.advertise = vec![DEVICE_IP.to_string()];
            c.device_name = "sim-kiosk".into();
            c.peer_timeout = s.peer_timeout;
            c.keepalive_interval = (s.peer_timeout / 3).max(Duration::from_secs(1));
        },
    )
    .await;
    // The person at the device says yes to every prompt, and we count them.
    let prompts = accept_all(&agent).await;

    let opts = connect_options(
        offer_target(SimNet::device_addr()),
        Some(pki.expert_identity().expect("expert identity")),
        None,
        "Ann Expert",
        dir.path().join("known_devices"),
    );
    let view = SharedView::default();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (actions, rx) = mpsc::channel(client::ACTION_QUEUE);
    let (v, sn) = (view.clone(), seen.clone());
    // SHOULDER_SIM_TRACE=1: the client's events and the agent's audit
    // trail on stderr, for looking into a failing scenario.
    let trace = std::env::var_os("SHOULDER_SIM_TRACE").is_some();
    let emit = Box::new(move |e: ClientEvent| {
        if trace && !matches!(e, ClientEvent::UpdateApplied { .. }) {
            eprintln!("{:>8.3} s client: {e:?}", t_start.elapsed().as_secs_f64());
        }
        let mut s = sn.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            ClientEvent::State(st) => s.state = Some(st),
            ClientEvent::UpdateApplied { .. } => {
                let now = StdInstant::now();
                s.first_picture.get_or_insert(now);
                s.updates.push(now);
                let ok = v.lock().fb.as_ref().is_some_and(is_pattern_picture);
                if !ok {
                    s.invalid_views += 1;
                }
            }
            ClientEvent::Reconnecting { attempt: 1, .. } => s.reconnects += 1,
            ClientEvent::Resuming => s.resumes += 1,
            ClientEvent::Ended(end) => s.ended = Some(end),
            _ => {}
        }
    });
    let dialer = net.dialer();
    let view2 = view.clone();
    let client_task =
        tokio::spawn(async move { client::run_via(opts, &dialer, view2, rx, emit).await });

    let state = |seen: &Seen| seen.state;
    let mut report = LiveReport {
        name: s.name,
        ..LiveReport::default()
    };
    let mut back_at = None;
    let mut survived = false;
    let pointer_sent: Arc<Mutex<Vec<Pointer>>> = Arc::default();
    let mut pointer_task = None;
    if wait_for(&seen, STEP, |x| state(x).is_some_and(viewing)).await {
        let _ = actions.send(UserAction::RequestControl).await;
        if wait_for(&seen, STEP, |x| state(x).is_some_and(control_granted)).await {
            let t_control = StdInstant::now();
            // The expert moves the pointer all through the fault; each move
            // is remembered, so whatever the sink got can be checked.
            let (moves, sent) = (actions.clone(), pointer_sent.clone());
            pointer_task = Some(tokio::spawn(async move {
                for i in 0u32.. {
                    let p = pointer_path(i);
                    lock(&sent).push(p);
                    if moves.send(UserAction::Pointer(p)).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(POINTER_INTERVAL).await;
                }
            }));
            if let Some((at, len)) = s.outage {
                tokio::time::sleep(at).await;
                net.set_down(true);
                tokio::time::sleep(len).await;
                net.set_down(false);
                back_at = Some(StdInstant::now());
            }
            let left = s.duration.saturating_sub(t_control.elapsed());
            tokio::time::sleep(left).await;
            // Still in control, and control still works: a key reaches the
            // device (a resumed session's devices are new ones). Pressed
            // again if it got lost: input sent while the client resumes
            // after a fault is dropped, as it is for a person typing.
            if let Some(t) = pointer_task.take() {
                t.abort();
            }
            let t0 = StdInstant::now();
            while !survived
                && t0.elapsed() < STEP
                && wait_for(&seen, STEP, |x| state(x).is_some_and(control_granted)).await
            {
                let before = sink.calls().len();
                for down in [true, false] {
                    let _ = actions
                        .send(UserAction::Key(shoulder_proto::Key { code: KEY_A, down }))
                        .await;
                }
                let t1 = StdInstant::now();
                while t1.elapsed() < KEY_WAIT {
                    let keys = sink.calls()[before..]
                        .iter()
                        .filter(
                            |e| matches!(e, Call::Injected(InjectEvent::Key(k)) if k.code == KEY_A),
                        )
                        .count();
                    if keys >= 2 {
                        survived = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    if let Some(t) = pointer_task.take() {
        t.abort();
    }
    let _ = actions.send(UserAction::Disconnect).await;
    let end = tokio::time::timeout(STEP, client_task).await;
    agent.shut_down(STEP).await;
    drop(net);

    if trace {
        let audit = std::fs::read_to_string(&agent.audit).unwrap_or_default();
        eprintln!("agent audit trail:\n{audit}");
    }
    drop(agent);
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    report.survived = survived;
    report.ended = match (&seen.ended, end) {
        (Some(None), _) if survived => None,
        (Some(e), _) => Some(format!("{e:?}")),
        (None, Err(_)) => Some("the client did not end when asked".into()),
        (None, _) => Some("the client ended without saying why".into()),
    };
    report.first_picture = seen.first_picture.map(|t| t - t_start);
    report.picture_back_after_outage =
        back_at.and_then(|b| seen.updates.iter().find(|&&t| t >= b).map(|&t| t - b));
    report.updates = seen.updates.len() as u64;
    report.bytes_to_expert = view.lock().stats.bytes_total;
    report.invalid_views = seen.invalid_views;
    report.reconnects = seen.reconnects;
    report.resumes = seen.resumes;
    report.prompts = prompts.load(Ordering::SeqCst) as u64;
    let sent = lock(&pointer_sent);
    for r in sink.calls() {
        match r {
            Call::Injected(InjectEvent::Pointer(p)) => {
                report.pointer_injected += 1;
                if !sent.contains(&p) {
                    report.foreign_input += 1;
                }
            }
            Call::Injected(InjectEvent::Key(k)) if k.code == KEY_A => {}
            Call::Injected(_) => report.foreign_input += 1,
            Call::Refused(_) => report.refused_input += 1,
            Call::ReleaseAll => {}
        }
    }
    report.pointer_sent = sent.len() as u64;
    report
}

/// How often the expert moves the pointer while in control.
const POINTER_INTERVAL: Duration = Duration::from_millis(20);
/// The key the expert presses at the end (evdev `KEY_A`).
const KEY_A: u16 = 30;
/// How long a key press is given to reach the sink before it is pressed
/// again (it takes milliseconds on a working link).
const KEY_WAIT: Duration = Duration::from_secs(2);

/// The expert's `i`-th pointer move: a walk over the 320×240 screen, no
/// button, so no two moves of a run are alike for a long while.
fn pointer_path(i: u32) -> Pointer {
    Pointer {
        x: (i % 320) as u16,
        y: ((i / 320 * 7 + i) % 240) as u16,
        buttons: Buttons(0),
        wheel: 0,
        hwheel: 0,
    }
}
