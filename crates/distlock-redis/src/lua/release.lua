-- ARGV: 1 owner, 2 claim window ms. Compare-and-delete of a holder or a waiter entry, then
-- hand-off to the next waiters. Returns 1 if a holder was removed, 2 if a waiter was, else 0.
local o = ARGV[1]
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
promote(holders_state(), tonumber(ARGV[2]))
touch()
notify_watchers()
return removed
