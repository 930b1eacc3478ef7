-- Read-only. Returns {now ms, holders, waiters}: holders = flat {owner, expiry, kind record,
-- info}..., waiters = flat {owner, waiter record, info}... in queue order. Expired entries are
-- left out.
local holders = {}
for _, o in ipairs(redis.call('ZRANGEBYSCORE', H, '(' .. fmt(now), '+inf')) do
  local kind = redis.call('HGET', K, o)
  if kind then
    table.insert(holders, o)
    table.insert(holders, redis.call('ZSCORE', H, o))
    table.insert(holders, kind)
    table.insert(holders, redis.call('HGET', I, o) or '')
  end
end
local waiters = {}
for _, member in ipairs(redis.call('ZRANGE', Q, 0, -1)) do
  local o = string.sub(member, 25)
  local rec = redis.call('HGET', W, o)
  local exp = redis.call('ZSCORE', X, o)
  if rec and exp and tonumber(exp) > now then
    table.insert(waiters, o)
    table.insert(waiters, rec)
    table.insert(waiters, redis.call('HGET', I, o) or '')
  end
end
return { now, holders, waiters }
