local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)

-- The fencing token: INCR, but never below the server clock in microseconds. A missing
-- counter (restart without persistence) is thus seeded from TIME, and a counter that rolled
-- back (failover to a replica that missed writes) jumps ahead to TIME: neither hands out a
-- smaller token while the clock does not go back and grants stay under one per microsecond.
local function next_token()
  local tok = redis.call('INCR', C)
  if tok <= now_us then
    -- INCR keeps the expiry, so it is set only here: a counter unused for a week vanishes
    -- and is seeded again from TIME, which is larger than any token it gave.
    tok = now_us + 1
    redis.call('SET', C, fmt(tok), 'PX', 604800000)
  end
  return tok
end

local function fits(st, kind, cnt, limit)
  if kind == 'x' then return st.x == 0 and st.s == 0 and st.p == 0 end
  if kind == 's' then return st.x == 0 and st.p == 0 end
  return st.x == 0 and st.s == 0 and st.p + cnt <= limit
end

local function grant(st, o, kind, cnt, limit, expiry, info)
  local tok = next_token()
  redis.call('ZADD', H, expiry, o)
  redis.call('HSET', K, o, kind .. ':' .. cnt .. ':' .. limit .. ':' .. fmt(tok) .. ':' .. info)
  if kind == 'x' then st.x = st.x + 1
  elseif kind == 's' then st.s = st.s + 1
  else st.p = st.p + cnt end
  return tok
end
