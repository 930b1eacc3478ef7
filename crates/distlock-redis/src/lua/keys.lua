-- Every distlock script starts here. KEYS (one hash tag, so one slot):
--   1 K holders hash  owner -> expiry ms:kind:count:limit:token:owner info JSON
--   2 Q queue zset (score 0) prio8 .. seq16 .. owner32
--   3 W waiters hash  owner -> expiry ms|kind|count|limit|ttl|member|channel|owner info JSON
--   4 C fencing-token counter
--   5 N watchers hash (Redlock waiters, not queued) owner -> expiry ms|channel
-- A script's fast path runs before `--@grant` (the server clock and the grant) and
-- `--@prelude` (the other functions), so the common case does not pay for what it does not
-- use: each function a script defines costs the server an allocation per call, and more per
-- variable it captures.
local K, Q, W, C, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function fmt(n) return string.format('%d', n) end

-- Which of the holders hash, the queue and the watchers hash exist, in one call: EXISTS counts
-- a key once per mention, so the sum is a bit set (1 holders, 2 queue, 4 watchers).
local function exist_bits() return redis.call('EXISTS', K, Q, Q, N, N, N, N) end
