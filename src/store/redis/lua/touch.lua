-- touch(now, session_id): whether a session is live, marking it used; ends it if idle or
-- past its lifetime. Returns {1, expires, seen} or {0}.
local lim = limits()
if not lim then
  return no_limits()
end
local now, id = clock(ARGV[1]), ARGV[2]
local seen = tonumber(redis.call('ZSCORE', SS, id))
if not seen then
  return {0}
end
local expires = tonumber(redis.call('ZSCORE', SX, id)) or 0
if expires <= now or seen + lim.idle <= now then
  end_session(id)
  return {0}
end
if now > seen then
  redis.call('ZADD', SS, now, id)
  seen = now
end
return {1, expires, seen}
