-- Gives a live reservation's amounts back to its windows and leaves a tombstone.
-- ARGV: 1 reservation id, 2 final state ('released' by a caller, 'expired' by the sweeper),
--       3 now (ms), 4 tombstone ttl (s), 5 day window id, 6 month window id.
-- The sweeper's 'expired' only applies once the reservation's own expiry has passed.
local rid, final_state = ARGV[1], ARGV[2]

local live = redis.call('HMGET', KEYS[3], 'day', 'month', 'tokens', 'micro', 'expires_at')
if live[1] then
  if live[1] ~= ARGV[5] or live[2] ~= ARGV[6] then
    return cjson.encode({status = 'conflict'})
  end
  if final_state == 'expired' and tonumber(live[5]) > tonumber(ARGV[3]) then
    return cjson.encode({status = 'not_expired'})
  end
  local tokens, micro = tonumber(live[3]), tonumber(live[4])
  for p = 1, 2 do
    unreserve(KEYS[p], tokens, micro)
  end
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[5], rid)
  redis.call('HSET', KEYS[4], 'state', final_state, 'day', live[1], 'month', live[2],
    'tokens', live[3], 'micro', live[4], 'expires_at', live[5], 'finished_at', ARGV[3])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  return cjson.encode({status = final_state, tokens = tokens, micro = micro})
end

-- Nothing live: a leftover expiry entry has nothing to give back.
redis.call('ZREM', KEYS[5], rid)
local done = redis.call('HMGET', KEYS[4], 'state', 'tokens', 'micro')
if done[1] then
  return cjson.encode({status = 'already_' .. done[1], tokens = tonumber(done[2]),
    micro = tonumber(done[3])})
end
return cjson.encode({status = 'unknown'})
