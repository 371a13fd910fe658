-- tick(now, node, token, lease_ms, bound, [session_id, seen]...): one node's call per tick.
--  1. Writes the session touches this node saw since its last tick (touches stay local
--     between ticks, so a proxied request makes no Redis call); reports sessions now ended.
--  2. Holds or takes the admitter lease: a token "node:fence" with a TTL. Only the holder
--     does step 3, checked here, in the same atomic script, so two nodes never admit at once.
--  3. Expires sessions and grants, skips abandoned waiters, grants the next within budget.
--  4. Returns the room's figures and limits, which the node caches for one tick.
local lim = limits()
if not lim then
  return no_limits()
end
local now, node, token, lease_ms, bound = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])

local ended = {}
for i = 6, #ARGV - 1, 2 do
  local id, seen = ARGV[i], tonumber(ARGV[i + 1])
  local last = tonumber(redis.call('ZSCORE', SS, id))
  if not last then
    ended[#ended + 1] = id
  else
    local expires = tonumber(redis.call('ZSCORE', SX, id)) or 0
    if expires <= now or math.max(last, seen) + lim.idle <= now then
      end_session(id)
      ended[#ended + 1] = id
    elseif seen > last then
      redis.call('ZADD', SS, seen, id)
    end
  end
end

local holder = redis.call('GET', A)
if holder and holder == token then
  redis.call('PEXPIRE', A, lease_ms)
elseif not holder then
  token = string.format('%s:%d', node, redis.call('HINCRBY', S, 'fence', 1))
  redis.call('SET', A, token, 'PX', lease_ms)
else
  token = ''
end

local granted, abandoned, expired_grants, expired_sessions, opened = 0, 0, 0, 0, 0
local waits = {}
if token ~= '' then
  -- Idle sessions, then those past their lifetime.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', SS, '-inf', now - lim.idle, 'LIMIT', 0, bound)) do
    expired_sessions = expired_sessions + end_session(id)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', SX, '-inf', now, 'LIMIT', 0, bound)) do
    expired_sessions = expired_sessions + end_session(id)
  end

  if lim.opens and now >= lim.opens and redis.call('HDEL', S, 'prequeue_from') == 1 then
    opened = 1
  end

  -- Grants not claimed in time return their place to the budget.
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', G, '-inf', now, 'LIMIT', 0, bound)) do
    redis.call('ZREM', G, t)
    release(t)
    expired_grants = expired_grants + 1
  end

  -- Claims are remembered for a claim window (see poll.lua).
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', CT, '-inf', now - lim.claim, 'LIMIT', 0, bound)) do
    redis.call('ZREM', CT, t)
    redis.call('HDEL', CL, t)
  end

  -- Waiters whose last heartbeat is older than waiter_ttl have abandoned.
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', H, '-inf', now - lim.ttl, 'LIMIT', 0, bound)) do
    redis.call('ZREM', Q, t)
    redis.call('ZREM', H, t)
    release(t)
    abandoned = abandoned + 1
  end

  local closed = lim.mode == 'paused' or lim.mode == 'closed' or (lim.opens ~= nil and now < lim.opens)
  if not closed then
    local tokens, updated = refill(lim, now)
    local free = lim.max_active - redis.call('ZCARD', SS) - redis.call('ZCARD', G)
    local budget = math.min(math.max(free, 0), math.floor(tokens))
    while budget > 0 do
      local head = redis.call('ZRANGE', Q, 0, budget - 1)
      if #head == 0 then
        break
      end
      for _, t in ipairs(head) do
        local seen = tonumber(redis.call('ZSCORE', H, t)) or 0
        redis.call('ZREM', Q, t)
        redis.call('ZREM', H, t)
        if seen + lim.ttl <= now then
          release(t)
          abandoned = abandoned + 1
        else
          redis.call('ZADD', G, now + lim.claim, t)
          local record = redis.call('HGET', T, t)
          local joined = now
          if record then
            joined = tonumber((split(record)))
          end
          waits[#waits + 1] = math.max(now - joined, 0)
          tokens = tokens - 1
          budget = budget - 1
          granted = granted + 1
        end
      end
    end
    save_bucket(tokens, updated)
    meter_record(now, granted)
  end
  keep(lim, L, S, Q, H, G, T, K, N, SS, SX, SC, M, CL, CT)
end

local limits_now = redis.call('HMGET', L, 'max_active', 'admit_per_minute', 'session_idle', 'session_max',
  'waiter_ttl', 'claim_window', 'mode', 'opens_at', 'tickets_per_client', 'message')
return {token, {granted, abandoned, expired_grants, expired_sessions, opened}, figures(now), ended, waits, limits_now}
