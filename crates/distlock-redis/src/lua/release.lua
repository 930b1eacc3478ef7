-- ARGV: 1 owner. Compare-and-delete of a holder or a waiter entry, then
-- hand-off to the next waiters. Returns 1 if a holder was removed, 2 if a waiter was, else 0.
local o = ARGV[1]
-- Fast path: the only holder, nobody queued or watching: the lock's keys simply go.
if redis.call('ZCARD', H) == 1 and redis.call('EXISTS', Q, N) == 0
    and redis.call('HEXISTS', K, o) == 1 then
  redis.call('DEL', H, K, I, W, X)
  return 1
end
local removed = 0
if redis.call('HEXISTS', K, o) == 1 then
  drop_holder(o)
  removed = 1
elseif redis.call('HEXISTS', W, o) == 1 then
  drop_waiter(o)
  removed = 2
end
if removed == 0 then return 0 end
prune()
promote(holders_state())
touch()
notify_watchers()
return removed
