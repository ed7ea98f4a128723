//! The Lua scripts that make each cluster operation one atomic Redis call.
//!
//! Every operation that reads and then writes (claim a name only if free, publish only to a
//! live owner) runs as a script, so no other node can act between the read and the write, and
//! each costs one round trip. The keys they touch are listed in `docs/cluster.md`:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `tcpchat:epoch` | string | present while Redis holds cluster state; gone after a flush or a restart without persistence |
//! | `tcpchat:settling` | string, expires | present for a while after the state was lost: logins wait while live nodes re-register |
//! | `tcpchat:nodes` | set | node ids that have registered |
//! | `tcpchat:alive:{node}` | string, expires | the node's lease, renewed while it lives |
//! | `tcpchat:users:{node}` | set | names the node holds |
//! | `tcpchat:user:{name}` | string | `"{node} {token}"`: who holds the name |
//! | `tcpchat:watching:{node}` | string, expires | present while the node has presence watchers: only such nodes are sent presence events |
//! | `tcpchat:deliver:{node}` | pub/sub channel | frames of messages for the node's users (`!`) and results for its own frames (`#`), see `hub/router.rs`; presence events, `",+{name}"` / `",-{name}"`; `"~{name} {token}"` ends that login of a name (its account logged in elsewhere); room lines `"*{room} {kind} {rest}"` and a room's answers for one user `"^{user} {room} {kind} {rest}"` (`rooms.rs`) |
//! | `tcpchat:{r:#room}:*`, `tcpchat:rooms`, `tcpchat:joined:{name}`, `tcpchat:roomers:{node}` | | rooms; see `docs/cluster.md`, "Rooms" |
//!
//! Presence events travel on the same channel as the messages, published by the same script
//! that changes the name (claim, release, re-sync, reaping a dead node), so a node hears of a
//! user's login before any message from that user, and of their departure after the last.
//!
//! A name belongs to its holder only while the holder's node is alive: a dead node's names are
//! free as soon as its `alive` key expires, without anyone deleting them (they are cleaned up
//! lazily by the next `LIST`).
//!
//! Scripts compute key names from their arguments, which a standalone Redis (or a primary with
//! replicas) allows; a Redis Cluster would need every key under one hash tag.

use redis::Script;

/// Shared prologue: `ARGV[1]` is always the calling node, `ARGV[2]` the settle time in ms,
/// `ARGV[3]` the node lease in ms.
///
/// `fresh_store()` notices a Redis that lost the cluster state (no `tcpchat:epoch`), marks it
/// as holding state again and starts the settle period, during which logins are refused so
/// that every live node can re-register its users before anyone else claims their names.
const PROLOGUE: &str = r"
local node = ARGV[1]
local function owner_of(v) return string.match(v, '^(%S+)') end
local function alive(n) return redis.call('EXISTS', 'tcpchat:alive:' .. n) == 1 end
-- Live nodes with presence watchers, the ones presence events go to; the caller itself left
-- out unless `self_too`. A node without watchers is sent nothing.
local function live_nodes(self_too)
  local out = {}
  for _, n in ipairs(redis.call('SMEMBERS', 'tcpchat:nodes')) do
    if (self_too or n ~= node) and redis.call('EXISTS', 'tcpchat:watching:' .. n) == 1
        and alive(n) then
      out[#out + 1] = n
    end
  end
  return out
end
local function tell(nodes, payload)
  for _, n in ipairs(nodes) do redis.call('PUBLISH', 'tcpchat:deliver:' .. n, payload) end
end
-- Rooms (docs/cluster.md, Rooms). A room line goes to every node with members in the
-- room as `*{room} {kind} {rest}`; the nodes encode it (J joined, P parted, K kicked,
-- T topic, S said). Redis runs one script at a time and delivers each channel in publish
-- order, so every node gets one room's lines in one order.
-- One hash tag per room ({r:#room}): on Redis Cluster all of a room's keys share a slot.
local function rkey(r, what) return 'tcpchat:{r:' .. r .. '}:' .. what end
local function room_tell(r, payload)
  for _, n in ipairs(redis.call('HKEYS', rkey(r, 'nodes'))) do
    redis.call('PUBLISH', 'tcpchat:deliver:' .. n, '*' .. r .. ' ' .. payload)
  end
end
local function room_remove(r, name)
  local n = redis.call('HGET', rkey(r, 'where'), name)
  if not n then return end
  redis.call('ZREM', rkey(r, 'members'), name)
  redis.call('HDEL', rkey(r, 'where'), name)
  if redis.call('HINCRBY', rkey(r, 'nodes'), n, -1) <= 0 then
    redis.call('HDEL', rkey(r, 'nodes'), n)
  end
  redis.call('SREM', 'tcpchat:joined:' .. name, r)
  redis.call('SREM', 'tcpchat:roomers:' .. n, r .. ' ' .. name)
  if redis.call('ZCARD', rkey(r, 'members')) == 0 then
    redis.call('DEL', rkey(r, 'members'), rkey(r, 'where'), rkey(r, 'nodes'), rkey(r, 'topic'),
      rkey(r, 'seq'))
    redis.call('SREM', 'tcpchat:rooms', r)
  end
end
-- Everyone in the room hears that `name` left, the leaver included, then it is gone.
local function room_part(r, name)
  room_tell(r, 'P ' .. name)
  room_remove(r, name)
end
-- A node's members leave all their rooms (a dead node's, when it is reaped).
local function rooms_of_node_part(n)
  local set = 'tcpchat:roomers:' .. n
  for _, entry in ipairs(redis.call('SMEMBERS', set)) do
    local r, name = string.match(entry, '^(%S+) (%S+)$')
    if r then room_part(r, name) end
  end
  redis.call('DEL', set)
end
-- Frees a dead node's names and tells every live node, this one included, that they left.
local function reap(n)
  local set = 'tcpchat:users:' .. n
  local nodes = nil
  for _, name in ipairs(redis.call('SMEMBERS', set)) do
    local key = 'tcpchat:user:' .. name
    local v = redis.call('GET', key)
    if v and owner_of(v) == n then
      redis.call('DEL', key)
      nodes = nodes or live_nodes(true)
      tell(nodes, ',-' .. name)
    end
  end
  redis.call('DEL', set)
  rooms_of_node_part(n)
  redis.call('SREM', 'tcpchat:nodes', n)
end
local function reap_dead()
  for _, n in ipairs(redis.call('SMEMBERS', 'tcpchat:nodes')) do
    if not alive(n) then reap(n) end
  end
end
local function fresh_store()
  if redis.call('EXISTS', 'tcpchat:epoch') == 1 then return false end
  redis.call('SET', 'tcpchat:epoch', '1')
  redis.call('SET', 'tcpchat:settling', '1', 'PX', ARGV[2])
  return true
end
";

/// Claims `ARGV[4]` with token `ARGV[5]`. Returns `OK`, `IN-USE`, `SETTLING` (state was lost
/// and nodes are re-registering) or `STALE` (this node's own lease lapsed; it must
/// re-register first).
const CLAIM: &str = r"
if fresh_store() then return 'SETTLING' end
if redis.call('EXISTS', 'tcpchat:settling') == 1 then return 'SETTLING' end
if not alive(node) then return 'STALE' end
local name = ARGV[4]
local key = 'tcpchat:user:' .. name
local v = redis.call('GET', key)
if v then
  local owner = owner_of(v)
  if owner ~= node then
    if alive(owner) then return 'IN-USE' end
    redis.call('SREM', 'tcpchat:users:' .. owner, name)
  end
end
redis.call('SET', key, node .. ' ' .. ARGV[5])
redis.call('SADD', 'tcpchat:users:' .. node, name)
tell(live_nodes(false), ',+' .. name)
return 'OK'
";

/// Takes `ARGV[4]` with token `ARGV[5]` whoever holds it: `LOGIN` with the account's
/// password closes an earlier session of the account (`docs/protocol.md`, "accounts"). A
/// live other holder is told on its channel with an eviction (`"~{name} {its token}"`).
/// Returns as [`CLAIM`], never `IN-USE`.
const TAKE_OVER: &str = r"
if fresh_store() then return 'SETTLING' end
if redis.call('EXISTS', 'tcpchat:settling') == 1 then return 'SETTLING' end
if not alive(node) then return 'STALE' end
local name = ARGV[4]
local key = 'tcpchat:user:' .. name
local v = redis.call('GET', key)
if v then
  local owner = owner_of(v)
  if owner ~= node then
    redis.call('SREM', 'tcpchat:users:' .. owner, name)
    if alive(owner) then
      local token = string.match(v, ' (%S+)$') or ''
      redis.call('PUBLISH', 'tcpchat:deliver:' .. owner, '~' .. name .. ' ' .. token)
    end
  end
end
redis.call('SET', key, node .. ' ' .. ARGV[5])
redis.call('SADD', 'tcpchat:users:' .. node, name)
return 'OK'
";

/// Frees `ARGV[4]` if it is still held with token `ARGV[5]`. A newer login of the same name
/// on this node (another token) is left alone.
const RELEASE: &str = r"
local name = ARGV[4]
local key = 'tcpchat:user:' .. name
local v = redis.call('GET', key)
if v == node .. ' ' .. ARGV[5] then
  redis.call('DEL', key)
  tell(live_nodes(false), ',-' .. name)
elseif v and owner_of(v) == node then
  return 0
end
redis.call('SREM', 'tcpchat:users:' .. node, name)
return 1
";

/// Extends this node's lease. Returns 1, or 0 if the lease was gone (expired, or the state
/// was lost): the node must then re-register with [`SYNC`]. On the way, reaps nodes whose
/// lease expired, so their users' departures reach every presence watcher within a lease
/// and a renewal (one `EXISTS` per registered node). `ARGV[4]` is `1` while the node has
/// presence watchers: their flag is extended with the lease. It is never deleted here (a
/// watcher may have set it since the node looked): without watchers it lapses by itself.
const RENEW: &str = r"
fresh_store()
reap_dead()
if ARGV[4] == '1' then redis.call('SET', 'tcpchat:watching:' .. node, '1', 'PX', ARGV[3]) end
if redis.call('SET', 'tcpchat:alive:' .. node, '1', 'PX', ARGV[3], 'XX') then return 1 end
return 0
";

/// Makes Redis agree with this node: `ARGV[4..]` are `name, token` pairs of every user the
/// node holds. Registers the node, claims each name unless a live node holds it, and frees
/// names Redis still has for this node that it no longer holds. Returns the names that
/// another live node holds (they were claimed elsewhere while this node was cut off).
const SYNC: &str = r"
fresh_store()
redis.call('SET', 'tcpchat:alive:' .. node, '1', 'PX', ARGV[3])
redis.call('SADD', 'tcpchat:nodes', node)
local set = 'tcpchat:users:' .. node
local old = redis.call('SMEMBERS', set)
redis.call('DEL', set)
local was = {}
for _, name in ipairs(old) do was[name] = true end
local others = live_nodes(false)
local keep, conflicts = {}, {}
for i = 4, #ARGV, 2 do
  local name = ARGV[i]
  local key = 'tcpchat:user:' .. name
  local v = redis.call('GET', key)
  local owner = v and owner_of(v)
  if owner and owner ~= node and alive(owner) then
    conflicts[#conflicts + 1] = name
  else
    redis.call('SET', key, node .. ' ' .. ARGV[i + 1])
    redis.call('SADD', set, name)
    keep[name] = true
    -- Back after a loss (an empty Redis, an expired lease): the others may have been told
    -- it left. A repeat is harmless: clients treat presence as a set.
    if not was[name] then tell(others, ',+' .. name) end
  end
end
for _, name in ipairs(old) do
  if not keep[name] then
    local key = 'tcpchat:user:' .. name
    local v = redis.call('GET', key)
    if v and owner_of(v) == node then
      redis.call('DEL', key)
      tell(others, ',-' .. name)
    end
  end
end
return conflicts
";

/// Everyone held by a live node. Nodes whose lease expired are cleaned up on the way. With
/// `ARGV[4]` = `1` (a new presence watcher's first list) the node is first flagged as
/// watching, in the same step, so every change after this list is published to it.
const LIST: &str = r"
if ARGV[4] == '1' then redis.call('SET', 'tcpchat:watching:' .. node, '1', 'PX', ARGV[3]) end
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', 'tcpchat:nodes')) do
  if alive(n) then
    for _, name in ipairs(redis.call('SMEMBERS', 'tcpchat:users:' .. n)) do out[#out + 1] = name end
  else
    reap(n)
  end
end
return out
";

/// Where each of `ARGV[4..]` lives: `"{node} {token}"`, or `""` if the name is free, held by
/// a dead node or by the calling node (whose local lookup already failed). Read-only: the
/// route cache's authority (`router.rs`).
pub(crate) const LOOKUP: &str = r"
local out = {}
for i = 4, #ARGV do
  local v = redis.call('GET', 'tcpchat:user:' .. ARGV[i])
  local owner = v and owner_of(v)
  if owner and owner ~= node and alive(owner) then out[#out + 1] = v else out[#out + 1] = '' end
end
return out
";

/// One room request (`docs/cluster.md`, "Rooms"): `ARGV[4]` the operation, `ARGV[5]` the
/// room, `ARGV[6]` the asking user (on this node), `ARGV[7..]` its arguments. Checks and
/// changes the room and publishes its line to every node with members, in one step. Answers
/// meant for the asker alone in the room's order (the topic after its `JOIN`, a members
/// list) go to this node as `"^{user} {room} {kind} {rest}"`, after what the script
/// published before them. Returns `OK` or the refusal (`NOT-MEMBER`, `NOT-OWNER`,
/// `ROOM-LIMIT`, `ROOM-FULL`, `NO-SUCH-MEMBER`); `rooms` returns the room names and `leave`
/// (every room of the user) the number left.
const ROOM: &str = r"
local op, r, name = ARGV[4], ARGV[5], ARGV[6]
if op == 'rooms' then return redis.call('SMEMBERS', 'tcpchat:rooms') end
if op == 'leave' then
  local rooms = redis.call('SMEMBERS', 'tcpchat:joined:' .. name)
  for _, room in ipairs(rooms) do
    if redis.call('HGET', rkey(room, 'where'), name) == node then room_part(room, name) end
  end
  return #rooms
end
local members = rkey(r, 'members')
local function member(who) return redis.call('ZSCORE', members, who) ~= false end
local function to_asker(payload)
  redis.call('PUBLISH', 'tcpchat:deliver:' .. node, '^' .. name .. ' ' .. r .. ' ' .. payload)
end
local function topic_to_asker()
  local t = redis.call('GET', rkey(r, 'topic'))
  if t then to_asker('T ' .. t) end
end
if op == 'join' then
  if member(name) then
    to_asker('J ' .. name)
    topic_to_asker()
    return 'OK'
  end
  if redis.call('SCARD', 'tcpchat:joined:' .. name) >= tonumber(ARGV[7]) then return 'ROOM-LIMIT' end
  if redis.call('ZCARD', members) >= tonumber(ARGV[8]) then return 'ROOM-FULL' end
  redis.call('ZADD', members, redis.call('INCR', rkey(r, 'seq')), name)
  redis.call('HSET', rkey(r, 'where'), name, node)
  redis.call('HINCRBY', rkey(r, 'nodes'), node, 1)
  redis.call('SADD', 'tcpchat:rooms', r)
  redis.call('SADD', 'tcpchat:joined:' .. name, r)
  redis.call('SADD', 'tcpchat:roomers:' .. node, r .. ' ' .. name)
  room_tell(r, 'J ' .. name)
  topic_to_asker()
  return 'OK'
end
if op == 'members' then
  to_asker('M ' .. table.concat(redis.call('ZRANGE', members, 0, -1), ','))
  return 'OK'
end
if not member(name) then return 'NOT-MEMBER' end
if op == 'say' then
  room_tell(r, 'S ' .. name .. ' ' .. ARGV[7])
  return 'OK'
end
if op == 'part' then
  room_part(r, name)
  return 'OK'
end
if redis.call('ZRANGE', members, 0, 0)[1] ~= name then return 'NOT-OWNER' end
if op == 'topic' then
  if ARGV[7] then
    redis.call('SET', rkey(r, 'topic'), name .. ' ' .. ARGV[7])
    room_tell(r, 'T ' .. name .. ' ' .. ARGV[7])
  else
    redis.call('DEL', rkey(r, 'topic'))
    room_tell(r, 'T ' .. name)
  end
  return 'OK'
end
if op == 'kick' then
  local target = ARGV[7]
  if not member(target) then return 'NO-SUCH-MEMBER' end
  room_tell(r, 'K ' .. target .. ' ' .. name)
  room_remove(r, target)
  return 'OK'
end
return 'BAD-OP'
";

/// Removes this node and frees all its names (clean shutdown).
const LEAVE: &str = r"
local set = 'tcpchat:users:' .. node
local others = live_nodes(false)
for _, name in ipairs(redis.call('SMEMBERS', set)) do
  local key = 'tcpchat:user:' .. name
  local v = redis.call('GET', key)
  if v and owner_of(v) == node then
    redis.call('DEL', key)
    tell(others, ',-' .. name)
  end
end
rooms_of_node_part(node)
redis.call('DEL', set, 'tcpchat:alive:' .. node, 'tcpchat:watching:' .. node)
redis.call('SREM', 'tcpchat:nodes', node)
return 1
";

/// The compiled scripts (each knows its SHA1; Redis loads them on first use and again after
/// a restart).
/// How many registered nodes hold a live lease (for the `tcpchat_cluster_nodes_alive`
/// metric). Reads only.
const NODES_ALIVE: &str = r"
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', 'tcpchat:nodes')) do
  if alive(m) then n = n + 1 end
end
return n
";

pub(crate) struct Scripts {
    pub nodes_alive: Script,
    pub claim: Script,
    pub take_over: Script,
    pub release: Script,
    pub renew: Script,
    pub sync: Script,
    pub list: Script,
    pub leave: Script,
    /// [`LOOKUP`], sent as `EVAL` inside the router's pipelines.
    pub lookup: String,
    pub room: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PROLOGUE}{body}"));
        Self {
            nodes_alive: s(NODES_ALIVE),
            claim: s(CLAIM),
            take_over: s(TAKE_OVER),
            release: s(RELEASE),
            renew: s(RENEW),
            sync: s(SYNC),
            list: s(LIST),
            leave: s(LEAVE),
            lookup: format!("{PROLOGUE}{LOOKUP}"),
            room: s(ROOM),
        }
    }
}

/// The channel a node's messages are published on.
pub(crate) fn deliver_channel(node: &str) -> String {
    format!("tcpchat:deliver:{node}")
}
