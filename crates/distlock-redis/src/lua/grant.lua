local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)

-- The fencing token: one more than the last, and never below the server clock in
-- microseconds. A missing counter (restart without persistence) thus starts from TIME, and a
-- counter that rolled back (failover to a replica that missed writes) jumps ahead to TIME:
-- neither hands out a smaller token while the clock does not go back and grants stay under
-- one per microsecond. The clock is nearly always ahead of the last token, so one SET .. GET
-- writes the new token and reads the last; only a clock behind it needs a second write. A
-- counter unused for a week vanishes, and TIME is larger than any token it gave.
local function next_token()
  local tok = now_us + 1
  local last = tonumber(redis.call('SET', C, fmt(tok), 'PX', 604800000, 'GET') or '0') or 0
  if last >= tok then
    tok = last + 1
    redis.call('SET', C, fmt(tok), 'PX', 604800000)
  end
  return tok
end

-- Grants `o` the lock until `expiry`: a new token, and the holder record
-- `expiry:kind:count:limit:token:info`, where `terms` is its `kind:count:limit`.
local function hold(o, terms, expiry, info)
  local tok = next_token()
  local rec = fmt(expiry) .. ':' .. terms .. ':' .. fmt(tok) .. ':' .. info
  redis.call('HSET', K, o, rec)
  return tok, rec
end
