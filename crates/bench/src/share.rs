//! One process's share of the clients: connect, log in, send, receive, check, count.
//!
//! Each client is one task driving one non-blocking socket through a small state machine
//! (connecting, logging in, ready, running, stopping). The run moves through [`Phase`]s set
//! by the coordinator; the share reports [`ShareEvent`]s back. The same code runs inside the
//! coordinating process or in a worker process (see [`crate::run`]), so a run of 19,000
//! clients is the same as a run of 20, only spread out.
//!
//! Flow control between a sender and its recipient is end to end: a sender may have
//! `window` messages sent and not yet *received by the recipient*. The recipient's task
//! counts them into the sender's [`Flow`], which is why a pair (or a fan-in group) always
//! lives in one process.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tcpchat_proto::Framer;
use tokio::net::{TcpSocket, TcpStream};

use crate::conn::Conn;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::counters::{Counters, Failure};
use crate::dialect::{Codec, Dialect, Event, Refusal};
use crate::message::{self, Header, OrderCheck};
use crate::pacing::Pacer;
use crate::plan::{Scenario, Share, ROOM};

/// Where the run is. Only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    /// Set up, nothing connected.
    Wait,
    /// Connect and log in.
    Login,
    /// The measured phase: send (message scenarios) or hold (idle).
    Run,
    /// Stop sending, wait for what is in flight, close.
    Stop,
}

/// What a share tells the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ShareEvent {
    /// The live counts so far (logins, sent, delivered; no histograms).
    Progress(Counters),
    /// Every client has logged in or failed: the share's login counts.
    LoggedIn(Counters),
    /// The share is finished: everything it counted.
    Done(Counters),
    Failed(String),
}

/// A sender's end-to-end flow: written by the sender (`sent`, `finished`) and by its
/// recipient (`delivered`, `notify`).
#[derive(Debug, Default)]
struct Flow {
    sent: AtomicU64,
    delivered: AtomicU64,
    finished: AtomicBool,
    notify: Notify,
}

/// A rate sender's socket as the pacing thread writes to it (plain TCP only).
///
/// The thread sends each message itself when it is due instead of waking the sender's task
/// to do it: the wakeup cost the bench an `eventfd` write, an `epoll_wait`, a context switch
/// and a task poll per message, about a quarter of its CPU at 20,000 msg/s (bench/notes.md,
/// "A cheaper load generator"). What is sent and when is the same: message `k` carries its
/// intended time and the lag is recorded from it, as the task did.
#[derive(Debug, Default)]
struct Direct {
    /// The socket, from when the sender's task enters Running until it stops or ends.
    fd: Option<std::os::fd::RawFd>,
    /// Messages sent so far: the next one's sequence number.
    sent: u64,
    /// Bytes the socket has not taken yet, in order. While there are any, the thread
    /// appends instead of writing and the task writes them when the socket is writable.
    unsent: Vec<u8>,
}

impl Flow {
    fn complete(&self) -> bool {
        self.finished.load(Ordering::Acquire)
            && self.delivered.load(Ordering::Acquire) >= self.sent.load(Ordering::Acquire)
    }
}

/// State shared by a share's client tasks.
struct State {
    share: Share,
    origin: Instant,
    flows: Vec<Flow>,
    /// Per local client: the pacing thread's way to its socket (used by rate senders).
    direct: Vec<Mutex<Direct>>,
    logins: Semaphore,
    /// Live totals for progress reports; the exact counts are in `totals`.
    sent: AtomicU64,
    delivered: AtomicU64,
    /// Logins as they happen; clients merge the rest of their counts in when they end.
    totals: Mutex<Counters>,
    /// When the Run phase started, ns since `origin`.
    run_start_ns: AtomicU64,
    /// Every client has finished (ends the pacing thread).
    stopped: AtomicBool,
    login_start: Mutex<Option<Instant>>,
    /// The last `LIST-OK` line a lister of this share checked name by name and found to
    /// name exactly the run's clients (see [`Client::list_ok`]).
    roster: Mutex<Option<Arc<[u8]>>>,
    /// For a TLS target: the connector every client shakes hands with, or why there is none.
    tls: Option<Result<tcpchat_tls::client::Connector, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only counters are updated under these locks; a panic elsewhere cannot leave them
    // inconsistent, so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn progress(&self) -> Counters {
        let totals = lock(&self.totals);
        Counters {
            logged_in: totals.logged_in,
            failures: totals.failures,
            sent: self.sent.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            ..Counters::default()
        }
    }

    fn local(&self, global: usize) -> Option<usize> {
        global
            .checked_sub(self.share.first)
            .filter(|l| *l < self.share.count)
    }

    fn since_origin(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin)
    }
}

/// How often a share reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Bytes read per `read`.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes read per `read` by clients that send nothing after login.
const LOGIN_CHUNK_BYTES: usize = 2048;
/// Latency samples a client keeps before adding them to the share's histogram.
const SAMPLE_BATCH: usize = 1024;
/// A client whose unsent bytes pass this has a server that stopped reading.
const MAX_UNSENT_BYTES: usize = 64 << 20;

/// Runs one share to completion: waits for [`Phase::Login`], reports `LoggedIn` when every
/// client is in or has failed, runs until [`Phase::Stop`], drains, reports `Done`.
pub async fn run_share(
    share: Share,
    mut phase: watch::Receiver<Phase>,
    events: mpsc::UnboundedSender<ShareEvent>,
) {
    let tls =
        share.plan.tls.as_ref().map(|t| {
            tcpchat_tls::client::Connector::new(t.ca.as_deref()).map_err(|e| e.to_string())
        });
    let state = Arc::new(State {
        flows: (0..share.count).map(|_| Flow::default()).collect(),
        direct: (0..share.count)
            .map(|_| Mutex::new(Direct::default()))
            .collect(),
        logins: Semaphore::new(
            share
                .plan
                .login_concurrency
                .clamp(1, Semaphore::MAX_PERMITS),
        ),
        share,
        origin: Instant::now(),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        totals: Mutex::new(Counters::default()),
        run_start_ns: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        login_start: Mutex::new(None),
        roster: Mutex::new(None),
        tls,
    });
    if phase.wait_for(|p| *p >= Phase::Login).await.is_err() {
        return;
    }
    *lock(&state.login_start) = Some(Instant::now());
    let mut tasks = tokio::task::JoinSet::new();
    for local in 0..state.share.count {
        tasks.spawn(client(Arc::clone(&state), local, phase.clone()));
    }
    let ticker = state.share.plan.scenario.rate().map(|_| {
        let state = Arc::clone(&state);
        std::thread::spawn(move || tick_schedule(&state))
    });

    // Progress, the end of the login phase, and the delivered count when Run ends.
    let count = state.share.count as u64;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut reported_login = false;
    let mut delivered_at_stop = None;
    let mut coordinator_gone = false;
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            _ = tick.tick() => {}
            changed = phase.changed(), if !coordinator_gone => {
                if changed.is_err() {
                    coordinator_gone = true;
                    if *phase.borrow() < Phase::Stop {
                        // Gone mid-run: nobody will read a result.
                        tasks.abort_all();
                        return;
                    }
                }
            }
        }
        let counts = state.progress();
        if !reported_login && counts.logins_done() >= count {
            reported_login = true;
            let login = lock(&state.totals).clone();
            let _ = events.send(ShareEvent::LoggedIn(login));
        }
        if delivered_at_stop.is_none() && *phase.borrow() >= Phase::Stop {
            delivered_at_stop = Some(counts.delivered);
        }
        let _ = events.send(ShareEvent::Progress(counts));
    }
    state.stopped.store(true, Ordering::Release);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    let counts = state.progress();
    if !reported_login {
        let login = lock(&state.totals).clone();
        let _ = events.send(ShareEvent::LoggedIn(login));
    }
    let mut totals = std::mem::take(&mut *lock(&state.totals));
    totals.delivered_in_window = delivered_at_stop.unwrap_or(counts.delivered);
    let _ = events.send(ShareEvent::Progress(counts));
    let _ = events.send(ShareEvent::Done(totals));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    LoggingIn,
    Ready,
    Running,
    Stopping,
}

/// How client `index` speaks: to its partner, or in the room.
fn codec_of(plan: &crate::plan::Plan, index: usize) -> Codec {
    let name = plan.name(index);
    if plan.scenario.in_room() {
        Codec::room(plan.dialect, ROOM, &name)
    } else {
        let partner = plan.scenario.partner(index, plan.clients);
        Codec::new(plan.dialect, &plan.name(partner.unwrap_or(index)))
    }
}

/// One client from connect to close.
async fn client(state: Arc<State>, local: usize, mut phase: watch::Receiver<Phase>) {
    let plan = &state.share.plan;
    let index = state.share.first + local;
    let name = plan.name(index);
    let partner = plan.scenario.partner(index, plan.clients);
    let codec = codec_of(plan, index);

    // Logins in progress are bounded; the permit is held until this one is answered.
    let permit = state.logins.acquire().await;
    let started = Instant::now();
    let deadline = started + plan.login_timeout;
    let target = plan.target_of(index);
    let opened = async {
        let tcp = connect(target, index, plan.spread_sources).await?;
        if let Some(ws) = &plan.ws {
            return Conn::ws(tcp, ws, ws_read_buffer(plan))
                .await
                .map_err(io::Error::other);
        }
        match (&state.tls, &plan.tls) {
            (Some(Ok(connector)), Some(t)) => Conn::tls(tcp, &t.host, connector)
                .await
                .map_err(io::Error::other),
            (Some(Err(why)), _) => Err(io::Error::other(why.clone())),
            _ => Ok(Conn::plain(tcp)),
        }
    };
    let stream = match tokio::time::timeout_at(deadline, opened).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let kind = if e.kind() == io::ErrorKind::ConnectionRefused {
                Failure::Refused
            } else {
                Failure::Other
            };
            return fail(&state, kind, format!("cannot connect to {target}: {e}"));
        }
        Err(_) => {
            return fail(
                &state,
                Failure::Timeout,
                format!(
                    "no connection to {} within {:?}",
                    target, plan.login_timeout
                ),
            );
        }
    };
    stream.set_nodelay();

    let mut c = Client {
        state: &state,
        local,
        stream,
        codec,
        wbuf: Vec::new(),
        wpos: 0,
        stage: Stage::LoggingIn,
        started,
        pending_acks: Vec::new(),
        samples: Vec::new(),
        orders: Vec::new(),
        order_base: 0,
        counters: Counters::default(),
        failure: None,
        lister: plan.scenario.is_lister(index),
        list_sent_at: None,
        list_slots: 0,
        verify_lists: false,
        seen: Vec::new(),
        roster: None,
        direct: false,
    };
    c.codec.login(&mut c.wbuf, &name);
    // Incoming flows: the partner's (pairs) or everyone's (fan-in recipient).
    match plan.scenario {
        Scenario::Throughput { .. } | Scenario::Latency { .. } | Scenario::ListSend { .. } => {
            if let Some(p) = partner.and_then(|p| state.local(p)) {
                c.order_base = p;
                c.orders = vec![OrderCheck::default()];
            }
        }
        Scenario::Fanin { .. } if index == 0 => {
            c.orders = vec![OrderCheck::default(); state.share.count];
        }
        // Every member hears every sender (all in this share: see `run::validate`).
        Scenario::Room { .. } => {
            let senders = plan.scenario.senders(plan.clients).min(state.share.count);
            c.orders = vec![OrderCheck::default(); senders];
        }
        _ => {}
    }
    let out_flow =
        (partner.is_some() || plan.scenario.room_sender(index)).then(|| &state.flows[local]);
    let pacer = plan.scenario.pacer(index, plan.clients);
    let list_pacer = plan.scenario.list_pacer(index);
    let window = match plan.scenario {
        Scenario::Throughput { window } | Scenario::Fanin { window } => window,
        _ => 0,
    };

    let mut framer = Framer::new(if c.lister {
        list_line_bytes(plan)
    } else {
        READ_CHUNK_BYTES
    });
    // Clients that only log in read a few short lines, and so do list-send's thousands of
    // slow senders: a small buffer keeps tens of thousands of them cheap to set up.
    let busy = match plan.scenario {
        Scenario::ListSend { .. } => c.lister,
        s => s.sends(),
    };
    let chunk = if busy {
        READ_CHUNK_BYTES
    } else {
        LOGIN_CHUNK_BYTES
    };
    let mut rbuf = vec![0u8; chunk];
    let mut permit = Some(permit);
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    let mut drain_deadline = None;
    let mut run_start = Duration::ZERO;

    loop {
        if c.stage != Stage::LoggingIn {
            permit.take();
        }
        if let Some(f) = c.failure.take() {
            return fail(&state, f.0, f.1);
        }
        // Top up sends.
        if c.stage == Stage::Running {
            if let Some(flow) = out_flow.filter(|_| !c.direct) {
                let before = c.counters.sent;
                if let Some(pacer) = &pacer {
                    let now = state.since_origin(Instant::now());
                    let due = pacer.due(run_start, now);
                    while c.counters.sent < due {
                        let intended = pacer.intended(run_start, c.counters.sent);
                        // The bench's own lateness, beside the latency it is part of.
                        let lag = now.saturating_sub(intended).as_micros();
                        c.counters
                            .send_lag
                            .record_micros(u64::try_from(lag).unwrap_or(u64::MAX));
                        c.send(index, intended.as_nanos() as u64);
                    }
                    sleep
                        .as_mut()
                        .reset(state.origin + pacer.intended(run_start, c.counters.sent));
                } else {
                    let now_ns = state.since_origin(Instant::now()).as_nanos() as u64;
                    let delivered = flow.delivered.load(Ordering::Acquire);
                    while c.counters.sent - delivered < window {
                        c.send(index, now_ns);
                    }
                }
                if c.counters.sent > before {
                    flow.sent.store(c.counters.sent, Ordering::Release);
                    state
                        .sent
                        .fetch_add(c.counters.sent - before, Ordering::Relaxed);
                }
            }
            if let Some(p) = &list_pacer {
                // Open loop: one LIST per slot; a slot that finds the last LIST unanswered
                // (or that this client woke too late for) is skipped, not made up later,
                // so a slow server sees the offered rate and no more.
                let now = Instant::now();
                let due = p.due(run_start, state.since_origin(now));
                if due > c.list_slots {
                    let mut missed = due - c.list_slots;
                    if c.list_sent_at.is_none() {
                        c.codec.list(&mut c.wbuf);
                        c.list_sent_at = Some(now);
                        missed -= 1;
                    }
                    c.counters.list_skipped += missed;
                    c.list_slots = due;
                }
                // Tokio's millisecond timer is fine here: LIST time is measured from when
                // the LIST was written, not from its slot.
                sleep
                    .as_mut()
                    .reset(state.origin + p.intended(run_start, c.list_slots));
            } else if c.lister && c.list_sent_at.is_none() {
                // Closed loop: the next LIST once the last one is answered.
                c.codec.list(&mut c.wbuf);
                c.list_sent_at = Some(Instant::now());
            }
        }
        if let Err(e) = c.flush() {
            c.lost_connection(&format!("write failed: {e}"));
            break;
        }
        if c.wbuf.len() > MAX_UNSENT_BYTES || c.direct_unsent() > MAX_UNSENT_BYTES {
            c.lost_connection("the server stopped reading (64 MiB unsent)");
            break;
        }
        if c.stage == Stage::Stopping {
            if c.drained(out_flow) {
                break;
            }
            if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let waiting_flow = c.stage == Stage::Running && out_flow.is_some();
        let timed = match c.stage {
            Stage::LoggingIn | Stage::Stopping => true,
            // A sender the pacing thread writes for has no timer of its own: `sleep` still
            // holds the login deadline, which would fire, and fire again, once passed.
            Stage::Running => {
                (pacer.is_some() && out_flow.is_some() && !c.direct) || list_pacer.is_some()
            }
            Stage::Ready => false,
        };
        tokio::select! {
            biased;
            changed = phase.changed(), if c.stage != Stage::Stopping => {
                let p = if changed.is_err() { Phase::Stop } else { *phase.borrow_and_update() };
                match (c.stage, p) {
                    (Stage::Ready, Phase::Run) => {
                        c.stage = Stage::Running;
                        // The first client to see Run fixes the schedule's start for all.
                        let now = state.since_origin(Instant::now()).as_nanos().max(1) as u64;
                        let start = match state.run_start_ns.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire) {
                            Ok(_) => now,
                            Err(earlier) => earlier,
                        };
                        run_start = Duration::from_nanos(start);
                        // A plain socket's paced messages are written by the pacing thread.
                        if pacer.is_some() && out_flow.is_some() {
                            if let Some(fd) = c.stream.plain_fd() {
                                let mut d = lock(&state.direct[local]);
                                d.unsent.extend_from_slice(&c.wbuf[c.wpos..]);
                                c.wbuf.clear();
                                c.wpos = 0;
                                d.sent = c.counters.sent;
                                d.fd = Some(fd);
                                c.direct = true;
                            }
                        }
                    }
                    (Stage::Ready | Stage::Running, Phase::Stop) => {
                        c.stage = Stage::Stopping;
                        c.stop_direct();
                        if let Some(flow) = out_flow {
                            flow.finished.store(true, Ordering::Release);
                        }
                        let d = Instant::now() + plan.drain_timeout;
                        drain_deadline = Some(d);
                        sleep.as_mut().reset(Instant::now());
                    }
                    _ => {}
                }
            }
            ready = c.stream.readable() => {
                if let Err(e) = ready {
                    c.lost_connection(&format!("read failed: {e}"));
                    break;
                }
                match c.stream.try_read(&mut rbuf) {
                    Ok(0) => {
                        if c.stage == Stage::LoggingIn {
                            return fail(&state, Failure::Closed, "the server closed the connection before answering the login".into());
                        }
                        if c.stage != Stage::Stopping || !c.drained(out_flow) {
                            c.lost_connection("the server closed the connection");
                        }
                        break;
                    }
                    Ok(n) => {
                        let now = Instant::now();
                        // A LIST-OK must name every client only while all are logged in:
                        // until this share has seen Stop (read after these bytes arrived,
                        // so a client of this share that left on Stop is excluded).
                        c.verify_lists = c.stage == Stage::Running && *phase.borrow() < Phase::Stop;
                        let mut input = &rbuf[..n];
                        loop {
                            match framer.next_line(&mut input) {
                                Ok(Some(line)) => c.handle_line(line, now),
                                Ok(None) => break,
                                Err(_) => c.problem("a line from the server is longer than 64 KiB"),
                            }
                        }
                        c.flush_acks();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        if c.stage == Stage::LoggingIn {
                            return fail(&state, Failure::Closed, format!("connection lost before the login reply: {e}"));
                        }
                        c.lost_connection(&format!("read failed: {e}"));
                        break;
                    }
                }
            }
            ready = c.stream.writable(), if c.wpos < c.wbuf.len() || c.stream.wants_write() || c.direct_unsent() > 0 => {
                if let Err(e) = ready {
                    c.lost_connection(&format!("write failed: {e}"));
                    break;
                }
            }
            // Window mode: the recipient received some; rate mode: the pacing thread says a
            // message is due.
            () = notified(out_flow), if waiting_flow => {}
            () = &mut sleep, if timed => {
                match c.stage {
                    Stage::LoggingIn => {
                        return fail(&state, Failure::Timeout, format!("no login reply within {:?}", plan.login_timeout));
                    }
                    Stage::Stopping => {
                        // Poll the drain condition (incoming flows finish elsewhere).
                        sleep.as_mut().reset(Instant::now() + Duration::from_millis(10));
                    }
                    _ => {}
                }
            }
        }
    }
    c.finish();
}

/// A WebSocket client's read buffer (its codec allocates it up front): small for clients
/// that only log in or idle, as the TCP clients' read chunk is.
fn ws_read_buffer(plan: &crate::plan::Plan) -> usize {
    if plan.scenario.sends() {
        READ_CHUNK_BYTES
    } else {
        LOGIN_CHUNK_BYTES
    }
}

/// The longest `LIST-OK` a lister accepts: every client of the run, twice over for other
/// users the server may have online.
fn list_line_bytes(plan: &crate::plan::Plan) -> usize {
    let name = plan.name(plan.clients.saturating_sub(1)).len() + 1;
    (2 * plan.clients * name + READ_CHUNK_BYTES).max(READ_CHUNK_BYTES)
}

/// The open-loop clock: sends each message of this share's senders at its intended time.
///
/// Tokio's timer wheel has millisecond granularity, which would add up to a millisecond of
/// the bench's own lateness to every latency. A dedicated thread sleeping with a 1 ns timer
/// slack wakes within microseconds and writes everything due (see [`Pacer`]) to a plain
/// socket itself ([`Direct`]); a sender it cannot write for (TLS, WebSocket, or a task not
/// yet running) is woken to send instead, as every sender was before.
fn tick_schedule(state: &State) {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let plan = &state.share.plan;
    let senders: Vec<(usize, Pacer, Codec)> = (0..state.share.count)
        .filter_map(|l| {
            let index = state.share.first + l;
            let pacer = plan.scenario.pacer(index, plan.clients)?;
            Some((l, pacer, codec_of(plan, index)))
        })
        .collect();
    if senders.is_empty() {
        return;
    }
    let start = loop {
        if state.stopped.load(Ordering::Acquire) {
            return;
        }
        match state.run_start_ns.load(Ordering::Acquire) {
            0 => std::thread::sleep(Duration::from_micros(200)),
            ns => break Duration::from_nanos(ns),
        }
    };
    let origin = state.origin.into_std();
    let mut lag = crate::stats::Latency::new();
    // Senders' schedules interleave in index order: the m-th tick is sender m mod count's
    // (m / count)-th message.
    let tick = plan.pace_tick;
    let mut woke = std::time::Instant::now();
    for m in 0u64.. {
        if state.stopped.load(Ordering::Acquire) {
            break;
        }
        let (local, pacer, codec) = &senders[(m % senders.len() as u64) as usize];
        let at = origin + pacer.intended(start, m / senders.len() as u64);
        let now = std::time::Instant::now();
        if at > now {
            let until = at.max(woke + tick);
            std::thread::sleep(until - now);
            woke = std::time::Instant::now();
        }
        let sender = DirectSender {
            state,
            local: *local,
            index: state.share.first + local,
            pacer,
            codec,
            start,
            origin,
        };
        if !sender.send_due(&mut lag) {
            state.flows[*local].notify.notify_one();
        }
    }
    lock(&state.totals).send_lag.merge(&lag);
}

/// One sender as the pacing thread sees it.
struct DirectSender<'a> {
    state: &'a State,
    local: usize,
    index: usize,
    pacer: &'a Pacer,
    codec: &'a Codec,
    start: Duration,
    origin: std::time::Instant,
}

impl DirectSender<'_> {
    /// Writes every message of this sender due by now, recording each one's lag; false if
    /// its socket is not the thread's to write (then its task must be woken to send).
    fn send_due(&self, lag: &mut crate::stats::Latency) -> bool {
        let state = self.state;
        let mut d = lock(&state.direct[self.local]);
        let Some(fd) = d.fd else {
            return false;
        };
        let now = std::time::Instant::now().saturating_duration_since(self.origin);
        let due = self.pacer.due(self.start, now);
        if d.sent >= due {
            return true;
        }
        let queued = !d.unsent.is_empty();
        let size = state.share.plan.size;
        let before = d.sent;
        while d.sent < due {
            let intended = self.pacer.intended(self.start, d.sent);
            lag.record_micros(
                u64::try_from(now.saturating_sub(intended).as_micros()).unwrap_or(u64::MAX),
            );
            let header = Header {
                sender: self.index as u32,
                seq: d.sent,
                intended_ns: intended.as_nanos() as u64,
            };
            let out = &mut d.unsent;
            self.codec
                .send(out, |body| message::encode(body, size, header));
            d.sent += 1;
        }
        if !queued {
            // Nothing ahead of these bytes: write them now, and leave what the socket does
            // not take (or all of it, on an error the task will meet too) to the task.
            let bytes = &d.unsent[..];
            // SAFETY: `fd` is the open socket of this sender's task, which takes it back
            // (under this lock) before its socket closes; `bytes` is a live buffer.
            let n = unsafe {
                libc::send(
                    fd,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            let n = usize::try_from(n).unwrap_or(0);
            d.unsent.drain(..n);
        }
        let sent = d.sent;
        state.flows[self.local].sent.store(sent, Ordering::Release);
        state.sent.fetch_add(sent - before, Ordering::Relaxed);
        let leftover = !d.unsent.is_empty();
        drop(d);
        if leftover {
            state.flows[self.local].notify.notify_one();
        }
        true
    }
}

async fn notified(flow: Option<&Flow>) {
    match flow {
        Some(f) => f.notify.notified().await,
        None => std::future::pending().await,
    }
}

fn fail(state: &State, kind: Failure, why: String) {
    let mut totals = lock(&state.totals);
    totals.failures.record(kind);
    totals.first_failure.get_or_insert(why);
}

/// Connects from a source address spread over 127.0.0.0/8 when the target is loopback, so
/// the 4-tuples (and local ports) of many thousands of connections never run out.
async fn connect(target: SocketAddr, index: usize, spread: bool) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if spread && target.ip().is_loopback() && target.is_ipv4() {
        bind_no_port(&socket);
        let host = 1 + (index % 250) as u8;
        let octet = 1 + ((index / 250) % 200) as u8;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, octet, host));
        socket.bind(SocketAddr::new(source, 0))?;
    }
    socket.connect(target).await
}

/// Lets the kernel pick the local port at `connect` time, from the full 4-tuple, instead of
/// reserving one per source address at `bind` (`IP_BIND_ADDRESS_NO_PORT`, Linux ≥ 4.2).
fn bind_no_port(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor, a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

struct Client<'s> {
    state: &'s State,
    local: usize,
    stream: Conn,
    codec: Codec,
    wbuf: Vec<u8>,
    wpos: usize,
    stage: Stage,
    started: Instant,
    /// Deliveries counted in this read, per sender (local index), not yet published.
    pending_acks: Vec<(usize, u64)>,
    samples: Vec<u64>,
    orders: Vec<OrderCheck>,
    order_base: usize,
    /// This client's counts, merged into the share's when it ends.
    counters: Counters,
    failure: Option<(Failure, String)>,
    /// Sends `LIST` in a loop (list-send).
    lister: bool,
    /// When the outstanding `LIST` was sent.
    list_sent_at: Option<Instant>,
    /// Open-loop `LIST` slots passed so far (sent or skipped).
    list_slots: u64,
    /// Whether `LIST-OK`s of the current read must name every client of the run.
    verify_lists: bool,
    /// The run's clients named by the `LIST-OK` being checked, one bit each.
    seen: Vec<u64>,
    /// This client's copy of the share's checked `LIST-OK` line.
    roster: Option<Arc<[u8]>>,
    /// The pacing thread writes this sender's messages ([`Direct`]); everything this task
    /// writes then goes through the same queue, so the stream stays in order.
    direct: bool,
}

impl Drop for Client<'_> {
    /// The socket closes with the client: the pacing thread must not write to its
    /// descriptor (or to the next socket that reuses the number) after that.
    fn drop(&mut self) {
        self.stop_direct();
    }
}

impl Client<'_> {
    fn send(&mut self, index: usize, intended_ns: u64) {
        let size = self.state.share.plan.size;
        let header = Header {
            sender: index as u32,
            seq: self.counters.sent,
            intended_ns,
        };
        self.codec
            .send(&mut self.wbuf, |out| message::encode(out, size, header));
        self.counters.sent += 1;
    }

    /// Bytes waiting in this sender's [`Direct`] queue.
    fn direct_unsent(&self) -> usize {
        if !self.direct {
            return 0;
        }
        lock(&self.state.direct[self.local]).unsent.len()
    }

    /// Takes the socket back from the pacing thread (at Stop, or when the client ends):
    /// from here on it sends nothing, and what it sent is this client's count.
    fn stop_direct(&mut self) {
        if !self.direct {
            return;
        }
        let mut d = lock(&self.state.direct[self.local]);
        if d.fd.take().is_some() {
            self.counters.sent = d.sent;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.direct {
            return self.flush_direct();
        }
        self.stream.push_pending()?;
        while self.wpos < self.wbuf.len() {
            match self.stream.try_write(&self.wbuf[self.wpos..]) {
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > 1 << 20 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// [`Self::flush`] for a sender whose socket the pacing thread writes: this task's own
    /// bytes (a PONG) join the queue behind the thread's, and the queue goes out in order.
    fn flush_direct(&mut self) -> io::Result<()> {
        let mut d = lock(&self.state.direct[self.local]);
        d.unsent.extend_from_slice(&self.wbuf[self.wpos..]);
        self.wbuf.clear();
        self.wpos = 0;
        let mut written = 0;
        let result = loop {
            if written == d.unsent.len() {
                break Ok(());
            }
            match self.stream.try_write(&d.unsent[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        d.unsent.drain(..written);
        result
    }

    fn problem(&mut self, what: &str) {
        self.counters.protocol_errors += 1;
        self.counters
            .first_problem
            .get_or_insert_with(|| what.to_owned());
    }

    fn lost_connection(&mut self, why: &str) {
        self.counters.disconnected += 1;
        let name = self
            .state
            .share
            .plan
            .name(self.state.share.first + self.local);
        self.counters
            .first_problem
            .get_or_insert_with(|| format!("{name}: {why}"));
    }

    fn handle_line(&mut self, line: &[u8], now: Instant) {
        if self.lister && self.verify_lists && self.list_sent_at.is_some() && self.is_roster(line) {
            // The same bytes as a reply already checked name by name: right, and no need
            // to parse 10,000 names again (see `list_ok`).
            self.list_answered(now);
            return;
        }
        let event = self.codec.parse(line);
        match (self.stage, event) {
            (_, Event::Ping(token)) => {
                let token = token.to_vec();
                self.codec.pong(&mut self.wbuf, &token);
            }
            (Stage::LoggingIn, Event::LoggedIn) if self.codec.in_room() => {
                // In once the room is joined: the run starts with every member in it.
                self.codec.join(&mut self.wbuf);
            }
            (Stage::LoggingIn, Event::LoggedIn | Event::Joined) => {
                self.stage = Stage::Ready;
                let us = now.saturating_duration_since(self.started).as_micros() as u64;
                let all_in = lock(&self.state.login_start)
                    .map(|start| now.saturating_duration_since(start).as_micros() as u64);
                let mut totals = lock(&self.state.totals);
                totals.logged_in += 1;
                totals.login_latency.record_micros(us);
                totals.all_in_us = totals.all_in_us.max(all_in.unwrap_or(0));
            }
            (Stage::LoggingIn, Event::Refused(r)) => {
                let kind = match r {
                    Refusal::Busy => Failure::Busy,
                    Refusal::InUse => Failure::InUse,
                };
                self.failure = Some((
                    kind,
                    format!("login refused: {}", String::from_utf8_lossy(line)),
                ));
            }
            (Stage::LoggingIn, Event::ProtocolError) => {
                let kind = match self.codec.dialect() {
                    // An IRC error numeric during registration: the server turned us away.
                    Dialect::Irc => Failure::Busy,
                    Dialect::Classic => Failure::Protocol,
                };
                let hint = if self.codec.in_room() {
                    " (to the login or the JOIN: does the server offer rooms?)"
                } else {
                    ""
                };
                self.failure = Some((
                    kind,
                    format!(
                        "unexpected login reply: {}{hint}",
                        String::from_utf8_lossy(line)
                    ),
                ));
            }
            (Stage::LoggingIn, _) => {}
            (_, Event::Delivery { from, body }) => self.delivery(from, body, now),
            (_, Event::ListOk(names)) if self.lister => self.list_ok(line, &names, now),
            (_, Event::ProtocolError) if self.lister && self.list_sent_at.is_some() => {
                // A lister sends nothing but LIST: this is the answer to it, and not one
                // that parses as a LIST-OK.
                self.list_sent_at = None;
                self.counters.list_errors += 1;
                let what = format!("LIST answered with: {}", String::from_utf8_lossy(line));
                self.problem(&what);
            }
            (_, Event::SendOk) => self.counters.acknowledged += 1,
            (_, Event::SendFailed) => {
                self.counters.send_failed += 1;
                self.counters
                    .first_problem
                    .get_or_insert_with(|| "a message was refused: recipient not logged in".into());
            }
            (_, Event::Joined) => {}
            (_, Event::ProtocolError | Event::LoggedIn | Event::Refused(_) | Event::ListOk(_)) => {
                let what = format!("unexpected line: {}", String::from_utf8_lossy(line));
                self.problem(&what);
            }
            (_, Event::Other) => {}
        }
    }

    fn delivery(&mut self, from: &str, body: &[u8], now: Instant) {
        let plan = &self.state.share.plan;
        let header = match message::decode(body, plan.size) {
            Ok(h) => h,
            Err(e) => {
                self.counters.content_errors += 1;
                self.counters
                    .first_problem
                    .get_or_insert_with(|| format!("bad message body from {from}: {e}"));
                return;
            }
        };
        let sender = header.sender as usize;
        let slot = self
            .state
            .local(sender)
            .filter(|_| plan.index_of(from) == Some(sender))
            .and_then(|l| l.checked_sub(self.order_base).map(|s| (l, s)))
            .filter(|(_, s)| *s < self.orders.len());
        let Some((sender_local, slot)) = slot else {
            self.counters.content_errors += 1;
            self.counters
                .first_problem
                .get_or_insert_with(|| format!("message from unexpected sender {from}"));
            return;
        };
        if !self.orders[slot].observe(header.seq) {
            self.counters
                .first_problem
                .get_or_insert_with(|| format!("message {} from {from} out of order", header.seq));
        }
        self.counters.delivered += 1;
        match self.pending_acks.last_mut() {
            Some((s, n)) if *s == sender_local => *n += 1,
            _ => self.pending_acks.push((sender_local, 1)),
        }
        let now_ns = self.state.since_origin(now).as_nanos() as u64;
        self.samples
            .push(now_ns.saturating_sub(header.intended_ns) / 1000);
        if self.samples.len() >= SAMPLE_BATCH {
            self.flush_samples();
        }
    }

    /// Whether `line` is byte for byte the `LIST-OK` this share last checked in full.
    fn is_roster(&mut self, line: &[u8]) -> bool {
        if self.roster.as_deref() == Some(line) {
            return true;
        }
        let shared = lock(&self.state.roster).clone();
        if shared.as_deref() == Some(line) {
            self.roster = shared;
            return true;
        }
        false
    }

    /// Counts the answer to the outstanding `LIST` as right.
    fn list_answered(&mut self, now: Instant) {
        if let Some(sent_at) = self.list_sent_at.take() {
            self.counters.lists += 1;
            let us = now.saturating_duration_since(sent_at).as_micros() as u64;
            self.counters.list_latency.record_micros(us);
        }
    }

    /// Checks a `LIST-OK` name by name: while everyone is logged in it must name each of
    /// the run's clients once (other users the server has are ignored).
    ///
    /// Checking 10,000 names per reply, over a thousand replies a second, costs the bench
    /// the CPU the server is being measured on, so only a line that differs from the last
    /// one checked comes here: while nobody logs in or out the roster is the same set of
    /// names, and a server that lists it the same way sends the same bytes, which
    /// [`Self::is_roster`] compares instead. That comparison is exact, so a wrong reply is
    /// still caught: it differs, comes here and fails.
    fn list_ok(&mut self, line: &[u8], names: &[tcpchat_proto::Username], now: Instant) {
        if self.list_sent_at.is_none() {
            self.problem("a LIST-OK nobody asked for");
            return;
        }
        let plan = &self.state.share.plan;
        self.seen.clear();
        self.seen.resize(plan.clients.div_ceil(64), 0);
        let mut ours = 0;
        let mut twice = 0;
        for name in names {
            if let Some(i) = plan.index_of(name.as_str()).filter(|i| *i < plan.clients) {
                let (word, bit) = (i / 64, 1u64 << (i % 64));
                if self.seen[word] & bit == 0 {
                    self.seen[word] |= bit;
                    ours += 1;
                } else {
                    twice += 1;
                }
            }
        }
        if !self.verify_lists {
            // Clients may be leaving: the reply is neither checked nor measured.
            self.list_sent_at = None;
            return;
        }
        if ours == plan.clients && twice == 0 {
            self.list_answered(now);
            let checked: Arc<[u8]> = line.into();
            *lock(&self.state.roster) = Some(Arc::clone(&checked));
            self.roster = Some(checked);
        } else {
            self.list_sent_at = None;
            self.counters.list_errors += 1;
            let clients = plan.clients;
            self.counters.problem(|| {
                format!("a LIST-OK named {ours} of the run's {clients} clients ({twice} twice)")
            });
        }
    }

    fn flush_acks(&mut self) {
        if self.codec.in_room() {
            // A room's senders run on the clock alone; each member checks its own arrivals
            // (`drained`), so N members do not wake each sender once per message.
            let total: u64 = self.pending_acks.drain(..).map(|(_, n)| n).sum();
            self.state.delivered.fetch_add(total, Ordering::Relaxed);
            return;
        }
        let mut total = 0;
        for (sender, n) in self.pending_acks.drain(..) {
            let flow = &self.state.flows[sender];
            flow.delivered.fetch_add(n, Ordering::AcqRel);
            flow.notify.notify_one();
            total += n;
        }
        if total > 0 {
            self.state.delivered.fetch_add(total, Ordering::Relaxed);
        }
    }

    fn flush_samples(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        // Recorded into the share's histogram, not a per-client one: a histogram is about
        // 190 KB, and a share has up to thousands of receiving clients.
        let mut totals = lock(&self.state.totals);
        for s in self.samples.drain(..) {
            totals.latency.record_micros(s);
        }
    }

    /// Everything this client sent was received (and, classic, acknowledged), and every
    /// flow it receives has finished and arrived.
    fn drained(&self, out_flow: Option<&Flow>) -> bool {
        if self.codec.in_room() {
            // Own messages are confirmed by the echo (classic), the others' have all arrived
            // here: each sender finished and this member has its last one.
            let acked = self.codec.dialect() != Dialect::Classic
                || self.counters.acknowledged + self.counters.send_failed >= self.counters.sent;
            let incoming = self.orders.iter().enumerate().all(|(s, o)| {
                let flow = &self.state.flows[s];
                s == self.local
                    || (flow.finished.load(Ordering::Acquire)
                        && o.received() >= flow.sent.load(Ordering::Acquire))
            });
            return acked && incoming;
        }
        let own =
            out_flow.is_none_or(|f| f.delivered.load(Ordering::Acquire) >= self.counters.sent);
        let acked = self.codec.dialect() != Dialect::Classic
            || self.counters.acknowledged + self.counters.send_failed >= self.counters.sent;
        let incoming = if self.orders.len() == 1 {
            self.state.flows[self.order_base].complete()
        } else if self.orders.is_empty() {
            true
        } else {
            self.state
                .flows
                .iter()
                .enumerate()
                .all(|(i, f)| i == self.local || f.complete())
        };
        own && acked && incoming && self.list_sent_at.is_none()
    }

    fn finish(mut self) {
        self.stop_direct();
        self.flush_samples();
        let c = &mut self.counters;
        c.order_violations += self.orders.iter().map(|o| o.violations).sum::<u64>();
        if self.orders.len() > 1 {
            let per_sender = self
                .orders
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.local)
                .map(|(_, o)| o.received());
            c.per_sender_min = per_sender.clone().min();
            c.per_sender_max = per_sender.max();
        }
        lock(&self.state.totals).merge(c);
    }
}
