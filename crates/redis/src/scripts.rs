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
//! | `tcpchat:{global}:rooms`, `tcpchat:{n:NODE}:rooms`, `tcpchat:{r:ROOM}:*` | | rooms: see [`ROOM`] and `docs/cluster.md`, "Rooms" |
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

/// Lua shared by the scripts that write or read a history stream (`KEYS` top, epoch, list,
/// given to the functions): Redis's clock in ms, and the retention, applied by popping
/// what is older than it from the list's old end (at most 100 per call, so a call stays
/// short) and by letting the stream's keys expire a retention after its newest message.
macro_rules! stream_helpers {
    () => {
        r"
local function stream_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function stream_pop_expired(list, now, keep)
  for _ = 1, 100 do
    local oldest = redis.call('LINDEX', list, 0)
    if not oldest then return end
    local at = tonumber(string.match(oldest, '^%d+ (%d+) '))
    if at and at + keep > now then return end
    redis.call('LPOP', list)
  end
end
local function stream_expire(top, epoch, list, now, keep)
  if keep <= 0 then return end
  stream_pop_expired(list, now, keep)
  if redis.call('EXISTS', list) == 1 then
    local newest = redis.call('LINDEX', list, -1)
    local at = tonumber(string.match(newest, '^%d+ (%d+) ')) or now
    local ttl = at + keep - now
    if ttl < 1 then ttl = 1 end
    redis.call('PEXPIRE', top, ttl)
    redis.call('PEXPIRE', epoch, ttl)
    redis.call('PEXPIRE', list, ttl)
  elseif redis.call('EXISTS', top) == 1 then
    -- Every message expired: the stream is forgotten (a new epoch next). A stream never
    -- written to keeps the epoch a page gave it.
    redis.call('DEL', top, epoch)
  end
end
"
    };
}

/// A room's slot (`KEYS` = members, where, topic, seq, lines, htop, hepoch, hist:
/// `keys::room`). One room request (`docs/cluster.md`, "Rooms"): checks and changes the room and publishes its line
/// on the room's channel, `KEYS[5]`, in the same step, so Redis's one-script-at-a-time on the
/// room's shard is the room's one order. `ARGV` = the publish verb (`PUBLISH`, `SPUBLISH` on
/// a Redis Cluster), the room, the operation, the asking node, the user, then the
/// operation's arguments.
///
/// Lines: `"*{room} {kind} {rest}"` for every member (`J` joined, `R` joined again after a
/// loss, `P` parted, `K` kicked, `T` topic, `S` said, `A` said and kept in the room's
/// history, `A {offset} {time} {from} {body}`: `docs/cluster.md`, "History"); `"^{node} {user} {room} {kind}
/// {rest}"` for one member only, in the room's order (the topic after its `JOIN`, its
/// members list). Returns `{answer, ...}`: `OK` or the refusal (`NOT-MEMBER`, `NOT-OWNER`,
/// `ROOM-FULL`, `NO-SUCH-MEMBER`); `join` / `rejoin` / `part` / `drop` add
/// `{added-or-removed, created-or-emptied}` (1 or 0) for the side indexes; `kick` adds the
/// kicked member's node; `members` asked by a non-member answers `{LIST, names...}`.
const ROOM: &str = concat!(
    stream_helpers!(),
    r"
local pub, r, op, node, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local members, where = KEYS[1], KEYS[2]
local function tell(payload) redis.call(pub, KEYS[5], '*' .. r .. ' ' .. payload) end
local function to_asker(payload)
  redis.call(pub, KEYS[5], '^' .. node .. ' ' .. name .. ' ' .. r .. ' ' .. payload)
end
local function member(who) return redis.call('ZSCORE', members, who) ~= false end
local function topic_to_asker()
  local t = redis.call('GET', KEYS[3])
  if t then to_asker('T ' .. t) end
end
local function add(who)
  local created = redis.call('EXISTS', members) == 0 and 1 or 0
  redis.call('ZADD', members, redis.call('INCR', KEYS[4]), who)
  redis.call('HSET', where, who, node)
  return created
end
local function remove(who)
  redis.call('ZREM', members, who)
  redis.call('HDEL', where, who)
  if redis.call('ZCARD', members) == 0 then
    redis.call('DEL', members, where, KEYS[3], KEYS[4])
    return 1
  end
  return 0
end
if op == 'join' then
  -- ARGV[7] = 1: the asker's node does not have it in the room. Then a member of that name
  -- is a leftover of an earlier login whose leaving never reached Redis: it joins again.
  if member(name) and ARGV[7] == '1' then
    redis.call('HSET', where, name, node)
    tell('J ' .. name)
    topic_to_asker()
    return {'OK', 1, 0}
  end
  if member(name) then
    to_asker('J ' .. name)
    topic_to_asker()
    return {'OK', 0, 0}
  end
  if redis.call('ZCARD', members) >= tonumber(ARGV[6]) then return {'ROOM-FULL'} end
  local created = add(name)
  tell('J ' .. name)
  topic_to_asker()
  return {'OK', 1, created}
end
if op == 'rejoin' then
  if member(name) then
    redis.call('HSET', where, name, node)
    return {'OK', 0, 0}
  end
  local created = add(name)
  tell('R ' .. name)
  return {'OK', 1, created}
end
if op == 'drop' then
  if redis.call('HGET', where, name) ~= node then return {'OK', 0, 0} end
  tell('P ' .. name)
  return {'OK', 1, remove(name)}
end
if op == 'members' then
  local names = redis.call('ZRANGE', members, 0, -1)
  if member(name) then
    to_asker('M ' .. table.concat(names, ','))
    return {'OK'}
  end
  table.insert(names, 1, 'LIST')
  return names
end
if not member(name) then return {'NOT-MEMBER'} end
if op == 'say' then
  -- ARGV[7..9] = cap, retention ms (0: none), an epoch for a new stream: history is kept.
  if ARGV[7] then
    local now = stream_now()
    local offset = redis.call('INCR', KEYS[6])
    -- A new stream (its keys go together): its epoch, unless a page gave it one already.
    if offset == 1 then redis.call('SET', KEYS[7], ARGV[9], 'NX') end
    redis.call('RPUSH', KEYS[8], offset .. ' ' .. now .. ' ' .. name .. ' ' .. ARGV[6])
    redis.call('LTRIM', KEYS[8], -tonumber(ARGV[7]), -1)
    local keep = tonumber(ARGV[8])
    if keep > 0 then
      -- The newest message is this one: the stream lapses a retention from now. What is
      -- older than the retention leaves from the old end every 16th message (one LINDEX,
      -- usually): storage stays within the cap meanwhile, and a page applies it exactly.
      if offset % 16 == 0 then stream_pop_expired(KEYS[8], now, keep) end
      redis.call('PEXPIRE', KEYS[6], keep)
      redis.call('PEXPIRE', KEYS[7], keep)
      redis.call('PEXPIRE', KEYS[8], keep)
    end
    tell('A ' .. offset .. ' ' .. now .. ' ' .. name .. ' ' .. ARGV[6])
    return {'OK'}
  end
  tell('S ' .. name .. ' ' .. ARGV[6])
  return {'OK'}
end
if op == 'part' then
  tell('P ' .. name)
  return {'OK', 1, remove(name)}
end
if redis.call('ZRANGE', members, 0, 0)[1] ~= name then return {'NOT-OWNER'} end
if op == 'topic' then
  if ARGV[6] then
    redis.call('SET', KEYS[3], name .. ' ' .. ARGV[6])
    tell('T ' .. name .. ' ' .. ARGV[6])
  else
    redis.call('DEL', KEYS[3])
    tell('T ' .. name)
  end
  return {'OK'}
end
if op == 'kick' then
  local target = ARGV[6]
  local at = redis.call('HGET', where, target)
  if not at then return {'NO-SUCH-MEMBER'} end
  tell('K ' .. target .. ' ' .. name)
  remove(target)
  return {'OK', at}
end
return {'BAD-OP'}
"
);

/// A history stream's slot (`KEYS` = top, epoch, list: `keys::room_stream`). A page
/// (`docs/cluster.md`, "History"): `ARGV` = below (0: the newest), count, retention ms (0:
/// none), an epoch for a stream that does not exist yet. Applies the retention first, then
/// returns `{epoch, top, entries...}`, the entries (`"OFFSET TIME FROM BODY"`) oldest first.
/// The list's offsets are consecutive, so the page is one `LRANGE` by index.
const STREAM_PAGE: &str = concat!(
    stream_helpers!(),
    r"
local below, count, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
stream_expire(KEYS[1], KEYS[2], KEYS[3], stream_now(), keep)
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  -- A stream with nothing kept: its epoch, kept for a retention (or until written).
  epoch = ARGV[4]
  redis.call('SET', KEYS[2], epoch)
  if keep > 0 then redis.call('PEXPIRE', KEYS[2], keep) end
  redis.call('DEL', KEYS[1], KEYS[3])
end
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
local len = redis.call('LLEN', KEYS[3])
local first = top - len + 1
if below == 0 or below > top + 1 then below = top + 1 end
local stop = below - first - 1
local start = stop - count + 1
if start < 0 then start = 0 end
local out = {epoch, top}
if stop >= 0 and len > 0 then
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], start, stop)) do table.insert(out, e) end
end
return out
"
);

/// A user's slot (`KEYS` = top, epoch, list, holder, delivered: `keys::user_stream`). A
/// direct message to an account (`docs/cluster.md`, "History"): `ARGV` = the mode, from,
/// body, cap, retention ms (0: none), an epoch for a new stream. Mode `q` (a `history`
/// sender, the account not on any node): stored only if nobody holds the name, else
/// `{'HELD'}`, decided with the holder key in this one step; `l`: numbered on the holder's
/// node and queued live (the delivered mark moves to it); `h`: numbered on the holder's node
/// while its login catches up (the catch-up carries it). Returns `{'OK', offset, time}`.
const DIRECT_SEND: &str = concat!(
    stream_helpers!(),
    r"
local mode = ARGV[1]
if mode == 'q' and redis.call('EXISTS', KEYS[4]) == 1 then return {'HELD'} end
local now = stream_now()
local offset = redis.call('INCR', KEYS[1])
if offset == 1 then
  redis.call('SET', KEYS[2], ARGV[6], 'NX')
  redis.call('DEL', KEYS[5])
end
redis.call('RPUSH', KEYS[3], offset .. ' ' .. now .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
if mode == 'l' then redis.call('SET', KEYS[5], offset) end
local keep = tonumber(ARGV[5])
if keep > 0 then
  if offset % 16 == 0 then stream_pop_expired(KEYS[3], now, keep) end
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[3], keep)
  redis.call('PEXPIRE', KEYS[5], keep)
end
return {'OK', offset, now}
"
);

/// A user's slot (`KEYS` as [`DIRECT_SEND`]). A login's catch-up read: `ARGV` = after, limit,
/// retention ms (0: none), an epoch for a stream that does not exist yet. Applies the
/// retention first; returns `{epoch, top, delivered, oldest (0: none kept), entries...}`,
/// the entries (`"OFFSET TIME FROM BODY"`) those after `after`, oldest first, at most
/// `limit`.
const DIRECT_READ: &str = concat!(
    stream_helpers!(),
    r"
local after, limit, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
stream_expire(KEYS[1], KEYS[2], KEYS[3], stream_now(), keep)
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[2], epoch)
  if keep > 0 then redis.call('PEXPIRE', KEYS[2], keep) end
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[5])
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[5]) end
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
local delivered = tonumber(redis.call('GET', KEYS[5]) or '0')
if delivered > top then delivered = top end
local len = redis.call('LLEN', KEYS[3])
local first = top - len + 1
local out = {epoch, top, delivered, 0}
if len > 0 then out[4] = first end
if limit > 0 and after < top and len > 0 then
  local start = after + 1 - first
  if start < 0 then start = 0 end
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], start, start + limit - 1)) do
    table.insert(out, e)
  end
end
return out
"
);

/// A user's slot (`KEYS` as [`DIRECT_SEND`]): a catch-up queued everything up to `ARGV[1]`:
/// the delivered mark moves there (never back, never past the top), expiring with the top.
const DIRECT_DELIVERED: &str = r"
local upto = tonumber(ARGV[1])
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
if upto > top or tonumber(redis.call('GET', KEYS[5]) or '0') >= upto then return 0 end
redis.call('SET', KEYS[5], upto)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[5], ttl) end
return 1
";

/// A node's slot (`KEYS` = users or rooms): the set becomes exactly `ARGV` (ends a re-sync).
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

/// A dead node's slot (`KEYS` = alive, users, rooms): forgets its name and room sets if it is
/// still dead. Returns 1 if it did (the caller then drops it from the registry), 0 if it came
/// back.
const BURY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
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
    pub room: &'static str,
    pub stream_page: &'static str,
    pub direct_send: &'static str,
    pub direct_read: &'static str,
    pub direct_delivered: &'static str,
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
    room: ROOM,
    stream_page: STREAM_PAGE,
    direct_send: DIRECT_SEND,
    direct_read: DIRECT_READ,
    direct_delivered: DIRECT_DELIVERED,
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
