-- draw_place(now, from, end, last, token, lease_ms, [ticket, slot]...): moves drawn tickets
-- to their slots (`from` + place in the drawn order) in the line and its away and returned
-- sets, if the pre-queue is still [from, end) and undrawn: one command per set for the whole
-- batch (at most 2,000 tickets: Lua's unpack takes 8,000 values). The tickets' records keep
-- their arrival slot until granted (tick.lua writes the drawn one then). Placing is idempotent: a holder that lost the
-- lease midway is followed by one that places the same. `last` = 1 on the last batch: the
-- draw is made and published, and the line opens in its order. Each batch renews the
-- holder's lease (`token`): a long draw is not taken for a dead holder and drawn twice.
-- Answers 1, or 0 if the pre-queue changed meanwhile (the holder starts again at its next
-- tick).
local now = clock(ARGV[1])
local from, last = ARGV[2], ARGV[4]
local pq = redis.call('HMGET', S, 'prequeue_from', 'prequeue_end')
if pq[1] ~= from or pq[2] ~= ARGV[3] then
  return 0
end
if redis.call('GET', A) == ARGV[5] then
  redis.call('PEXPIRE', A, tonumber(ARGV[6]))
end
local scored = {}
for i = 7, #ARGV, 2 do
  scored[#scored + 1] = ARGV[i + 1]
  scored[#scored + 1] = ARGV[i]
end
if #scored > 0 then
  -- XX: only where the ticket is (in line; away; come back), never adding it elsewhere.
  -- The away and returned sets are mostly empty: not asked to look up 2,000 tickets then.
  for _, set in ipairs({Q, W, R}) do
    if set == Q or redis.call('ZCARD', set) > 0 then
      redis.call('ZADD', set, 'XX', unpack(scored))
    end
  end
end
if last == '1' then
  redis.call('HSET', S, 'draw_first', from, 'draw_end', ARGV[3], 'draw_drawn', now)
  redis.call('HDEL', S, 'prequeue_from', 'prequeue_end')
  redis.call('DEL', DW)
end
return 1
