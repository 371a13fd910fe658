-- tick(now, node, token, lease_ms, bound, generation, heard_generation, n, [ticket, credit] * n,
--      [session_id, seen]..., release_pm, take_answers, answers): one node's call per tick.
-- `generation` is the node's candidate should the room's state be new.
--  1. Writes the session touches this node saw since its last tick (touches stay local
--     between ticks, so a proxied request makes no Redis call); reports sessions now ended.
--     Writes the heartbeats of the n waiters this node heard (polls it answered itself, with
--     the credit their poll interval earns, or refused by the poll budget, with none) if they
--     are of `heard_generation`: present now, as if their polls had run poll.lua.
--  2. Holds or takes the admitter lease: a token "node:fence" with a TTL. Only the holder
--     does step 3, checked here, in the same atomic script, so two nodes never admit at once.
--  3. Expires sessions and grants; marks waiters away (no poll for waiter_ttl; skipped,
--     place held) and abandons those away past hold; grants those who came back after
--     their turn, then onwards from the cursor, within the budget (none while an opened
--     pre-queue awaits its draw, which the holder makes after this call), noting each place
--     of the last draw the cursor passes (the draw's walk). The budget refills at
--     admit_per_minute × release_pm / 1000: the holder's make-up for grants left unclaimed.
--  4. Adds the node's forwarded answers since its last tick (`answers`: "i:count,..." over
--     [errors, latency bucket 0, 1, ...], for the adaptive outflow) to the room's sums in S;
--     the lease holder, when `take_answers` is 1, takes the sums (every node's) and resets
--     them: one controller per room decides from every node's figures.
--  5. Returns the room's figures and limits, which the node caches for one tick, and the
--     room's running totals of what step 3 counts: a node whose answer was lost (Redis
--     stalled past the node's timeout, then ran the queued tick) counts it with the next
--     answer, by the difference from the totals it last saw (see `RedisRoom::tick`).
-- After a gap longer than a lease in which no node ticked (Redis was down, stopped or cut
-- off), nobody could poll: waiters get one waiter_ttl of grace from the first tick after it,
-- in which nobody is found away, abandoned, or loses an unclaimed turn.
-- Errors, then the latency buckets of `room::adaptive::Answers` (checked by its tests).
local ANSWER_SLOTS = 61
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
local node, token, lease_ms, bound = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local gen = generation(ARGV[6], now)

local last_tick = tonumber(redis.call('HGET', S, 'last_tick'))
if last_tick and now - last_tick > lease_ms then
  redis.call('HSET', S, 'grace_from', now)
end
redis.call('HSET', S, 'last_tick', now)
local grace_from = tonumber(redis.call('HGET', S, 'grace_from'))
local in_grace = grace_from ~= nil and now < grace_from + lim.ttl

local heard = tonumber(ARGV[8]) or 0
if ARGV[7] == tostring(gen) then
  -- Only those present (XX), and never moving a deadline earlier (GT). One ZADD per 512
  -- waiters, not one each (unpack's stack is bounded): a node's heartbeats cost Redis a
  -- few commands a tick, however many waiters polled it.
  local batch = {}
  for i = 9, 8 + 2 * heard, 2 do
    batch[#batch + 1] = now + (tonumber(ARGV[i + 1]) or 0)
    batch[#batch + 1] = ARGV[i]
    if #batch == 1024 then
      redis.call('ZADD', H, 'XX', 'GT', unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then
    redis.call('ZADD', H, 'XX', 'GT', unpack(batch))
  end
end

local release_pm = tonumber(ARGV[#ARGV - 2]) or 1000
local take_answers = ARGV[#ARGV - 1] == '1'
for i, n in string.gmatch(ARGV[#ARGV], '(%d+):(%d+)') do
  redis.call('HINCRBY', S, 'answers:' .. i, n)
end
local ended = {}
for i = 9 + 2 * heard, #ARGV - 4, 2 do
  -- A use without a time (the node runs on Redis's clock) was seen in this tick.
  local id, seen = ARGV[i], math.min(tonumber(ARGV[i + 1]) or now, now)
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

-- The lease is the caller's if it holds its token, or one naming its node (node ids are
-- random per process): a tick of this node whose answer was lost (Redis stalled past the
-- node's timeout, then ran it) may have taken the lease again under a new fence.
local holder = redis.call('GET', A)
if holder and (holder == token or string.sub(holder, 1, #node + 1) == node .. ':') then
  token = holder
  redis.call('PEXPIRE', A, lease_ms)
elseif not holder then
  token = string.format('%s:%d', node, redis.call('HINCRBY', S, 'fence', 1))
  redis.call('SET', A, token, 'PX', lease_ms)
else
  token = ''
end

local granted, abandoned, expired_grants, expired_sessions, away, returned = 0, 0, 0, 0, 0, 0
local waits, away_ms = {}, {}
if token ~= '' then
  -- Idle sessions, then those past their lifetime.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', SS, '-inf', now - lim.idle, 'LIMIT', 0, bound)) do
    expired_sessions = expired_sessions + end_session(id)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', SX, '-inf', now, 'LIMIT', 0, bound)) do
    expired_sessions = expired_sessions + end_session(id)
  end

  -- Opened, or its opening time cleared: the pre-queue's range is closed, and the holder
  -- draws it after this call (draw_begin.lua, draw_place.lua). Until it has, nobody is
  -- granted: not even those who came after the pre-queue.
  local undrawn = close_prequeue(lim, now)

  -- Returns since the last tick (written by poll.lua), for the metrics.
  returned = tonumber(redis.call('HGET', S, 'returned')) or 0
  redis.call('HSET', S, 'returned', 0)
  away_ms = redis.call('LRANGE', RM, 0, -1)
  redis.call('DEL', RM)

  -- Grants not claimed in time return their slot to the budget. The waiter is away, not
  -- gone: its place is held from the turn it did not claim (uncounted, see prelude.lua).
  local due = {}
  if not in_grace then
    due = redis.call('ZRANGEBYSCORE', G, '-inf', now, 'WITHSCORES', 'LIMIT', 0, bound)
  end
  for i = 1, #due, 2 do
    local t, granted_at = due[i], tonumber(due[i + 1]) - lim.claim
    redis.call('ZREM', G, t)
    expired_grants = expired_grants + 1
    if granted_at + lim.hold <= now then
      release(t)
      redis.call('HINCRBY', S, 'abandoned_total', 1)
      abandoned = abandoned + 1
    else
      hold_uncounted(t, granted_at)
      away = away + 1
    end
  end

  -- Claims are remembered for a claim window (see poll.lua).
  for _, t in ipairs(redis.call('ZRANGEBYSCORE', CT, '-inf', now - lim.claim, 'LIMIT', 0, bound)) do
    redis.call('ZREM', CT, t)
    redis.call('HDEL', CL, t)
  end

  -- Away longer than hold: abandoned.
  local gone = {}
  if not in_grace then
    gone = redis.call('ZRANGEBYSCORE', D, '-inf', now - lim.hold, 'LIMIT', 0, bound)
  end
  for _, t in ipairs(gone) do
    abandon(t)
    abandoned = abandoned + 1
  end

  -- Present waiters whose last heartbeat is older than waiter_ttl are away.
  local stale = {}
  if not in_grace then
    stale = redis.call('ZRANGEBYSCORE', H, '-inf', now - lim.ttl, 'WITHSCORES', 'LIMIT', 0, bound)
  end
  for i = 1, #stale, 2 do
    local t = stale[i]
    local slot = redis.call('ZSCORE', Q, t)
    if slot then
      go_away(t, tonumber(stale[i + 1]), slot)
      away = away + 1
    elseif redis.call('ZSCORE', R, t) then
      hold_uncounted(t, tonumber(stale[i + 1]))
      away = away + 1
    else
      redis.call('ZREM', H, t)
    end
  end

  -- Off lets everyone in: the line drains at up to `bound` a tick, past any limit.
  local off = lim.mode == 'off'
  local closed = restoring(now) or undrawn
    or (not off and (lim.mode == 'paused' or lim.mode == 'closed' or (lim.opens ~= nil and now < lim.opens)))
  if not closed then
    local tokens, updated = refill({ rate = lim.rate * release_pm / 1000.0 }, now)
    local free = lim.max_active - redis.call('ZCARD', SS) - redis.call('ZCARD', G)
    local budget = math.min(math.max(free, 0), math.floor(tokens))
    if off then
      budget = bound
    end

    -- Grants the waiter if present; one unseen for waiter_ttl goes away instead.
    local function try_grant(t, slot)
      local seen = tonumber(redis.call('ZSCORE', H, t))
      if not seen then
        return false
      end
      if seen + lim.ttl <= now and not in_grace then
        if redis.call('ZSCORE', Q, t) then
          go_away(t, seen, slot)
        else
          hold_uncounted(t, seen)
        end
        away = away + 1
        return false
      end
      -- Counted: every waiter still short of the cursor had this one ahead of it.
      redis.call('HINCRBY', S, 'q_granted', redis.call('ZREM', Q, t))
      redis.call('ZREM', H, t)
      redis.call('ZREM', R, t)
      redis.call('ZADD', G, now + lim.claim, t)
      local joined, client, kept = record(t)
      -- A turn not claimed is held by the slot in the ticket's record (poll.lua): it follows
      -- the line's here, where a draw moved it (draw_place.lua leaves records alone).
      if joined and tonumber(kept) ~= tonumber(slot) then
        redis.call('HSET', T, t, string.format('%d:%s:%s', joined, client, slot))
      end
      joined = joined or now
      waits[#waits + 1] = math.max(now - joined, 0)
      tokens = tokens - 1
      budget = budget - 1
      granted = granted + 1
      return true
    end

    -- First those who came back after the admitter passed their slot, in slot order. Each
    -- waiter is looked at once, granted or skipped, and no more than `bound` per tick.
    local looked = 0
    while budget > 0 and looked < bound do
      local back = redis.call('ZRANGE', R, 0, budget - 1, 'WITHSCORES')
      if #back == 0 then
        break
      end
      for i = 1, #back, 2 do
        if budget == 0 then
          break
        end
        redis.call('ZREM', R, back[i])
        looked = looked + 1
        try_grant(back[i], back[i + 1])
      end
    end

    -- Then onwards from the cursor, noting each place of the last draw it passes (DW).
    local drawn = redis.call('HMGET', S, 'draw_first', 'draw_end', 'draw_drawn')
    local draw_first, draw_end = tonumber(drawn[1]), tonumber(drawn[2])
    if not drawn[3] then
      draw_first = nil
    end
    local cursor = redis.call('HGET', S, 'cursor')
    while budget > 0 and looked < bound do
      local from = cursor and ('(' .. cursor) or '-inf'
      local batch = redis.call('ZRANGEBYSCORE', Q, from, '+inf', 'WITHSCORES', 'LIMIT', 0, budget)
      if #batch == 0 then
        break
      end
      for i = 1, #batch, 2 do
        if budget == 0 then
          break
        end
        cursor = batch[i + 1]
        looked = looked + 1
        local admitted = try_grant(batch[i], cursor)
        local slot = tonumber(cursor)
        if draw_first and slot >= draw_first and slot < draw_end then
          redis.call('RPUSH', DW, string.format('%d:%s:%d', slot - draw_first, batch[i], admitted and 1 or 0))
        end
      end
    end
    if cursor then
      redis.call('HSET', S, 'cursor', cursor)
    end
    -- Off spends no tokens: a room switched back starts with what it had, not a debt.
    save_bucket(math.max(tokens, 0), updated)
    meter_record(now, granted)
  end
  keep(lim, L, S, Q, H, G, T, K, N, SS, SX, SC, M, CL, CT, W, D, R, RS, DW)
end

local limits_now = redis.call('HMGET', L, 'max_active', 'admit_per_minute', 'session_idle', 'session_max',
  'waiter_ttl', 'claim_window', 'mode', 'opens_at', 'tickets_per_client', 'message', 'hold', 'off_until',
  'off_then', 'adaptive_pinned')
-- What this tick counted, added to the running totals (abandoned_total is kept by abandon()
-- and the expired-grant branch, returned_total by poll.lua as each return happens).
if away > 0 then
  redis.call('HINCRBY', S, 'away_total', away)
end
if expired_grants > 0 then
  redis.call('HINCRBY', S, 'expired_grants_total', expired_grants)
end
local totals = redis.call('HMGET', S, 'abandoned_total', 'away_total', 'returned_total', 'expired_grants_total')
for i = 1, 4 do
  totals[i] = tonumber(totals[i]) or 0
end
-- The line as the nodes answer polls from it until the next tick (waiters.rs).
local line = redis.call('HMGET', S, 'cursor', 'q_granted', 'prequeue_from', 'prequeue_end')
local restoring_now = 0
if restoring(now) then
  restoring_now = 1
end
local view = {line[1] or '', tonumber(line[2]) or 0, line[3] or '', restoring_now, line[4] or ''}
local answers = {}
if take_answers and token ~= '' then
  local fields = {}
  for i = 0, ANSWER_SLOTS - 1 do
    fields[#fields + 1] = 'answers:' .. i
  end
  for i, n in ipairs(redis.call('HMGET', S, unpack(fields))) do
    answers[i] = tonumber(n) or 0
  end
  redis.call('HDEL', S, unpack(fields))
end
return {token, {granted, abandoned, expired_grants, expired_sessions, away, returned}, figures(now), ended, waits,
  limits_now, away_ms, gen, totals, view, answers}
