-- Read-only. Returns {now ms, holders, waiters}: holders = flat {owner, expiry, kind record,
-- info}..., waiters = flat {owner, `kind:count:limit|ttl|member|channel`, info}... in queue
-- order. Expired entries are left out.
--@grant
--@prelude
local holders_out = {}
local all = redis.call('HGETALL', K)
for i = 1, #all, 2 do
  local expiry, kind, info = string.match(all[i + 1], '^(%d+):(%a:%d+:%d+:%d+):(.*)$')
  if expiry and tonumber(expiry) > now then
    table.insert(holders_out, all[i])
    table.insert(holders_out, expiry)
    table.insert(holders_out, kind)
    table.insert(holders_out, info)
  end
end
local waiters = {}
for _, member in ipairs(redis.call('ZRANGE', Q, 0, -1)) do
  local o = string.sub(member, 25)
  local rec = redis.call('HGET', W, o)
  local exp, fields, info = string.match(rec or '', '^(%d+)|([^|]*|[^|]*|[^|]*|[^|]*)|(.*)$')
  if fields and tonumber(exp) > now then
    table.insert(waiters, o)
    table.insert(waiters, fields)
    table.insert(waiters, info)
  end
end
return { now, holders_out, waiters }
