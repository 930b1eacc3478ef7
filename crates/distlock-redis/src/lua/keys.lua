-- Every distlock script starts here. KEYS (one hash tag, so one slot):
--   1 H holders zset  owner -> expiry ms
--   2 K holders hash  owner -> kind:count:limit:token:owner info JSON
--   3 Q queue zset (score 0) prio8 .. seq16 .. owner32
--   4 W waiters hash  owner -> kind|count|limit|ttl|member|channel|owner info JSON
--   5 X waiter expiry zset owner -> expiry ms
--   6 C fencing-token counter
--   7 N watchers hash (Redlock waiters, not queued) owner -> expiry ms|channel
-- A script's fast path runs before `--@grant` (the server clock) and `--@prelude` (the other
-- functions), so the common case does not pay for what it does not use.
local H, K, Q, W, X, C, N = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

local function fmt(n) return string.format('%d', n) end
