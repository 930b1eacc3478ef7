-- The bit set of `exist_bits()` as flags.
local function present(bits)
  return { holders = bits % 2 == 1, queue = bits % 4 >= 2, watchers = bits >= 4, any = bits > 0 }
end
local function parse_holder(rec)
  local expiry, kind, cnt, limit, tok = string.match(rec, '^(%d+):(%a):(%d+):(%d+):(%d+):')
  return tonumber(expiry), kind, tonumber(cnt), tonumber(limit), tonumber(tok)
end

-- The holder record `rec` with its expiry replaced.
local function with_expiry(rec, expiry) return fmt(expiry) .. string.match(rec, '^%d+(:.*)$') end

-- Reads the holders, dropping those whose time ran out.
local function holders()
  local st = no_holders()
  local all = redis.call('HGETALL', K)
  local expired = {}
  for i = 1, #all, 2 do
    local expiry, kind, cnt = parse_holder(all[i + 1])
    if not expiry or expiry <= now then
      table.insert(expired, all[i])
    else
      count(st, all[i], kind, cnt, expiry, all[i + 1])
    end
  end
  if #expired > 0 then redis.call('HDEL', K, unpack(expired)) end
  return st
end

local function parse_waiter(rec)
  local kind, cnt, limit, ttl, member, chan, info =
    string.match(rec, '^(%a)|(%d+)|(%d+)|(%d+)|([^|]*)|([^|]*)|(.*)$')
  return kind, tonumber(cnt), tonumber(limit), tonumber(ttl), member, chan, info
end

local function drop_waiter(o)
  local rec = redis.call('HGET', W, o)
  if rec then
    local _, _, _, _, member = parse_waiter(rec)
    redis.call('ZREM', Q, member)
    redis.call('HDEL', W, o)
  end
  redis.call('ZREM', X, o)
end

-- Removes the waiters whose entries ran out.
local function prune_waiters()
  for _, o in ipairs(redis.call('ZRANGEBYSCORE', X, '-inf', now)) do drop_waiter(o) end
end

-- The waiter keys live until their last entry would expire, + 1 s (Redis deletes an emptied
-- zset or hash at once). Only adding or refreshing an entry can need a longer life.
local function touch_waiters()
  local last = redis.call('ZRANGE', X, -1, -1, 'WITHSCORES')[2]
  if not last then return end
  local ms = fmt(tonumber(last) - now + 1000)
  redis.call('PEXPIRE', Q, ms)
  redis.call('PEXPIRE', W, ms)
  redis.call('PEXPIRE', X, ms)
end

-- Direct hand-off: grants the lock to the live waiters at the head of the queue, in order,
-- while they fit, and sends each one's process `owner:token`. The grant lasts the waiter's
-- TTL from now, as if it had asked now: a waiter that died meanwhile holds up the queue no
-- longer than a holder that died. Returns the token granted to `me`, if any.
local function promote(st, me)
  local granted, mine = false, nil
  -- Nothing fits beside an exclusive holder, so that case reads nothing.
  while st.x == 0 do
    local head = redis.call('ZRANGE', Q, 0, 0)[1]
    if not head then break end
    local o = string.sub(head, 25)
    local rec = redis.call('HGET', W, o)
    if not rec then
      redis.call('ZREM', Q, head)
    else
      local kind, cnt, limit, ttl, _, chan, info = parse_waiter(rec)
      if not fits(st, kind, cnt, limit) then break end
      local tok = grant(st, o, kind, cnt, limit, now + ttl, info)
      granted = true
      redis.call('ZREM', Q, head)
      redis.call('HDEL', W, o)
      redis.call('ZREM', X, o)
      if o == me then
        mine = tok
      else
        -- The token travels with the notification, so the waiter holds the lock without
        -- another round trip (a lost message is caught by its next re-check).
        redis.call('PUBLISH', chan, o .. ':' .. fmt(tok))
      end
    end
  end
  if granted then touch_holders(st) end
  return mine
end

-- Remaining ms of the holder that expires first (0 when there is none).
local function wait_hint(st)
  if st.first then return st.first - now end
  return 0
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
