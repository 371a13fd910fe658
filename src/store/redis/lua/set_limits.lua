-- set_limits(only_if_missing, fields...): writes the room's limits; a node starting up
-- seeds them only when no other node has (so a live change is not undone by a restart).
if ARGV[1] == '1' and redis.call('EXISTS', L) == 1 then
  return 0
end
redis.call('DEL', L)
redis.call('HSET', L, unpack(ARGV, 2))
local lim = limits()
keep(lim, L)
return 1
