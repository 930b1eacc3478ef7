-- The live holders: what they hold (x exclusive holders, s shared, p permits), their
-- owners, and the first and last expiry. `nil` expiries when there is none.
local function no_holders() return { x = 0, s = 0, p = 0, owners = {} } end

-- Counts and limits stay decimal strings until a semaphore needs them as numbers: converting
-- costs the server more than most of a script's other steps.
local function fits(st, kind, cnt, limit)
  if kind == 'x' then return st.x == 0 and st.s == 0 and st.p == 0 end
  if kind == 's' then return st.x == 0 and st.p == 0 end
  return st.x == 0 and st.s == 0 and st.p + tonumber(cnt) <= tonumber(limit)
end

local function count(st, o, kind, cnt, expiry, rec)
  if kind == 'x' then st.x = st.x + 1
  elseif kind == 's' then st.s = st.s + 1
  else st.p = st.p + tonumber(cnt) end
  st.owners[o] = rec
  if not st.first or expiry < st.first then st.first = expiry end
  if not st.last or expiry > st.last then st.last = expiry end
end

-- Grants `o` the lock on `terms` (`kind:count:limit`), counting it in `st`. Returns the token
-- and the token in decimal.
local function grant(st, o, terms, kind, cnt, expiry, info)
  local tok, rec, dec = hold(o, terms, expiry, info)
  count(st, o, kind, cnt, expiry, rec)
  return tok, dec
end

-- The holders hash lives until its last holder would expire, + 1 s, then vanishes on its own.
local function touch_holders(st)
  if st.last then redis.call('PEXPIREAT', K, fmt(st.last + 1000)) end
end

-- The bit set of `exist_bits()` as flags: holders, queue, watchers.
local function present(bits)
  return bits % 2 == 1, bits % 4 >= 2, bits >= 4
end

-- A holder record: expiry ms (number), kind, then count, limit and token (decimal strings).
local function parse_holder(rec)
  local expiry, kind, cnt, limit, tok = string.match(rec, '^(%d+):(%a):(%d+):(%d+):(%d+):')
  return tonumber(expiry), kind, cnt, limit, tok
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

-- A waiter record: expiry ms (number), terms `kind:count:limit`, kind, count and limit and
-- TTL ms (decimal strings), queue member, channel, owner info.
local function parse_waiter(rec)
  local expiry, terms, kind, cnt, limit, ttl, member, chan, info =
    string.match(rec, '^(%d+)|((%a):(%d+):(%d+))|(%d+)|([^|]*)|([^|]*)|(.*)$')
  return tonumber(expiry), terms, kind, cnt, limit, ttl, member, chan, info
end

local function drop_waiter(o)
  local rec = redis.call('HGET', W, o)
  if rec then
    local member = select(7, parse_waiter(rec))
    redis.call('ZREM', Q, member)
    redis.call('HDEL', W, o)
  end
end

-- The waiter keys live at least `wttl` + 1 s from now, for the entry just added or refreshed
-- (Redis deletes an emptied zset or hash at once). When they have less, they get twice that,
-- so the entries added in the next `wttl` ms (most of them, under contention) find enough
-- life and cost one PTTL, not also two PEXPIREATs.
local function touch_waiters(wttl)
  if redis.call('PTTL', W) < wttl + 1000 then
    local at = fmt(now + 2 * wttl + 1000)
    redis.call('PEXPIREAT', Q, at)
    redis.call('PEXPIREAT', W, at)
  end
end

-- Direct hand-off: grants the lock to the live waiters at the head of the queue, in order,
-- while they fit, and sends each one's process `owner:token`. A waiter whose entry ran out
-- (its process stopped refreshing it) is dropped when it comes to the head, so a dead waiter
-- never stalls the queue. The grant lasts the waiter's TTL from now, as if it had asked now: a
-- waiter that died meanwhile holds up the queue no longer than a holder that died. Returns
-- the token granted to `me`, if any.
local function promote(st, me)
  local granted, mine = false, nil
  -- Nothing fits beside an exclusive holder, so that case reads nothing.
  while st.x == 0 do
    -- All scores are 0, so the least member (priority, then arrival) comes first.
    local head = redis.call('ZPOPMIN', Q)[1]
    if not head then break end
    local o = string.sub(head, 25)
    local rec = redis.call('HGET', W, o)
    if rec then
      local expiry, terms, kind, cnt, limit, ttl, _, chan, info = parse_waiter(rec)
      if expiry <= now then
        redis.call('HDEL', W, o)
      elseif not fits(st, kind, cnt, limit) then
        -- Strict order: it stays at the head and blocks the ones behind it. If it was the
        -- last, the pop deleted the queue, and the queue made anew needs the waiters' life.
        redis.call('ZADD', Q, '0', head)
        if redis.call('PTTL', Q) < 0 then redis.call('PEXPIRE', Q, redis.call('PTTL', W)) end
        break
      else
        local tok, dec = grant(st, o, terms, kind, cnt, now + ttl, info)
        granted = true
        redis.call('HDEL', W, o)
        if o == me then
          mine = tok
        else
          -- The token travels with the notification, so the waiter holds the lock without
          -- another round trip (a lost message is caught by its next re-check).
          redis.call('PUBLISH', chan, o .. ':' .. dec)
        end
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
