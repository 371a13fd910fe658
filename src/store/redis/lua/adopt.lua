-- adopt(now, session_id, pass_generation, created, expires, generation): takes over a session
-- admitted in an earlier generation of this keyspace (Redis lost its data), if its pass is
-- valid, it could not have idled out since, and there is room. 1 if the session is live now.
-- A pass of this generation (or of one not known, '0') whose session is gone has ended.
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
local id, from, created, expires = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local gen, started = generation(ARGV[6], now)
if redis.call('ZSCORE', SS, id) then
  return 1
end
if from == '0' or from == gen or expires <= now or started + lim.idle <= now then
  return 0
end
if redis.call('ZCARD', SS) + redis.call('ZCARD', G) >= lim.max_active then
  return 0
end
redis.call('ZADD', SS, now, id)
redis.call('ZADD', SX, expires, id)
redis.call('ZADD', SC, created, id)
keep(lim, SS, SX, SC)
return 1
