-- poll(now, ticket, session_id): a waiter's heartbeat and place; claims a granted turn.
-- A claim is remembered for a claim window: if its answer was lost (the node died mid-request)
-- the visitor's next poll, on any node, gets the same session rather than "expired".
local lim = limits()
if not lim then
  return no_limits()
end
local now, ticket, id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if redis.call('ZREM', G, ticket) == 1 then
  local joined = release(ticket) or now
  local expires = new_session(lim, id, now)
  local waited = math.max(now - joined, 0)
  redis.call('HSET', CL, ticket, string.format('%s:%d:%d', id, expires, waited))
  redis.call('ZADD', CT, now, ticket)
  keep(lim, CL, CT)
  return {1, expires, waited, id}
end
local ahead = redis.call('ZRANK', Q, ticket)
if not ahead then
  local claim = redis.call('HGET', CL, ticket)
  if claim then
    local session, rest = split(claim)
    local expires, waited = split(rest)
    if redis.call('ZSCORE', SS, session) then
      return {1, tonumber(expires), tonumber(waited), session}
    end
  end
  return {0}
end
-- Heartbeats are written coarsely (eight per waiter_ttl at most): a waiter polling at the
-- suggested pace is never taken for gone, and a crowd's polls are mostly reads.
local seen = tonumber(redis.call('ZSCORE', H, ticket)) or 0
if now - seen >= lim.ttl / 8 then
  redis.call('ZADD', H, now, ticket)
end
local record = redis.call('HGET', T, ticket)
local joined = now
if record then
  joined = tonumber((split(record)))
end
local from = tonumber(redis.call('HGET', S, 'prequeue_from'))
local prequeue = 0
if from and tonumber(ticket) >= from then
  prequeue = 1
end
return {2, ahead, joined, prequeue}
