-- draw_place(now, from, end, last, token, lease_ms, [ticket, slot]...): moves drawn tickets to their slots
-- (`from` + place in the drawn order), wherever the line keeps one, if the pre-queue is
-- still [from, end) and undrawn. One command per key for the whole batch (at most 2,000
-- tickets: Lua's unpack takes 8,000 values). Placing is idempotent: a holder that lost the
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
local tickets, scored = {}, {}
for i = 7, #ARGV, 2 do
  tickets[#tickets + 1] = ARGV[i]
  scored[#scored + 1] = ARGV[i + 1]
  scored[#scored + 1] = ARGV[i]
end
if #tickets > 0 then
  -- XX: only where the ticket is (in line; away; come back), never adding it elsewhere.
  for _, set in ipairs({Q, W, R}) do
    redis.call('ZADD', set, 'XX', unpack(scored))
  end
  local records = redis.call('HMGET', T, unpack(tickets))
  local moved = {}
  for i, v in ipairs(records) do
    if v then
      local joined, rest = split(v)
      local client = rest
      if string.find(rest, ':', 1, true) then
        client = split(rest)
      end
      moved[#moved + 1] = tickets[i]
      moved[#moved + 1] = string.format('%s:%s:%s', joined, client, scored[2 * i - 1])
    end
  end
  if #moved > 0 then
    redis.call('HSET', T, unpack(moved))
  end
end
if last == '1' then
  redis.call('HSET', S, 'draw_first', from, 'draw_end', ARGV[3], 'draw_drawn', now)
  redis.call('HDEL', S, 'prequeue_from', 'prequeue_end')
  redis.call('DEL', DW)
end
return 1
