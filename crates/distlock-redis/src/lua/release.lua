-- ARGV: 1 owner. Compare-and-delete of a holder or a waiter entry, then
-- hand-off to the next waiters. Returns 1 if a holder was removed, 2 if a waiter was, else 0.
local o = ARGV[1]
local removed, bits = 0, nil
if redis.call('HDEL', K, o) == 1 then
  removed = 1
  -- Fast path: nobody else holds, waits or watches (the emptied holders hash is gone).
  bits = exist_bits()
  if bits == 0 then return 1 end
end
--@grant
--@prelude
if removed == 0 then
  if redis.call('HEXISTS', W, o) == 0 then return 0 end
  drop_waiter(o)
  removed = 2
  bits = exist_bits()
end
local has_holders, has_queue, has_watchers = present(bits)
-- Only what exists is read: releasing an exclusive lock leaves no holders hash to read.
local st = has_holders and holders() or no_holders()
if has_queue then promote(st) end
if has_watchers then notify_watchers() end
return removed
