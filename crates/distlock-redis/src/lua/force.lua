-- Removes every holder; returns how many there were.
--@grant
--@prelude
local removed = 0
for _ in pairs(holders().owners) do removed = removed + 1 end
redis.call('DEL', K)
promote(no_holders())
notify_watchers()
return removed
