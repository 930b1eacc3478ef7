-- ARGV: 1 owner, 2 ttl ms. Compare-and-extend: 1 if this owner still held it, else 0.
--@grant
--@prelude
local exp = redis.call('ZSCORE', H, ARGV[1])
if not exp or tonumber(exp) <= now then return 0 end
redis.call('ZADD', H, now + tonumber(ARGV[2]), ARGV[1])
touch_holders()
return 1
