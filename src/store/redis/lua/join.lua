-- join(now, client, session_id, seed, generation): admit at once when nobody waits and there
-- is room, else a ticket at the tail. A pre-queued ticket waits in arrival order, shown no
-- place, until the lease holder draws the pre-queue at the opening (draw_*.lua); `seed` is
-- the draw's if this ticket begins a pre-queue. Answers {1, expires, generation} (admitted)
-- or {0 | 2 (reused), ticket, generation}.
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
local client, id, seed = ARGV[2], ARGV[3], ARGV[4]
local gen = generation(ARGV[5], now)
local prequeue = lim.opens ~= nil and now < lim.opens
close_prequeue(lim, now)
-- Those away hold their places but are not in the way (see the memory store's join).
local nobody_present = redis.call('ZCARD', Q) == redis.call('ZCARD', W)
if lim.mode == 'off' and not restoring(now) then
  -- Passthrough: a session at once, past any limit, still counted.
  meter_record(now, 1)
  keep(lim, S, M)
  return {1, new_session(lim, id, now), gen}
end
if lim.mode == 'auto' and not prequeue and not restoring(now) and nobody_present then
  local tokens, updated = refill(lim, now)
  if redis.call('ZCARD', SS) + redis.call('ZCARD', G) < lim.max_active and tokens >= 1 then
    save_bucket(tokens - 1, updated)
    meter_record(now, 1)
    keep(lim, S, M)
    return {1, new_session(lim, id, now), gen}
  end
  save_bucket(tokens, updated)
end
local live = tonumber(redis.call('HGET', K, client)) or 0
if live >= lim.cap then
  local newest = tonumber(redis.call('HGET', N, client))
  if newest then
    return {2, newest, gen}
  end
end
local ticket = redis.call('HINCRBY', S, 'next_ticket', 1) - 1
local slot = ticket
if prequeue and redis.call('HSETNX', S, 'prequeue_from', ticket) == 1 then
  commit(seed, now)
end
redis.call('ZADD', Q, slot, ticket)
redis.call('ZADD', H, now, ticket)
redis.call('HSET', T, ticket, string.format('%d:%s:%.17g', now, client, slot))
redis.call('HINCRBY', K, client, 1)
redis.call('HSET', N, client, ticket)
keep(lim, S, Q, H, T, K, N)
return {0, ticket, gen}
