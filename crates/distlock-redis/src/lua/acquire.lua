-- ARGV: 1 owner, 2 kind (x|s|p), 3 count, 4 limit, 5 ttl ms, 6 priority (8 hex, smaller first),
--       7 enqueue (0: try once, 1: wait in the queue), 8 waiter entry ttl ms, 9 channel,
--       10 owner info JSON, 11 watch (1: when not acquired and not enqueued, ask to be
--       notified at the next release; Redlock)
-- Returns {1, token} when held (granted now, or claimed after a hand-off),
--         {0, ms until the first holder expires} otherwise.
local o, kind, cnt, limit, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
--@grant
-- Fast path: no holder and no queue (so no waiter entry of ours either).
local keys = present()
local st = no_holders()
if not keys.holders and not keys.queue then
  local tok = grant(st, o, kind, cnt, limit, now + ttl, ARGV[10])
  touch_holders(st)
  return { 1, tok }
end
--@prelude
local wttl = tonumber(ARGV[8])
if keys.holders then st = holders() end
local tok
if keys.queue then
  prune_waiters()
  tok = promote(st, o)
  if tok then return { 1, tok } end
end
-- The waiter keys exist exactly while the queue does.
local queued = keys.queue and redis.call('HEXISTS', W, o) == 1
if not queued then
  -- Handed the lock earlier (its notification may have been lost): claim it for a full TTL.
  local cur = st.owners[o]
  if cur then
    local expiry = now + ttl
    redis.call('HSET', K, o, with_expiry(cur, expiry))
    if expiry > st.last then st.last = expiry end
    touch_holders(st)
    local _, _, _, _, held = parse_holder(cur)
    return { 1, held }
  end
  if fits(st, kind, cnt, limit) and (not keys.queue or redis.call('ZCARD', Q) == 0) then
    tok = grant(st, o, kind, cnt, limit, now + ttl, ARGV[10])
    touch_holders(st)
    return { 1, tok }
  end
end
if ARGV[7] == '0' then
  if ARGV[11] == '1' then
    redis.call('HSET', N, o, fmt(now + wttl) .. '|' .. ARGV[9])
    redis.call('PEXPIRE', N, fmt(wttl + 1000))
  end
  return { 0, wait_hint(st) }
end
redis.call('ZADD', X, now + wttl, o)
if not queued then
  local member = ARGV[6] .. string.format('%016x', now_us) .. o
  redis.call('ZADD', Q, 0, member)
  redis.call('HSET', W, o, kind .. '|' .. cnt .. '|' .. limit .. '|' .. ttl .. '|' .. member
    .. '|' .. ARGV[9] .. '|' .. ARGV[10])
  -- A higher priority can put this waiter at the head.
  tok = promote(st, o)
  if tok then return { 1, tok } end
end
touch_waiters()
return { 0, wait_hint(st) }
