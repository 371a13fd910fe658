-- draw_begin(now, seed): the pre-queue the lease holder is to draw, once the event opened:
-- {from, end, seed}, or {} when there is none (see draw.rs). Fixes its end; `seed` serves
-- only a state that lost its commitment (one is made when a pre-queue begins).
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
local from = redis.call('HGET', S, 'prequeue_from')
if not from or (lim.opens and now < lim.opens) then
  return {}
end
redis.call('HSETNX', S, 'prequeue_end', tonumber(redis.call('HGET', S, 'next_ticket')) or 0)
commit(ARGV[2], now)
return {tonumber(from), tonumber(redis.call('HGET', S, 'prequeue_end')), redis.call('HGET', S, 'draw_seed')}
