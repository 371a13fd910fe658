-- draw_read(now, seed): the room's draw as published (draw.rs): {seed, committed, first, end,
-- drawn, walk...} ('' where unset), with the admitter's whole walk through it. While an
-- event is announced, a commitment exists even before the first visitor (`seed` if none).
local lim = limits()
if not lim then
  return no_limits()
end
local now = clock(ARGV[1])
if lim.opens and now < lim.opens then
  commit(ARGV[2], now)
end
local d = redis.call('HMGET', S, 'draw_seed', 'draw_committed', 'draw_first', 'draw_end', 'draw_drawn')
local walk = redis.call('LRANGE', DW, 0, -1)
return {d[1] or '', d[2] or '', d[3] or '', d[4] or '', d[5] or '', walk}
