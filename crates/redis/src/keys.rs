//! Every Redis key and channel name the cluster uses, built in one place, with the slot each
//! shares (`docs/cluster.md`, "Keys").
//!
//! Redis Cluster hashes a key by its *hash tag*, the text between the first `{` and the next
//! `}`, so keys with one tag live in one slot and one script or `MULTI` may touch them all.
//! Every operation here touches one tag at a time, and the same layout runs on a standalone
//! Redis (where the braces are just characters), so both run one code path. Three tags:
//!
//! | tag | keys | why together |
//! |---|---|---|
//! | `{global}` | `epoch`, `settling`, `nodes`, `rooms` | the cluster's own state: "did Redis lose it", the registry of nodes |
//! | `{n:NODE}` | `alive`, `users`, `watching`, `rooms`, the `deliver` channel | one node's lease, its name set (a side index of the names it holds), its presence flag, its sharded pub/sub channel |
//! | `{u:NAME}` | `holder`; `htop`, `hepoch`, `hist`, `hdelivered` (direct history) | one name's holder: claimed by one single-key script, so a name is taken atomically; its direct stream, numbered with "is it held" in one step |
//! | `{r:ROOM}` | `members`, `where`, `topic`, `seq`, the `lines` channel; `htop`, `hepoch`, `hist` (history) | one room: its script checks, changes, numbers and publishes in one step, on one shard |
//!
//! Accounts keep their own keys (`tcpchat:account:NAME`, hashed whole, and the index
//! `tcpchat:accounts`), so an upgrade keeps every registered account.
//!
//! Other features that add per-user, per-node or per-room data (direct history) should build their
//! keys with [`user_key`] / [`node_key`] / [`room_key`] so they share the slot of the name,
//! node or room they belong to, and any script touching them together stays on one shard.

/// A key in the slot of the cluster's global state: `tcpchat:{global}:{what}`.
pub(crate) fn global_key(what: &str) -> String {
    format!("tcpchat:{{global}}:{what}")
}

/// A key in the slot of node `node`: `tcpchat:{n:NODE}:{what}`.
pub fn node_key(node: &str, what: &str) -> String {
    format!("tcpchat:{{n:{node}}}:{what}")
}

/// A key in the slot of user name `name`: `tcpchat:{u:NAME}:{what}`.
pub fn user_key(name: &str, what: &str) -> String {
    format!("tcpchat:{{u:{name}}}:{what}")
}

/// Present while Redis holds cluster state; gone after a flush or a restart without
/// persistence.
pub(crate) fn epoch() -> String {
    global_key("epoch")
}

/// Present (expiring) for a while after the state was lost: logins wait while live nodes
/// re-register.
pub(crate) fn settling() -> String {
    global_key("settling")
}

/// Set of node ids that have registered.
pub(crate) fn nodes() -> String {
    global_key("nodes")
}

/// The node's lease, renewed while it lives.
pub(crate) fn alive(node: &str) -> String {
    node_key(node, "alive")
}

/// Set of names the node holds: a side index of the `holder` keys, repaired by the node's
/// re-sync.
pub(crate) fn users(node: &str) -> String {
    node_key(node, "users")
}

/// Present (expiring) while the node has presence watchers.
pub(crate) fn watching(node: &str) -> String {
    node_key(node, "watching")
}

/// The pub/sub channel of the node's messages, results, presence events and evictions.
/// Sharded pub/sub on Redis Cluster: it lives in the node's slot.
pub(crate) fn deliver(node: &str) -> String {
    node_key(node, "deliver")
}

/// A key in the slot of room `room`: `tcpchat:{r:ROOM}:{what}` (a room name has no brace
/// that could end the tag early, and none is needed: every key of a room is built here, so
/// all share whatever tag its name gives).
pub fn room_key(room: &str, what: &str) -> String {
    format!("tcpchat:{{r:{room}}}:{what}")
}

/// The room's members (`members`, `where`), topic, sequence counter, the pub/sub channel
/// its lines are published on (`lines`), then its history stream (`htop` the newest offset,
/// `hepoch`, `hist` the kept messages: [`room_stream`]), in that order: the room script's
/// `KEYS`.
pub(crate) fn room(room: &str) -> [String; 8] {
    [
        "members", "where", "topic", "seq", "lines", "htop", "hepoch", "hist",
    ]
    .map(|what| room_key(room, what))
}

/// A room's history stream (`docs/cluster.md`, "History"): its newest offset, its epoch,
/// and the list of kept messages (`"OFFSET TIME FROM BODY"`, oldest first, consecutive
/// offsets). It outlives the room's membership keys.
pub(crate) fn room_stream(room: &str) -> [String; 3] {
    ["htop", "hepoch", "hist"].map(|what| room_key(room, what))
}

/// The channel of a room's lines. Sharded pub/sub on Redis Cluster, in the room's slot, so
/// the room's script publishes on it itself.
pub(crate) fn room_lines(room: &str) -> String {
    room_key(room, "lines")
}

/// The room whose lines travel on `channel`, if it is a room's channel.
pub(crate) fn room_of_lines(channel: &[u8]) -> Option<&str> {
    std::str::from_utf8(channel)
        .ok()?
        .strip_prefix("tcpchat:{r:")?
        .strip_suffix("}:lines")
}

/// Set of `"{room} {name}"`, one per room member on the node: a side index, for parting a
/// dead node's members.
pub(crate) fn node_rooms(node: &str) -> String {
    node_key(node, "rooms")
}

/// Set of every room with members, for `ROOMS`: a side index.
pub(crate) fn rooms() -> String {
    global_key("rooms")
}

/// `"{node} {token}"`: who holds the name.
pub(crate) fn holder(name: &str) -> String {
    user_key(name, "holder")
}

/// A user's direct history stream (`docs/cluster.md`, "History"), in the name's slot beside
/// its holder: the newest offset, the epoch, the kept messages (the order the stream
/// helpers of `scripts.rs` take), the holder, the newest offset queued on a login.
pub(crate) fn user_stream(name: &str) -> [String; 5] {
    ["htop", "hepoch", "hist", "holder", "hdelivered"].map(|what| user_key(name, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text Redis Cluster hashes.
    fn tag(key: &str) -> &str {
        let open = key.find('{').expect("tagged");
        let close = key[open..].find('}').expect("closed") + open;
        &key[open + 1..close]
    }

    #[test]
    fn keys_of_one_thing_share_a_tag() {
        assert_eq!(holder("ann"), "tcpchat:{u:ann}:holder");
        assert_eq!(deliver("n1"), "tcpchat:{n:n1}:deliver");
        for k in [alive("n1"), users("n1"), watching("n1"), deliver("n1")] {
            assert_eq!(tag(&k), "n:n1", "{k}");
        }
        for k in room("#r") {
            assert_eq!(tag(&k), "r:#r", "{k}");
        }
        assert_eq!(tag(&node_rooms("n1")), "n:n1");
        assert_eq!(room_of_lines(room_lines("#a}b").as_bytes()), Some("#a}b"));
        assert_eq!(room_of_lines(deliver("n1").as_bytes()), None);
        for k in [epoch(), settling(), nodes(), rooms()] {
            assert_eq!(tag(&k), "global", "{k}");
        }
        assert_eq!(tag(&user_key("ann", "inbox")), tag(&holder("ann")));
        assert_ne!(
            tag(&holder("n1")),
            tag(&alive("n1")),
            "a name is not a node"
        );
    }
}
