-- Removes every holder; returns how many there were.
--@grant
--@prelude
prune()
local owners = redis.call('HKEYS', K)
for _, o in ipairs(owners) do drop_holder(o) end
promote(holders_state())
notify_watchers()
return #owners
