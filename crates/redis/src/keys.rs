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
//! | `{global}` | `epoch`, `settling`, `nodes` | the cluster's own state: "did Redis lose it", the registry of nodes |
//! | `{n:NODE}` | `alive`, `users`, `watching`, the `deliver` channel | one node's lease, its name set (a side index of the names it holds), its presence flag, its sharded pub/sub channel |
//! | `{u:NAME}` | `holder` | one name's holder: claimed by one single-key script, so a name is taken atomically |
//!
//! Accounts keep their own keys (`tcpchat:account:NAME`, hashed whole, and the index
//! `tcpchat:accounts`), so an upgrade keeps every registered account.
//!
//! Other features that add per-user or per-node data (rooms, history) should build their
//! keys with [`user_key`] / [`node_key`] so they share the slot of the name or node they
//! belong to, and any script touching them together stays on one shard.

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

/// `"{node} {token}"`: who holds the name.
pub(crate) fn holder(name: &str) -> String {
    user_key(name, "holder")
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
        for k in [epoch(), settling(), nodes()] {
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
