-- Removes every holder; returns how many there were.
prune()
local owners = redis.call('HKEYS', K)
for _, o in ipairs(owners) do drop_holder(o) end
promote(holders_state())
touch()
notify_watchers()
return #owners
