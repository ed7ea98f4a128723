//! What a run is asked to do, in a form that can be handed to a worker process.
//!
//! Each scenario's defaults (clients, window, rate, listers, duration...) are written once,
//! in [`ScenarioKind::defaults`]; the command line shows them from there
//! ([`ScenarioKind::defaults_text`]) and [`Plan::new`] fills in whatever the caller left
//! unchosen.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dialect::Dialect;
use crate::pacing::Pacer;

/// A scenario by name, before its parameters are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    Connect,
    Throughput,
    Latency,
    Fanin,
    Idle,
    ListSend,
    Room,
}

/// The room (IRC channel) the `room` scenario's clients join.
pub const ROOM: &str = "#bench";

/// What a scenario runs with when the caller does not say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Clients in the whole run.
    pub clients: usize,
    /// Messages each sender keeps in flight (throughput, fanin).
    pub window: Option<u64>,
    /// Messages/s offered over all senders (latency, list-send).
    pub rate: Option<f64>,
    /// Clients sending `LIST` (list-send).
    pub listers: Option<usize>,
    /// `LIST`s/s offered over all listers (list-send; `None`: closed loop).
    pub list_rate: Option<f64>,
    /// Members that send to the room (room).
    pub senders: Option<usize>,
    /// Length of the measured phase (hold time for idle).
    pub duration: Duration,
    /// Message body size in bytes.
    pub size: usize,
    /// How long one client may take to connect and log in.
    pub login_timeout: Duration,
    /// Logins in progress at once, per process (`usize::MAX`: all).
    pub login_concurrency: usize,
    /// After the measured phase, how long to wait for messages still in flight.
    pub drain_timeout: Duration,
}

/// What the caller chose; every `None` takes the scenario's [`Defaults`].
#[derive(Debug, Clone, Default)]
pub struct Choices {
    pub clients: Option<usize>,
    pub window: Option<u64>,
    pub rate: Option<f64>,
    pub listers: Option<usize>,
    pub list_rate: Option<f64>,
    pub senders: Option<usize>,
    pub duration: Option<Duration>,
    pub size: Option<usize>,
    pub login_timeout: Option<Duration>,
    pub login_concurrency: Option<usize>,
    pub drain_timeout: Option<Duration>,
}

impl ScenarioKind {
    /// Every scenario, in the order the help lists them.
    pub const ALL: [ScenarioKind; 7] = [
        ScenarioKind::Connect,
        ScenarioKind::Throughput,
        ScenarioKind::Latency,
        ScenarioKind::Fanin,
        ScenarioKind::Idle,
        ScenarioKind::ListSend,
        ScenarioKind::Room,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::Connect => "connect",
            ScenarioKind::Throughput => "throughput",
            ScenarioKind::Latency => "latency",
            ScenarioKind::Fanin => "fanin",
            ScenarioKind::Idle => "idle",
            ScenarioKind::ListSend => "list-send",
            ScenarioKind::Room => "room",
        }
    }

    /// The scenario called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// One line saying what the scenario does and measures.
    pub fn about(self) -> &'static str {
        match self {
            ScenarioKind::Connect => {
                "Log in N clients as fast as the server allows: logins/s, time until all are in, failures by kind"
            }
            ScenarioKind::Throughput => {
                "Clients in pairs, each keeping --window messages in flight: delivered messages/s"
            }
            ScenarioKind::Latency => {
                "Open loop at --rate messages/s over all clients: latency percentiles from each message's intended send time"
            }
            ScenarioKind::Fanin => {
                "Every client sends to one hot recipient, each with --window in flight: queueing and backpressure"
            }
            ScenarioKind::Idle => "Hold N logged-in idle clients; with --server-pid, the server's memory per client",
            ScenarioKind::ListSend => {
                "N users online, --listers of them sending LIST (closed loop, or --list-rate LISTs/s over them), the others in pairs at --rate messages/s (open loop): SEND latency under LIST load, LIST-OKs/s"
            }
            ScenarioKind::Room => {
                "One room (IRC: channel) of N members, --senders of them sending to it at --rate messages/s together (open loop): deliveries/s to the other members and their latency"
            }
        }
    }

    /// The scenario's defaults: the one place they are written.
    pub fn defaults(self) -> Defaults {
        let base = Defaults {
            clients: 100,
            window: None,
            rate: None,
            listers: None,
            list_rate: None,
            senders: None,
            duration: Duration::from_secs(10),
            size: 64,
            login_timeout: Duration::from_secs(10),
            login_concurrency: 500,
            drain_timeout: Duration::from_secs(10),
        };
        match self {
            ScenarioKind::Connect => Defaults {
                clients: 2000,
                // The point is the burst: everyone at once.
                login_concurrency: usize::MAX,
                ..base
            },
            ScenarioKind::Throughput => Defaults {
                window: Some(64),
                ..base
            },
            ScenarioKind::Latency => Defaults {
                clients: 200,
                rate: Some(20_000.0),
                ..base
            },
            ScenarioKind::Fanin => Defaults {
                window: Some(8),
                ..base
            },
            ScenarioKind::Idle => Defaults {
                clients: 1000,
                ..base
            },
            ScenarioKind::ListSend => Defaults {
                clients: 10_000,
                rate: Some(5_000.0),
                listers: Some(100),
                ..base
            },
            ScenarioKind::Room => Defaults {
                senders: Some(10),
                rate: Some(1_000.0),
                ..base
            },
        }
    }

    /// One default as the help shows it: `10s` when every scenario has the same, otherwise
    /// `connect 2000, throughput 100, ...` over the scenarios that have one.
    pub fn defaults_text(value: impl Fn(&Defaults) -> Option<String>) -> String {
        let all: Vec<(ScenarioKind, String)> = Self::ALL
            .into_iter()
            .filter_map(|k| value(&k.defaults()).map(|v| (k, v)))
            .collect();
        match all.first() {
            Some((_, v)) if all.len() == Self::ALL.len() && all.iter().all(|(_, w)| w == v) => {
                v.clone()
            }
            _ => all
                .iter()
                .map(|(k, v)| format!("{} {v}", k.name()))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// This scenario with the caller's parameters, or its defaults.
    pub fn scenario(self, choices: &Choices) -> Scenario {
        let d = self.defaults();
        // Every scenario that takes a parameter has a default for it (see `defaults`).
        let window = choices.window.or(d.window).unwrap_or(1);
        let rate = choices.rate.or(d.rate).unwrap_or(1.0);
        let listers = choices.listers.or(d.listers).unwrap_or(1);
        match self {
            ScenarioKind::Connect => Scenario::Connect,
            ScenarioKind::Throughput => Scenario::Throughput { window },
            ScenarioKind::Latency => Scenario::Latency { rate },
            ScenarioKind::Fanin => Scenario::Fanin { window },
            ScenarioKind::Idle => Scenario::Idle,
            ScenarioKind::ListSend => Scenario::ListSend {
                listers,
                rate,
                list_rate: choices.list_rate.or(d.list_rate),
            },
            ScenarioKind::Room => Scenario::Room {
                senders: choices.senders.or(d.senders).unwrap_or(1),
                rate,
            },
        }
    }
}

/// The load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scenario {
    /// Log every client in as fast as the server allows, then leave.
    Connect,
    /// Clients in pairs, each keeping `window` messages in flight to its partner.
    Throughput { window: u64 },
    /// Clients in pairs, together offering `rate` messages/s on a fixed schedule.
    Latency { rate: f64 },
    /// Every client but one sends to client 0, each keeping `window` messages in flight.
    Fanin { window: u64 },
    /// Log every client in and hold the connections open, sending nothing.
    Idle,
    /// Clients `0..listers` send `LIST` and check every reply names all the run's
    /// clients; the others, in pairs, together offer `rate` messages/s on a fixed schedule,
    /// as in `Latency`. Without `list_rate` the listers run a closed loop (the next `LIST`
    /// when the `LIST-OK` arrives), so the `LIST` load grows with the server's speed; with
    /// it they share `list_rate` `LIST`s/s on a fixed schedule, and a lister whose last
    /// `LIST` is still unanswered at its next slot skips that slot.
    #[serde(rename = "list-send")]
    ListSend {
        listers: usize,
        rate: f64,
        #[serde(default)]
        list_rate: Option<f64>,
    },
    /// Every client joins [`ROOM`]; clients `0..senders` together offer `rate` messages/s
    /// to it on a fixed schedule, and every other member receives each of them.
    Room { senders: usize, rate: f64 },
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The scenario without its parameters.
    pub fn kind(&self) -> ScenarioKind {
        match self {
            Scenario::Connect => ScenarioKind::Connect,
            Scenario::Throughput { .. } => ScenarioKind::Throughput,
            Scenario::Latency { .. } => ScenarioKind::Latency,
            Scenario::Fanin { .. } => ScenarioKind::Fanin,
            Scenario::Idle => ScenarioKind::Idle,
            Scenario::ListSend { .. } => ScenarioKind::ListSend,
            Scenario::Room { .. } => ScenarioKind::Room,
        }
    }

    /// Whether clients send messages after logging in.
    pub fn sends(&self) -> bool {
        matches!(
            self,
            Scenario::Throughput { .. }
                | Scenario::Latency { .. }
                | Scenario::Fanin { .. }
                | Scenario::ListSend { .. }
                | Scenario::Room { .. }
        )
    }

    /// The offered rate of an open-loop scenario, messages/s.
    pub fn rate(&self) -> Option<f64> {
        match self {
            Scenario::Latency { rate }
            | Scenario::ListSend { rate, .. }
            | Scenario::Room { rate, .. } => Some(*rate),
            _ => None,
        }
    }

    /// Whether client `index` sends `LIST` in a loop.
    pub fn is_lister(&self, index: usize) -> bool {
        matches!(self, Scenario::ListSend { listers, .. } if index < *listers)
    }

    /// The `LIST` schedule of client `index`, if it is a lister of a list-send with a
    /// `list_rate`: the listers share the rate, staggered evenly.
    pub fn list_pacer(&self, index: usize) -> Option<Pacer> {
        match *self {
            Scenario::ListSend {
                listers,
                list_rate: Some(rate),
                ..
            } if index < listers => Some(Pacer::new(rate, listers, index)),
            _ => None,
        }
    }

    /// Whom client `index` (of `clients`) sends to, if anyone.
    ///
    /// Pairs are `(2k, 2k + 1)`, so a pair never straddles two processes (shares start at
    /// even indices). In list-send a pair with a lister in it does not send: a lister's
    /// partner stays idle.
    pub fn partner(&self, index: usize, clients: usize) -> Option<usize> {
        match self {
            Scenario::Throughput { .. } | Scenario::Latency { .. } => {
                let p = index ^ 1;
                (p < clients).then_some(p)
            }
            Scenario::ListSend { listers, .. } => {
                let p = index ^ 1;
                (p < clients && index >= *listers && p >= *listers).then_some(p)
            }
            Scenario::Fanin { .. } => (index != 0).then_some(0),
            Scenario::Connect | Scenario::Idle | Scenario::Room { .. } => None,
        }
    }

    /// The open-loop schedule of client `index`, if it is a sender of a fixed-rate
    /// scenario: the senders share the rate, staggered evenly.
    pub fn pacer(&self, index: usize, clients: usize) -> Option<Pacer> {
        if let Scenario::Room { senders, rate } = *self {
            let senders = senders.min(clients);
            return (index < senders).then(|| Pacer::new(rate, senders, index));
        }
        self.partner(index, clients)?;
        match *self {
            Scenario::Latency { rate } => Some(Pacer::new(rate, clients, index)),
            Scenario::ListSend { listers, rate, .. } => {
                // Senders are the whole pairs past the listers: indices first..last.
                let first = listers.next_multiple_of(2);
                let last = clients - clients % 2;
                Some(Pacer::new(rate, last - first, index - first))
            }
            _ => None,
        }
    }

    /// Whether client `index` sends to the room (room).
    pub fn room_sender(&self, index: usize) -> bool {
        matches!(self, Scenario::Room { senders, .. } if index < *senders)
    }

    /// Whether the clients meet in [`ROOM`].
    pub fn in_room(&self) -> bool {
        matches!(self, Scenario::Room { .. })
    }

    /// How many deliveries one message makes: every member but its sender in a room
    /// (whose own copy, tcpchat's echo, confirms it as `SEND-OK` does), else one.
    pub fn fanout(&self, clients: usize) -> u64 {
        match self {
            Scenario::Room { .. } => clients.saturating_sub(1) as u64,
            _ => 1,
        }
    }

    /// How many clients send (have a partner, or are a room's senders).
    pub fn senders(&self, clients: usize) -> usize {
        if let Scenario::Room { senders, .. } = self {
            return (*senders).min(clients);
        }
        (0..clients)
            .filter(|i| self.partner(*i, clients).is_some())
            .count()
    }
}

/// Everything every share of the clients needs to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub target: SocketAddr,
    /// More nodes of the same cluster: client `i` connects to `[target, more_targets..][i % n]`,
    /// so partners (`i`, `i ^ 1`) sit on different nodes.
    #[serde(default)]
    pub more_targets: Vec<SocketAddr>,
    pub dialect: Dialect,
    pub scenario: Scenario,
    /// Clients in the whole run.
    pub clients: usize,
    /// Message body size in bytes.
    pub size: usize,
    /// How long the measured phase lasts (message scenarios; hold time for `idle`).
    pub duration: Duration,
    /// How long one client may take to connect and log in.
    pub login_timeout: Duration,
    /// Logins in progress at once, per process.
    pub login_concurrency: usize,
    /// After the measured phase, how long to wait for messages still in flight.
    pub drain_timeout: Duration,
    /// Prefix of every client name in this run, so runs never collide on names.
    pub tag: String,
    /// Spread client source addresses over 127.0.0.0/8 when the target is loopback.
    pub spread_sources: bool,
    /// Open-loop pacing: the shortest sleep of the pacing thread. It wakes at the next
    /// message's intended time, or this long after its last wakeup if that is later, and
    /// sends everything due; so a message may leave up to this late (it is in the bench's
    /// lag, and latency still runs from the intended time). Zero: a wakeup per message.
    #[serde(default = "default_pace_tick")]
    pub pace_tick: Duration,
    /// Connect inside TLS (a `tls://` target); `None`: plain text.
    #[serde(default)]
    pub tls: Option<TlsTarget>,
    /// Connect over WebSocket (a `ws://` target); `None`: the line protocol on TCP.
    #[serde(default)]
    pub ws: Option<WsTarget>,
}

/// How the clients of a TLS run verify the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsTarget {
    /// The name the certificate must be valid for (the host as given).
    pub host: String,
    /// Trust these certificates instead of the system's roots.
    pub ca: Option<std::path::PathBuf>,
}

/// Where a WebSocket run's clients upgrade: `GET {path}` with `Host: {host}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsTarget {
    /// The `Host` header: the URL's `HOST[:PORT]` as given.
    pub host: String,
    /// The URL's path, `/ws` when it has none.
    pub path: String,
}

/// The pacing thread's default shortest sleep: 100 µs. A sleep and its wakeup cost this
/// VM about 12 µs of the bench's core (bench/notes.md, "A cheaper load generator"): a
/// wakeup per message at 20,000 msg/s (every 50 µs) was a quarter of the core, and with
/// this tick it is half that, for at most 100 µs of lag.
pub const DEFAULT_PACE_TICK: Duration = Duration::from_micros(100);

fn default_pace_tick() -> Duration {
    DEFAULT_PACE_TICK
}

impl Plan {
    /// A plan for `kind` against `target` with the caller's `choices` over the scenario's
    /// defaults: classic dialect, one target, source addresses spread, names tagged `tag`.
    pub fn new(target: SocketAddr, kind: ScenarioKind, choices: &Choices, tag: String) -> Plan {
        let d = kind.defaults();
        Plan {
            target,
            more_targets: Vec::new(),
            dialect: Dialect::Classic,
            scenario: kind.scenario(choices),
            clients: choices.clients.unwrap_or(d.clients),
            size: choices.size.unwrap_or(d.size),
            duration: choices.duration.unwrap_or(d.duration),
            login_timeout: choices.login_timeout.unwrap_or(d.login_timeout),
            login_concurrency: choices.login_concurrency.unwrap_or(d.login_concurrency),
            drain_timeout: choices.drain_timeout.unwrap_or(d.drain_timeout),
            tag,
            spread_sources: true,
            pace_tick: DEFAULT_PACE_TICK,
            tls: None,
            ws: None,
        }
    }

    /// Where client `index` connects: the targets in turn.
    pub fn target_of(&self, index: usize) -> SocketAddr {
        match index % (1 + self.more_targets.len()) {
            0 => self.target,
            i => self.more_targets[i - 1],
        }
    }

    /// The name of client `index`.
    pub fn name(&self, index: usize) -> String {
        format!("{}{index}", self.tag)
    }

    /// The client index a name belongs to, if it is one of this run's.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        name.strip_prefix(&self.tag)?.parse().ok()
    }
}

/// One process's part of a run: clients `first..first + count`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    pub plan: Plan,
    pub first: usize,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners() {
        let t = Scenario::Throughput { window: 1 };
        assert_eq!(t.partner(0, 4), Some(1));
        assert_eq!(t.partner(3, 4), Some(2));
        assert_eq!(t.partner(4, 5), None);
        let f = Scenario::Fanin { window: 1 };
        assert_eq!(f.partner(0, 4), None);
        assert_eq!(f.partner(3, 4), Some(0));
        assert_eq!(Scenario::Idle.partner(1, 4), None);
    }

    #[test]
    fn list_send_roles() {
        // 11 clients, 3 listers: 0..3 list, 3 is idle (its partner 2 lists), 4..10 are three
        // sending pairs, 10 has no partner.
        let s = Scenario::ListSend {
            listers: 3,
            rate: 600.0,
            list_rate: None,
        };
        let roles: Vec<_> = (0..11)
            .map(|i| (s.is_lister(i), s.partner(i, 11)))
            .collect();
        assert_eq!(roles[0], (true, None));
        assert_eq!(roles[2], (true, None));
        assert_eq!(roles[3], (false, None));
        assert_eq!(roles[4], (false, Some(5)));
        assert_eq!(roles[9], (false, Some(8)));
        assert_eq!(roles[10], (false, None));
        assert_eq!(s.senders(11), 6);
        // The six senders share 600 msg/s: 100 each, staggered over one interval.
        let p = s.pacer(4, 11).expect("a sender");
        assert_eq!(p.interval(), Duration::from_millis(10));
        assert_eq!(s.pacer(3, 11), None);
        let horizon = Duration::from_secs(1) - Duration::from_nanos(1);
        let offered: u64 = (0..11)
            .filter_map(|i| s.pacer(i, 11))
            .map(|p| p.due(Duration::ZERO, horizon))
            .sum();
        assert_eq!(offered, 600);
    }

    #[test]
    fn listers_share_the_list_rate() {
        // 4 listers sharing 200 LIST/s: one every 20 ms each, staggered 5 ms apart.
        let s = Scenario::ListSend {
            listers: 4,
            rate: 100.0,
            list_rate: Some(200.0),
        };
        let p = s.list_pacer(1).expect("a lister");
        assert_eq!(p.interval(), Duration::from_millis(20));
        assert_eq!(p.intended(Duration::ZERO, 0), Duration::from_millis(5));
        assert_eq!(s.list_pacer(4), None, "not a lister");
        let horizon = Duration::from_secs(1) - Duration::from_nanos(1);
        let offered: u64 = (0..4)
            .filter_map(|i| s.list_pacer(i))
            .map(|p| p.due(Duration::ZERO, horizon))
            .sum();
        assert_eq!(offered, 200);
        let closed = Scenario::ListSend {
            listers: 4,
            rate: 100.0,
            list_rate: None,
        };
        assert_eq!(closed.list_pacer(1), None, "closed loop: no schedule");
    }

    #[test]
    fn defaults_fill_what_was_not_chosen() {
        let target = "127.0.0.1:5378".parse().expect("literal");
        let plan = Plan::new(
            target,
            ScenarioKind::ListSend,
            &Choices::default(),
            "t".into(),
        );
        assert_eq!(plan.clients, 10_000);
        assert_eq!(
            plan.scenario,
            Scenario::ListSend {
                listers: 100,
                rate: 5_000.0,
                list_rate: None,
            }
        );
        let chosen = Choices {
            clients: Some(50),
            listers: Some(5),
            ..Choices::default()
        };
        let plan = Plan::new(target, ScenarioKind::ListSend, &chosen, "t".into());
        assert_eq!((plan.clients, plan.scenario.is_lister(4)), (50, true));
        assert_eq!(
            plan.scenario,
            Scenario::ListSend {
                listers: 5,
                rate: 5_000.0,
                list_rate: None,
            }
        );
        for kind in ScenarioKind::ALL {
            assert_eq!(ScenarioKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.scenario(&Choices::default()).kind(), kind);
        }
    }

    #[test]
    fn defaults_text() {
        assert_eq!(
            ScenarioKind::defaults_text(|d| d.window.map(|w| w.to_string())),
            "throughput 64, fanin 8"
        );
        assert_eq!(
            ScenarioKind::defaults_text(|d| Some(d.size.to_string())),
            "64"
        );
    }
}
