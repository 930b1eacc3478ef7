-- ARGV: 1 owner, 2 terms `kind:count:limit` (kind x|s|p), 3 ttl ms, 4 owner info JSON,
--       5 waiting `priority|enqueue|watch|asked|waiter entry ttl ms|channel`: priority 8 hex
--       (smaller first); enqueue 0 (try once), 1 (wait in the queue) or 2 (wait in the
--       queue, first call of the acquisition: the owner is new, so it has no entry to look
--       up); watch 1 (when not acquired and not enqueued, ask to be notified at the next
--       release; Redlock) or 0; asked: when the client sent this call, µs since the epoch on
--       its clock (0 when enqueue is 0: only queueing reads it).
-- Few arguments, and the waiting ones in one: the server copies each argument into the
-- script's ARGV on every call, which costs more than the fast path's own work.
-- Returns {1, token} when held (granted now, or claimed after a hand-off), {2, token} when
--         held while others waited (the releasing client then wakes the next waiter first),
--         {0, ms until the first holder expires} otherwise.
local o, ttl = ARGV[1], tonumber(ARGV[3])
--@grant
-- Fast path: no holder and no queue (so no waiter entry of ours either). The watchers do not
-- matter here, so their key is not looked up (see exist_bits).
local bits = redis.call('EXISTS', K, Q, Q)
if bits % 4 == 0 then
  local expiry = now + ttl
  local tok = hold(o, ARGV[2], expiry, ARGV[4])
  redis.call('PEXPIREAT', K, fmt(expiry + 1000))
  return { 1, tok }
end
--@prelude
local has_holders, has_queue = present(bits)
local kind, cnt, limit = string.match(ARGV[2], '^(%a):(%d+):(%d+)$')
local priority, enqueue, watch, asked, wttl, channel =
  string.match(ARGV[5], '^(%x+)|(%d)|(%d)|(%d+)|(%d+)|(.*)$')
wttl = tonumber(wttl)
local st = has_holders and holders() or no_holders()
local tok
if has_queue then
  tok = promote(st, o)
  if tok then return { 2, tok } end
end
-- This owner's waiter entry, if it has one (the waiter keys exist exactly while the queue
-- does, give or take a moment after a hand-off emptied it).
local queued = has_queue and enqueue == '1' and redis.call('HGET', W, o)
if not queued then
  -- Handed the lock earlier (its notification may have been lost): claim it for a full TTL.
  local cur = st.owners[o]
  if cur then
    local expiry = now + ttl
    redis.call('HSET', K, o, with_expiry(cur, expiry))
    if expiry > st.last then st.last = expiry end
    touch_holders(st)
    local _, _, _, _, held = parse_holder(cur)
    return { 2, tonumber(held) }
  end
  if fits(st, kind, cnt, limit) and (not has_queue or redis.call('ZCARD', Q) == 0) then
    tok = grant(st, o, ARGV[2], kind, cnt, now + ttl, ARGV[4])
    touch_holders(st)
    return { 1, tok }
  end
end
if enqueue == '0' then
  if watch == '1' then
    redis.call('HSET', N, o, fmt(now + wttl) .. '|' .. channel)
    redis.call('PEXPIREAT', N, fmt(now + wttl + 1000))
  end
  return { 0, wait_hint(st) }
end
local expiry = fmt(now + wttl)
if queued then
  -- Refreshed: the entry keeps its place.
  redis.call('HSET', W, o, expiry .. string.match(queued, '^%d+(|.*)$'))
else
  -- Its place: when the client asked, on the client's clock, but no earlier than 1 ms before
  -- this call runs and no later. Requests that reach a busy server are read in an order of
  -- its own, not in the order they came; this keeps the order they were sent in (exactly
  -- between processes of one host, which share a clock). A client whose clock lags gains at
  -- most 1 ms on the others; one whose clock runs ahead gains nothing.
  local seq = tonumber(asked)
  if seq > now_us then seq = now_us elseif seq < now_us - 1000 then seq = now_us - 1000 end
  local member = priority .. string.format('%016x', seq) .. o
  redis.call('ZADD', Q, '0', member)
  redis.call('HSET', W, o, expiry .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. member .. '|'
    .. channel .. '|' .. ARGV[4])
  -- A higher priority can put this waiter at the head.
  tok = promote(st, o)
  if tok then return { 2, tok } end
end
touch_waiters(wttl)
return { 0, wait_hint(st) }
