-- restore(now, client, old, joined, generation, window, seed): puts a waiter whose ticket
-- `old` ("generation:number") is of an earlier generation back in line by its original join
-- time: its slot lies before every slot of this generation (0, 1, ...), in join order. The
-- first restore opens a restore window of `window` ms in which nobody is granted, so those
-- coming back within one poll interval are ordered by when they joined, not by who polled
-- first. The same old ticket always gets the same new one. Answers {ticket, generation}.
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
local client, old, joined, window, seed = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[6]), ARGV[7]
local gen, started = generation(ARGV[5], now)
local known = redis.call('HGET', RS, old)
if known then
  return {tonumber(known), gen}
end
local ticket = redis.call('HINCRBY', S, 'next_ticket', 1) - 1
local slot
if lim.opens ~= nil and now < lim.opens then
  -- Inside a pre-queue the order is drawn anyway: back in it like anyone there.
  if redis.call('HSETNX', S, 'prequeue_from', ticket) == 1 then
    commit(seed, now)
  end
  slot = ticket
else
  -- By the second it joined (before this generation began), then by its old number: that
  -- kept the exact order within its generation. Exact in a double: 2^17 s x 2^26 numbers.
  local number = tonumber(string.match(old, ':(%d+)$')) or 0
  local secs = math.floor(math.min(joined, started) / 1000) - math.floor(started / 1000) - 1
  slot = secs * 67108864 + math.min(number, 67108863)
  if not redis.call('HGET', S, 'restore_until') then
    redis.call('HSET', S, 'restore_until', now + window)
  end
  -- The admitter has passed where it belongs: served first, as anyone whose turn has come.
  local cursor = tonumber(redis.call('HGET', S, 'cursor'))
  if cursor and slot <= cursor then
    redis.call('ZADD', R, slot, ticket)
  end
end
redis.call('ZADD', Q, slot, ticket)
redis.call('ZADD', H, now, ticket)
redis.call('HSET', T, ticket, string.format('%d:%s:%.17g', joined, client, slot))
redis.call('HINCRBY', K, client, 1)
redis.call('HSET', N, client, ticket)
redis.call('HSET', RS, old, ticket)
keep(lim, S, Q, H, T, K, N, R, RS)
return {ticket, gen}
