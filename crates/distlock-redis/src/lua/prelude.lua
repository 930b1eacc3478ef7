-- Shared by every distlock script. KEYS (one hash tag, so one slot):
--   1 H holders zset  owner -> expiry ms      2 K holder kinds hash owner -> kind:count:limit:token
--   3 I info hash     owner -> JSON           4 Q queue zset (score 0) prio8 .. seq16 .. owner32
--   5 W waiters hash  owner -> kind|count|limit|ttl|member|channel
--   6 X waiter expiry zset owner -> expiry ms 7 C fencing-token counter
--   8 N watchers hash (Redlock waiters, not queued) owner -> expiry ms|channel
local H, K, I, Q, W, X, C, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)

local function fmt(n) return string.format('%d', n) end

-- The fencing token: INCR, but never below the server clock in microseconds. A missing
-- counter (restart without persistence) is thus seeded from TIME, and a counter that rolled
-- back (failover to a replica that missed writes) jumps ahead to TIME: neither hands out a
-- smaller token while the clock does not go back and grants stay under one per microsecond.
local function next_token()
  local tok = redis.call('INCR', C)
  if tok <= now_us then
    -- INCR keeps the expiry, so it is set only here: a counter unused for a week vanishes
    -- and is seeded again from TIME, which is larger than any token it gave.
    tok = now_us + 1
    redis.call('SET', C, fmt(tok), 'PX', 604800000)
  end
  return tok
end

local function drop_holder(o)
  redis.call('ZREM', H, o)
  redis.call('HDEL', K, o)
  redis.call('HDEL', I, o)
end

local function parse_waiter(rec)
  local kind, cnt, limit, ttl, member, chan =
    string.match(rec, '^(%a)|(%d+)|(%d+)|(%d+)|([^|]*)|(.*)$')
  return kind, tonumber(cnt), tonumber(limit), tonumber(ttl), member, chan
end

local function drop_waiter(o)
  local rec = redis.call('HGET', W, o)
  if rec then
    local _, _, _, _, member = parse_waiter(rec)
    redis.call('ZREM', Q, member)
    redis.call('HDEL', W, o)
  end
  redis.call('ZREM', X, o)
  redis.call('HDEL', I, o)
end

-- Removes holders and waiters whose time ran out.
local function prune()
  for _, o in ipairs(redis.call('ZRANGEBYSCORE', H, '-inf', now)) do drop_holder(o) end
  for _, o in ipairs(redis.call('ZRANGEBYSCORE', X, '-inf', now)) do drop_waiter(o) end
end

local function holders_state()
  local st = { x = 0, s = 0, p = 0 }
  for _, v in ipairs(redis.call('HVALS', K)) do
    local kind, cnt = string.match(v, '^(%a):(%d+)')
    if kind == 'x' then st.x = st.x + 1
    elseif kind == 's' then st.s = st.s + 1
    else st.p = st.p + tonumber(cnt) end
  end
  return st
end

local function fits(st, kind, cnt, limit)
  if kind == 'x' then return st.x == 0 and st.s == 0 and st.p == 0 end
  if kind == 's' then return st.x == 0 and st.p == 0 end
  return st.x == 0 and st.s == 0 and st.p + cnt <= limit
end

local function add(st, kind, cnt)
  if kind == 'x' then st.x = st.x + 1
  elseif kind == 's' then st.s = st.s + 1
  else st.p = st.p + cnt end
end

local function grant(st, o, kind, cnt, limit, expiry)
  local tok = next_token()
  redis.call('ZADD', H, expiry, o)
  redis.call('HSET', K, o, kind .. ':' .. cnt .. ':' .. limit .. ':' .. fmt(tok))
  add(st, kind, cnt)
  return tok
end

-- Direct hand-off: grants the lock to the live waiters at the head of the queue, in order,
-- while they fit, and sends each one's process `owner:token`. The grant lasts the waiter's
-- TTL from now, as if it had asked now: a waiter that died meanwhile holds up the queue no
-- longer than a holder that died.
local function promote(st)
  while true do
    local head = redis.call('ZRANGE', Q, 0, 0)[1]
    if not head then return end
    local o = string.sub(head, 25)
    local rec = redis.call('HGET', W, o)
    if not rec then
      redis.call('ZREM', Q, head)
    else
      local kind, cnt, limit, ttl, _, chan = parse_waiter(rec)
      if not fits(st, kind, cnt, limit) then return end
      local tok = grant(st, o, kind, cnt, limit, now + ttl)
      redis.call('ZREM', Q, head)
      redis.call('HDEL', W, o)
      redis.call('ZREM', X, o)
      -- The token travels with the notification, so the waiter holds the lock without
      -- another round trip (a lost message is caught by its next re-check).
      redis.call('PUBLISH', chan, o .. ':' .. fmt(tok))
    end
  end
end

-- Remaining ms of the holder that expires first (0 when there is none).
local function wait_hint()
  local first = redis.call('ZRANGE', H, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) - now end
  return 0
end

-- Keys live as long as their longest holder or waiter (+1 s), then vanish on their own.
local function touch()
  local m = 0
  local a = redis.call('ZRANGE', H, -1, -1, 'WITHSCORES')
  if a[2] then m = tonumber(a[2]) end
  local b = redis.call('ZRANGE', X, -1, -1, 'WITHSCORES')
  if b[2] and tonumber(b[2]) > m then m = tonumber(b[2]) end
  if m <= now then
    redis.call('DEL', H, K, I, Q, W, X)
    return
  end
  local ms = fmt(m - now + 1000)
  redis.call('PEXPIRE', H, ms)
  redis.call('PEXPIRE', K, ms)
  redis.call('PEXPIRE', I, ms)
  redis.call('PEXPIRE', Q, ms)
  redis.call('PEXPIRE', W, ms)
  redis.call('PEXPIRE', X, ms)
end

-- Wakes the unqueued waiters (Redlock) once the lock may have become free.
local function notify_watchers()
  local watchers = redis.call('HGETALL', N)
  if #watchers == 0 then return end
  for i = 1, #watchers, 2 do
    local exp, chan = string.match(watchers[i + 1], '^(%d+)|(.*)$')
    if exp and tonumber(exp) > now then redis.call('PUBLISH', chan, watchers[i]) end
  end
  redis.call('DEL', N)
end
