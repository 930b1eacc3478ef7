-- ARGV: 1 owner, 2 ttl ms. Compare-and-extend: 1 if this owner still held it, else 0.
--@grant
--@prelude
local cur = redis.call('HGET', K, ARGV[1])
local expiry = cur and parse_holder(cur)
if not expiry or expiry <= now then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('HSET', K, ARGV[1], with_expiry(cur, now + ttl))
-- Other holders may outlive this one: the key's life only grows.
if redis.call('PTTL', K) < ttl + 1000 then redis.call('PEXPIREAT', K, fmt(now + ttl + 1000)) end
return 1
