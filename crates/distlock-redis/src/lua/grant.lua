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

-- The live holders: what they hold (x exclusive holders, s shared, p permits), their
-- owners, and the first and last expiry. `nil` expiries when there is none.
local function no_holders() return { x = 0, s = 0, p = 0, owners = {} } end

local function fits(st, kind, cnt, limit)
  if kind == 'x' then return st.x == 0 and st.s == 0 and st.p == 0 end
  if kind == 's' then return st.x == 0 and st.p == 0 end
  return st.x == 0 and st.s == 0 and st.p + cnt <= limit
end

local function count(st, o, kind, cnt, expiry, rec)
  if kind == 'x' then st.x = st.x + 1
  elseif kind == 's' then st.s = st.s + 1
  else st.p = st.p + cnt end
  st.owners[o] = rec
  if not st.first or expiry < st.first then st.first = expiry end
  if not st.last or expiry > st.last then st.last = expiry end
end

-- Grants `o` the lock until `expiry`: a new token, and the holder record
-- `expiry:kind:count:limit:token:info`, where `terms` is its `kind:count:limit`.
local function hold(o, terms, expiry, info)
  local tok = next_token()
  local rec = fmt(expiry) .. ':' .. terms .. ':' .. fmt(tok) .. ':' .. info
  redis.call('HSET', K, o, rec)
  return tok, rec
end

local function grant(st, o, kind, cnt, limit, expiry, info)
  local tok, rec = hold(o, kind .. ':' .. cnt .. ':' .. limit, expiry, info)
  count(st, o, kind, cnt, expiry, rec)
  return tok
end

-- The holders hash lives until its last holder would expire, + 1 s, then vanishes on its own.
local function touch_holders(st)
  if st.last then redis.call('PEXPIRE', K, fmt(st.last - now + 1000)) end
end
