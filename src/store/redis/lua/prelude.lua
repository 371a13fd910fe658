-- Shared by every usher script (DESIGN §8). All keys of a room share one hash tag, so a
-- script touches one Redis Cluster slot. Times are Unix milliseconds: Redis's own clock
-- (TIME), so that every node agrees, unless the caller gives one (the tests do).
local L, S, Q, H, G, T, K, N, SS, SX, SC, M, A, CL, CT, W, D, R, RM, RS, DW = unpack(KEYS)
-- L  limits (hash)                 S  counters: next ticket, bucket, meter, pre-queue, fence,
--                                     cursor (the last slot the admitter passed), returns
-- Q  in line: ticket -> line slot  H  present: ticket -> last heartbeat
-- W  away: ticket -> line slot     D  away: ticket -> last heartbeat (abandoned after hold)
-- R  came back after the cursor passed: ticket -> slot (granted first)
-- A waiter whose turn came and went unclaimed is held in D (and R on return) but not put
-- back in Q or W: counting it again would grow the number ahead of everyone behind it.
-- RM how long each return was away (ms), drained by the tick
-- G  granted: ticket -> claim deadline
-- T  ticket -> "joined_ms:client:slot"  K  client -> live tickets   N  client -> newest ticket
-- SS session -> last seen          SX session -> expires      SC session -> created
-- M  admissions per second (60 slots "sec:count")             A  admitter lease "node:fence"
-- CL claimed ticket -> "session:expires:waited"   CT claimed ticket -> when (kept a claim window)
-- RS restored: "generation:ticket" of an earlier generation -> ticket in this one
-- DW the last draw's walk: "position:ticket:admitted" for each drawn place the admitter passed
-- S holds the pre-queue (prequeue_from, and prequeue_end once the event opened) and its draw
-- (draw_seed, draw_committed; draw_first, draw_end, draw_drawn once drawn): see draw.rs.
-- S also holds the keyspace's generation (a random id, gone with the keyspace) and when it
-- began, the end of a restore window, and the last tick and grace start (outages).

-- The time of this call: the caller's if it gives one, else Redis's.
local function clock(given)
  if given and given ~= '' then
    return tonumber(given)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The keyspace's generation; a new one (the caller's random `candidate`) if there is none,
-- because this room's state is new or was lost. A candidate "id:window_ms" comes from a node
-- that knew the generation before. Returns it and when it began.
local function generation(candidate, now)
  local g = redis.call('HMGET', S, 'generation', 'generation_ms')
  if g[1] then
    return g[1], tonumber(g[2]) or now
  end
  local id, window = string.match(candidate, '^(%d+):(%d+)$')
  if id then
    -- The node asking knew an earlier generation: Redis lost the room's state, and a line
    -- is coming back. Nobody is admitted or granted for a restore window, not even a
    -- newcomer to a room that looks empty, so those from before go first (restore.lua).
    redis.call('HSET', S, 'restore_until', now + tonumber(window))
    candidate = id
  end
  redis.call('HSET', S, 'generation', candidate, 'generation_ms', now)
  return candidate, now
end

-- Whether the restore window is open: after a generation change, while those coming back
-- are collected, nobody is granted (see restore.lua).
local function restoring(now)
  local until_ms = tonumber(redis.call('HGET', S, 'restore_until'))
  return until_ms ~= nil and now < until_ms
end

local function limits()
  local v = redis.call('HMGET', L, 'max_active', 'admit_per_minute', 'session_idle', 'session_max',
    'waiter_ttl', 'claim_window', 'mode', 'opens_at', 'tickets_per_client', 'hold')
  if not v[1] then
    return nil
  end
  local lim = {
    max_active = tonumber(v[1]), rate = tonumber(v[2]), idle = tonumber(v[3]), smax = tonumber(v[4]),
    ttl = tonumber(v[5]), claim = tonumber(v[6]), mode = v[7], opens = tonumber(v[8]), cap = tonumber(v[9]),
  }
  -- A place is held at least until its waiter could be noticed away.
  lim.hold = math.max(tonumber(v[10]) or 600000, lim.ttl)
  -- State lives as long as the longest thing in it, plus an hour of slack.
  lim.keep = math.max(lim.smax, lim.idle, lim.hold, lim.claim) + 3600000
  return lim
end

-- A pre-queue begins: its draw's seed (the caller's random `seed`) is fixed now, before its
-- first ticket, unless one announced earlier is still undrawn (draw.rs).
local function commit(seed, now)
  local d = redis.call('HMGET', S, 'draw_seed', 'draw_drawn')
  if d[1] and not d[2] then
    return
  end
  redis.call('HSET', S, 'draw_seed', seed, 'draw_committed', now)
  redis.call('HDEL', S, 'draw_first', 'draw_end', 'draw_drawn')
  redis.call('DEL', DW)
end

-- The event opened (or its opening time was cleared) while a pre-queue was collected: its
-- range is closed, so later arrivals are never drawn in with it, until the lease holder
-- draws it (draw_*.lua); an opening moved back into the future before the draw opens it
-- again. True while an opened pre-queue awaits its draw.
local function close_prequeue(lim, now)
  if redis.call('HEXISTS', S, 'prequeue_from') == 0 then
    return false
  end
  if lim.opens and now < lim.opens then
    redis.call('HDEL', S, 'prequeue_end')
    return false
  end
  redis.call('HSETNX', S, 'prequeue_end', tonumber(redis.call('HGET', S, 'next_ticket')) or 0)
  return true
end

local function no_limits()
  return redis.error_reply('USHER_NOLIMITS room limits are missing')
end

local function keep(lim, ...)
  for _, key in ipairs({...}) do
    redis.call('PEXPIRE', key, lim.keep)
  end
end

local function split(v)
  local p = string.find(v, ':', 1, true)
  return string.sub(v, 1, p - 1), string.sub(v, p + 1)
end

-- The outflow bucket: admit_per_minute, up to two seconds' worth in reserve.
local function capacity(rate)
  return math.max(rate / 30.0, 1.0)
end

local function refill(lim, now)
  local b = redis.call('HMGET', S, 'tokens', 'bucket_ms')
  local tokens, updated = tonumber(b[1]), tonumber(b[2])
  if not tokens then
    tokens, updated = capacity(lim.rate), now
  end
  tokens = math.min(tokens + math.max(now - updated, 0) * lim.rate / 60000.0, capacity(lim.rate))
  return tokens, math.max(updated, now)
end

local function save_bucket(tokens, updated)
  redis.call('HSET', S, 'tokens', tostring(tokens), 'bucket_ms', updated)
end

local function meter_record(now, n)
  if n == 0 then
    return
  end
  local m = redis.call('HMGET', S, 'meter_since', 'meter_last')
  local since, last = tonumber(m[1]) or 0, tonumber(m[2]) or 0
  if now - last > 60000 or since == 0 then
    since = now
  end
  redis.call('HSET', S, 'meter_since', since, 'meter_last', now)
  local sec = math.floor(now / 1000)
  local slot = sec % 60
  local count = 0
  local cur = redis.call('HGET', M, slot)
  if cur then
    local s, c = split(cur)
    if tonumber(s) == sec then
      count = tonumber(c)
    end
  end
  redis.call('HSET', M, slot, string.format('%d:%d', sec, count + n))
end

-- Admissions per minute over the last minute; -1 for "not enough history yet".
local function per_minute(now)
  local m = redis.call('HMGET', S, 'meter_since', 'meter_last')
  local since, last = tonumber(m[1]) or 0, tonumber(m[2]) or 0
  if since == 0 then
    return -1
  end
  if now - last > 60000 then
    return 0
  end
  local sec = math.floor(now / 1000)
  local count = 0
  local all = redis.call('HGETALL', M)
  for i = 1, #all, 2 do
    local s, c = split(all[i + 1])
    s = tonumber(s)
    if s + 60 > sec and s <= sec then
      count = count + tonumber(c)
    end
  end
  local window = math.min(math.max(now - since, 0), 60000)
  if window < 10000 then
    return -1
  end
  return math.floor(count * 60000 / window)
end

local function new_session(lim, id, now)
  local expires = now + lim.smax
  redis.call('ZADD', SS, now, id)
  redis.call('ZADD', SX, expires, id)
  redis.call('ZADD', SC, now, id)
  keep(lim, SS, SX, SC)
  return expires
end

local function end_session(id)
  local n = redis.call('ZREM', SS, id)
  redis.call('ZREM', SX, id)
  redis.call('ZREM', SC, id)
  return n
end

-- A ticket's record: when it joined, its client, and its slot in line.
local function record(ticket)
  local v = redis.call('HGET', T, ticket)
  if not v then
    return nil
  end
  local joined, rest = split(v)
  local client, slot = rest, nil
  if string.find(rest, ':', 1, true) then
    client, slot = split(rest)
  end
  return tonumber(joined), client, slot or ticket
end

-- Forgets a ticket's record and gives its client the place back; returns when it joined.
local function release(ticket)
  local joined, client = record(ticket)
  if not joined then
    return nil
  end
  redis.call('HDEL', T, ticket)
  if redis.call('HINCRBY', K, client, -1) <= 0 then
    redis.call('HDEL', K, client)
    redis.call('HDEL', N, client)
  end
  return joined
end

-- An in-line waiter unseen since `seen` is away: skipped, its place held until seen + hold.
local function go_away(ticket, seen, slot)
  redis.call('ZREM', H, ticket)
  redis.call('ZREM', R, ticket)
  redis.call('ZADD', W, slot, ticket)
  redis.call('ZADD', D, seen, ticket)
end

-- A waiter held but not counted in positions (its turn went unclaimed): away until hold.
local function hold_uncounted(ticket, seen)
  redis.call('ZREM', H, ticket)
  redis.call('ZREM', R, ticket)
  redis.call('ZADD', D, seen, ticket)
end

-- An away waiter gone past hold: the place is given up.
local function abandon(ticket)
  redis.call('ZREM', Q, ticket)
  redis.call('ZREM', W, ticket)
  redis.call('ZREM', D, ticket)
  redis.call('ZREM', H, ticket)
  redis.call('ZREM', R, ticket)
  release(ticket)
  redis.call('HINCRBY', S, 'abandoned_total', 1)
end

local function figures(now)
  local totals = redis.call('HMGET', S, 'returned_total', 'abandoned_total')
  local held = redis.call('ZCARD', D)
  local waiting = redis.call('ZCARD', Q) + held - redis.call('ZCARD', W)
  return {waiting, redis.call('ZCARD', SS), redis.call('ZCARD', G), per_minute(now),
    held, tonumber(totals[1]) or 0, tonumber(totals[2]) or 0}
end
