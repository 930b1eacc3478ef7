-- ARGV: 1 owner. Compare-and-delete of a holder or a waiter entry, then
-- hand-off to the next waiters. Returns 1 if a holder was removed, 2 if a waiter was, else 0.
local o = ARGV[1]
-- Fast path: the only holder, nobody queued or watching: the lock's keys simply go.
local first = redis.call('ZRANGE', H, 0, 1)
if #first == 1 and first[1] == o and redis.call('EXISTS', Q, N) == 0 then
  redis.call('DEL', H, K, W, X)
  return 1
end
--@grant
--@prelude
local removed = 0
if drop_holder(o) == 1 then
  removed = 1
elseif redis.call('HEXISTS', W, o) == 1 then
  drop_waiter(o)
  removed = 2
end
if removed == 0 then return 0 end
prune()
promote(holders_state())
notify_watchers()
return removed
