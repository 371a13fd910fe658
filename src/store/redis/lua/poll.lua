-- poll(now, ticket, session_id, generation, joined, ms_per_admission, prequeue_secs): a
-- waiter's heartbeat and place, paced as `src/store/pace.rs` says; claims a
-- granted turn. A claim is remembered for a claim window: if its answer was lost (the node
-- died mid-request) the visitor's next poll, on any node, gets the same session rather than
-- "expired". A ticket of another generation (not '0', "not known") names no place here: {3}.
-- Nor does one whose join time (`joined`, '' if not known) is not the record's: a failover
-- that lost a join can hand its number to the next newcomer; the cookie is then put back by
-- its own join time, never given the newcomer's place.
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
local ticket, id = ARGV[2], ARGV[3]
if ARGV[4] ~= '0' and redis.call('HGET', S, 'generation') ~= ARGV[4] then
  return {3}
end
if ARGV[5] ~= '' then
  local held = redis.call('HGET', T, ticket)
  if held and tonumber((split(held))) ~= tonumber(ARGV[5]) then
    return {3}
  end
end
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
local slot = redis.call('ZSCORE', Q, ticket)
local counted = ahead ~= nil
if not ahead and (redis.call('ZSCORE', D, ticket) or redis.call('ZSCORE', R, ticket)) then
  -- Held after a turn not claimed: not in Q, placed by its slot among those who are.
  local _, _, s = record(ticket)
  slot = s or ticket
  ahead = redis.call('ZCOUNT', Q, '-inf', '(' .. slot)
end
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
local away_ahead = redis.call('ZCOUNT', W, '-inf', '(' .. slot)
local pq = redis.call('HMGET', S, 'prequeue_from', 'prequeue_end')
local from, pq_end = tonumber(pq[1]), tonumber(pq[2])
local prequeue = 0
if from and tonumber(ticket) >= from and not (pq_end and tonumber(ticket) >= pq_end) then
  prequeue = 1
end

-- The poll interval this waiter is told (pace.rs: Pace::interval_secs) and the credit beyond
-- waiter_ttl it earns (Pace::credit_ms): H holds the poll's time plus that credit, so a
-- waiter told to come back in a minute is not taken for away by the waiter_ttl checks.
-- A `prequeue_secs` of 0 is the fixed pace: no credit.
local ms_per_admission, prequeue_secs = tonumber(ARGV[6]) or 0, tonumber(ARGV[7]) or 0
local present, interval = ahead - math.min(away_ahead, ahead), 10
if prequeue == 1 then
  interval = prequeue_secs > 0 and prequeue_secs or 10
elseif present < 20 then
  interval = 2
elseif ms_per_admission > 0 then
  interval = math.min(math.max(math.floor(present * ms_per_admission / 30000), 2), 60)
end
local credit = 0
if prequeue_secs > 0 then
  credit = math.max(3 * interval * 1000 + 2000 - lim.ttl, 0)
end
local mark = now + credit

local away_since = tonumber(redis.call('ZSCORE', D, ticket))
if away_since then
  -- Back within hold: present again; first in line for a grant if the admitter has passed
  -- its slot (its turn has come or gone by while it was away).
  redis.call('ZREM', W, ticket)
  redis.call('ZREM', D, ticket)
  redis.call('ZADD', H, mark, ticket)
  local cursor = tonumber(redis.call('HGET', S, 'cursor'))
  if not counted or (cursor and tonumber(slot) <= cursor) then
    redis.call('ZADD', R, slot, ticket)
  end
  redis.call('HINCRBY', S, 'returned', 1)
  redis.call('HINCRBY', S, 'returned_total', 1)
  redis.call('LPUSH', RM, math.max(now - away_since, 0))
  redis.call('LTRIM', RM, 0, 65535)
  keep(lim, H, R, RM)
else
  -- Heartbeats are written coarsely (eight per allowance at most): a waiter polling at the
  -- suggested pace is never taken for away, and a crowd's polls are mostly reads.
  local seen = tonumber(redis.call('ZSCORE', H, ticket)) or 0
  if math.abs(mark - seen) >= (lim.ttl + credit) / 8 then
    redis.call('ZADD', H, mark, ticket)
  end
end
local record = redis.call('HGET', T, ticket)
local joined = now
if record then
  joined = tonumber((split(record)))
end
local restoring_now = 0
if restoring(now) then
  restoring_now = 1
end
-- The slot (a string: it may be fractional) and the grants so far let the node answer this
-- waiter's next polls itself (src/store/redis/waiters.rs).
local granted = tonumber(redis.call('HGET', S, 'q_granted')) or 0
return {2, ahead, joined, prequeue, away_ahead, restoring_now, interval, string.format('%.17g', tonumber(slot)), granted}
