-- Read-only. Returns {now ms, holders, waiters}: holders = flat {owner, expiry, kind record,
-- info}..., waiters = flat {owner, waiter record, info}... in queue order. Expired entries are
-- left out.
--@grant
--@prelude
local holders = {}
for _, o in ipairs(redis.call('ZRANGEBYSCORE', H, '(' .. fmt(now), '+inf')) do
  local rec = redis.call('HGET', K, o)
  local kind, info = string.match(rec or '', '^(%a:%d+:%d+:%d+):(.*)$')
  if kind then
    table.insert(holders, o)
    table.insert(holders, redis.call('ZSCORE', H, o))
    table.insert(holders, kind)
    table.insert(holders, info)
  end
end
local waiters = {}
for _, member in ipairs(redis.call('ZRANGE', Q, 0, -1)) do
  local o = string.sub(member, 25)
  local rec = redis.call('HGET', W, o)
  local exp = redis.call('ZSCORE', X, o)
  local fields, info = string.match(rec or '', '^([^|]*|[^|]*|[^|]*|[^|]*|[^|]*|[^|]*)|(.*)$')
  if fields and exp and tonumber(exp) > now then
    table.insert(waiters, o)
    table.insert(waiters, fields)
    table.insert(waiters, info)
  end
end
return { now, holders, waiters }
