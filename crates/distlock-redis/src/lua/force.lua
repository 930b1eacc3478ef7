-- ARGV: 1 claim window ms. Removes every holder; returns how many there were.
prune()
local owners = redis.call('HKEYS', K)
for _, o in ipairs(owners) do drop_holder(o) end
promote(holders_state(), tonumber(ARGV[1]))
touch()
notify_watchers()
return #owners
