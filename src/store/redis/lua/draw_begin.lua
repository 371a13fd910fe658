-- draw_begin(now, seed): the pre-queue the lease holder is to draw, once the event opened:
-- {from, end, seed}, or {} when there is none (see draw.rs). Fixes its end; `seed` serves
-- only a state that lost its commitment (one is made when a pre-queue begins).
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
if not close_prequeue(lim, now) then
  return {}
end
commit(ARGV[2], now)
local pq = redis.call('HMGET', S, 'prequeue_from', 'prequeue_end', 'draw_seed')
return {tonumber(pq[1]), tonumber(pq[2]), pq[3]}
