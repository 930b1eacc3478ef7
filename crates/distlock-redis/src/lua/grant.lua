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
-- Returns the token as a number and in decimal. Tokens are written without leading zeros, so
-- the common case compares the decimal strings: converting costs the server more than the
-- rest of this function.
local function next_token()
  local tok = now_us + 1
  local dec = fmt(tok)
  local last = redis.call('SET', C, dec, 'PX', '604800000', 'GET')
  if last and (#last > #dec or (#last == #dec and last >= dec)) then
    local n = tonumber(last)
    if n and n >= tok then
      tok = n + 1
      dec = fmt(tok)
      redis.call('SET', C, dec, 'PX', '604800000')
    end
  end
  return tok, dec
end

-- Grants `o` the lock until `expiry`: a new token, and the holder record
-- `expiry:kind:count:limit:token:info`, where `terms` is its `kind:count:limit`. Returns the
-- token, the record and the token in decimal.
local function hold(o, terms, expiry, info)
  local tok, dec = next_token()
  local rec = fmt(expiry) .. ':' .. terms .. ':' .. dec .. ':' .. info
  redis.call('HSET', K, o, rec)
  return tok, rec, dec
end
