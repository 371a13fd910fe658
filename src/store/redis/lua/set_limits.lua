-- set_limits(how, fields...): writes the room's limits. how = '0': all of them; '1': all,
-- only when no other node has (a node starting up must not undo a live change); '2': only
-- the fields given, over the others as they are (two operators changing different fields at
-- once both keep theirs); -1 when the room's limits are gone (the caller writes them whole).
if ARGV[1] == '1' and redis.call('EXISTS', L) == 1 then
  return 0
end
if ARGV[1] == '2' then
  if redis.call('EXISTS', L) == 0 then
    return -1
  end
  if #ARGV > 1 then
    redis.call('HSET', L, unpack(ARGV, 2))
  end
  keep(limits(), L)
  return 1
end
redis.call('DEL', L)
redis.call('HSET', L, unpack(ARGV, 2))
local lim = limits()
keep(lim, L)
return 1
