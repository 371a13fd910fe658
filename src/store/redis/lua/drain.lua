-- drain(n): ends the oldest n sessions (all when n < 0); returns their ids.
local n = tonumber(ARGV[1])
if n == 0 then
  return {}
end
local ids = redis.call('ZRANGE', SC, 0, n < 0 and -1 or n - 1)
for _, id in ipairs(ids) do
  end_session(id)
end
return ids
