//! The Lua scripts of the cluster's single-slot steps.
//!
//! Each script touches the keys of **one hash tag** (`keys.rs`), given as `KEYS`, so it runs
//! on one shard of a Redis Cluster exactly as on a standalone Redis, and stays atomic there.
//! An operation that concerns a name *and* a node (claim, release, re-sync, reaping) is a
//! short sequence of such steps (`steps.rs`); what each keeps atomic:
//!
//! - **A name is claimed by one single-key script** ([`CLAIM`]): compare-and-set on its
//!   `holder` key, so two nodes racing for one name cannot both win. Whether the current
//!   holder's node is alive is read just before, in its own slot; the claim then replaces the
//!   holder only if it is still the one seen dead.
//! - **A node's name set is a side index**, written after the claim and rewritten whole by
//!   every re-sync; `LIST` and reaping read it, the holder key decides.
//! - **Presence events are published by the node that made the change**, after its step
//!   succeeded and before it answers the client, on the same connection as its messages.
//!
//! The keys, by tag:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `tcpchat:{global}:epoch` | string | present while Redis holds cluster state; gone after a flush or a restart without persistence |
//! | `tcpchat:{global}:settling` | string, expires | present for a while after the state was lost: logins wait while live nodes re-register |
//! | `tcpchat:{global}:nodes` | set | node ids that have registered |
//! | `tcpchat:{n:NODE}:alive` | string, expires | the node's lease, renewed while it lives |
//! | `tcpchat:{n:NODE}:users` | set | names the node holds (side index) |
//! | `tcpchat:{n:NODE}:watching` | string, expires | present while the node has presence watchers: only such nodes are sent presence events |
//! | `tcpchat:{n:NODE}:deliver` | pub/sub channel (sharded on Redis Cluster) | frames of messages for the node's users (`!`) and results for its own frames (`#`), see `hub/router.rs`; presence events, `",+{name}"` / `",-{name}"`; `"~{name} {token}"` ends that login of a name (its account logged in elsewhere) |
//! | `tcpchat:{u:NAME}:holder` | string | `"{node} {token}"`: who holds the name |
//!
//! A name belongs to its holder only while the holder's node is alive: a dead node's names are
//! free as soon as its `alive` key expires, without anyone deleting them (the next renewal of
//! any live node reaps them and tells the watchers).

/// Global slot (`KEYS` = epoch, settling, nodes). Notices a Redis that lost the cluster state
/// (no epoch): marks it as holding state again and starts the settle period (`ARGV[1]` ms),
/// during which logins are refused so that every live node can re-register first. With
/// `ARGV[2]` a node id, registers it. Returns `{fresh, settling, nodes...}`.
const GLOBAL: &str = r"
local fresh = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], '1')
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  fresh = 1
end
if ARGV[2] and ARGV[2] ~= '' then redis.call('SADD', KEYS[3], ARGV[2]) end
local out = {fresh, redis.call('EXISTS', KEYS[2])}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[3])) do out[#out + 1] = n end
return out
";

/// A node's slot (`KEYS` = alive, watching): `{alive, watching}`, each 0 or 1. Reads only.
const STATE: &str = r"
return {redis.call('EXISTS', KEYS[1]), redis.call('EXISTS', KEYS[2])}
";

/// This node's slot (`KEYS` = alive, watching): extends the lease (`ARGV[1]` ms) if it is
/// still there. Returns 1, or 0 if the lease was gone (expired, or the state was lost): the
/// node must then re-register. With `ARGV[2]` = `1` (the node has watchers) their flag is
/// extended too; it is never deleted here (a watcher may have set it since the node looked):
/// without watchers it lapses by itself.
const RENEW: &str = r"
if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[1]) end
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'XX') then return 1 end
return 0
";

/// This node's slot (`KEYS` = alive, users): starts a re-sync: sets the lease (`ARGV[1]` ms)
/// and returns the names the set held.
const REGISTER: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('SMEMBERS', KEYS[2])
";

/// This node's slot (`KEYS` = users): ends a re-sync: the set becomes exactly `ARGV`.
const SET_USERS: &str = r"
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 500 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
return #ARGV
";

/// A node's slot (`KEYS` = alive, users): its names if it is alive, else an empty list
/// (`LIST` skips dead nodes; reaping frees their names).
const NAMES: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
return redis.call('SMEMBERS', KEYS[2])
";

/// A dead node's slot (`KEYS` = alive, users): forgets its name set if it is still dead.
/// Returns 1 if it did (the caller then drops it from the registry), 0 if it came back.
const BURY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
return 1
";

/// A name's slot (`KEYS` = holder): `ARGV` = node, token, expected. Takes the name for
/// `"{node} {token}"` if it is free, already this node's, or still held as `expected` (a
/// holder the caller found dead). Returns `OK`, or the holder it found.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if (not v) or string.match(v, '^(%S+)') == ARGV[1] or v == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
  return 'OK'
end
return v
";

/// A name's slot (`KEYS` = holder): takes the name for `"{node} {token}"` whoever holds it
/// (`LOGIN` with an account's password). Returns the previous holder, or `""`.
const TAKE: &str = r"
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return v or ''
";

/// A name's slot (`KEYS` = holder): frees it if it is still held as `"{node} {token}"`.
/// Returns 1 (freed), 0 (a newer login of the name on this node: left alone) or 2 (held
/// elsewhere or by no one: nothing to free here).
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] .. ' ' .. ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
if v and string.match(v, '^(%S+)') == ARGV[1] then return 0 end
return 2
";

/// A name's slot (`KEYS` = holder): frees it if node `ARGV[1]` holds it (any token).
/// Returns 1 if it did. For reaping a dead node, a clean leave, and names a re-sync finds
/// this node no longer holds.
const DROP: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^(%S+)') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// The scripts, sent as `EVAL` (inside pipelines, which `EVALSHA`'s load-on-`NOSCRIPT`
/// cannot follow; Redis caches each compiled body by its digest).
pub(crate) struct Scripts {
    pub global: &'static str,
    pub state: &'static str,
    pub renew: &'static str,
    pub register: &'static str,
    pub set_users: &'static str,
    pub names: &'static str,
    pub bury: &'static str,
    pub claim: &'static str,
    pub take: &'static str,
    pub release: &'static str,
    pub drop: &'static str,
}

pub(crate) const SCRIPTS: Scripts = Scripts {
    global: GLOBAL,
    state: STATE,
    renew: RENEW,
    register: REGISTER,
    set_users: SET_USERS,
    names: NAMES,
    bury: BURY,
    claim: CLAIM,
    take: TAKE,
    release: RELEASE,
    drop: DROP,
};

/// Adds `EVAL script` on `keys` (one hash tag) with `args` to `pipe`.
pub(crate) fn eval<'p>(
    pipe: &'p mut redis::Pipeline,
    script: &str,
    keys: &[String],
) -> &'p mut redis::Pipeline {
    pipe.cmd("EVAL").arg(script).arg(keys.len());
    for k in keys {
        pipe.arg(k);
    }
    pipe
}
