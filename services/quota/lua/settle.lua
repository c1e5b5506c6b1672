-- Turns a reservation into actual usage in the windows it was reserved in.
-- ARGV: 1 reservation id, 2 actual tokens, 3 actual micro-dollars, 4 now (ms),
--       5 tombstone ttl (s), 6 day window id, 7 month window id, 8 day key expiry (s),
--       9 month key expiry (s), 10.. policy (see read_policy).
-- A live reservation: its reserved amounts are returned and the actuals added as used.
-- A released or expired one (tombstone): the work still happened, so the actuals are added
-- as used, and nothing is returned twice. A settled one: a run totalled again after late
-- events settles only what its new actuals add (each of tokens and micro-dollars only ever
-- grows, so a repeat or an older total arriving late changes nothing): 'resettled'.
local rid = ARGV[1]
local window_ids = {ARGV[6], ARGV[7]}
local expire_ats = {ARGV[8], ARGV[9]}
local policy = read_policy(10)

local status, previous, tokens, micro
local live = redis.call('HMGET', KEYS[3], 'day', 'month', 'tokens', 'micro', 'expires_at')
local expires_at = live[5]
if live[1] then
  if live[1] ~= window_ids[1] or live[2] ~= window_ids[2] then
    return cjson.encode({status = 'conflict'})
  end
  tokens, micro = tonumber(live[3]), tonumber(live[4])
  for p = 1, 2 do
    unreserve(KEYS[p], tokens, micro)
  end
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[5], rid)
  status, previous = 'settled', 'reserved'
else
  local done = redis.call('HMGET', KEYS[4], 'state', 'day', 'month', 'tokens', 'micro',
    'actual_tokens', 'actual_micro', 'expires_at')
  if not done[1] then
    return cjson.encode({status = 'unknown'})
  end
  if done[2] ~= window_ids[1] or done[3] ~= window_ids[2] then
    return cjson.encode({status = 'conflict'})
  end
  tokens, micro, expires_at = tonumber(done[4]), tonumber(done[5]), done[8]
  if done[1] == 'settled' then
    local had_tokens, had_micro = tonumber(done[6]), tonumber(done[7])
    local add_tokens = math.max(0, tonumber(ARGV[2]) - had_tokens)
    local add_micro = math.max(0, tonumber(ARGV[3]) - had_micro)
    if add_tokens == 0 and add_micro == 0 then
      return cjson.encode({status = 'already_settled', tokens = tokens, micro = micro,
        actual_tokens = had_tokens, actual_micro = had_micro})
    end
    for p = 1, 2 do
      add_used(KEYS[p], add_tokens, add_micro, expire_ats[p])
    end
    redis.call('HSET', KEYS[4], 'actual_tokens', int(had_tokens + add_tokens),
      'actual_micro', int(had_micro + add_micro))
    local alerts = {}
    for p = 1, 2 do
      fire_alerts(alerts, policy, p, window_ids[p], counters(KEYS[p]), expire_ats[p])
    end
    return cjson.encode({status = 'resettled', tokens = tokens, micro = micro,
      actual_tokens = had_tokens + add_tokens, actual_micro = had_micro + add_micro,
      alerts = alerts})
  end
  previous = done[1]
  status = previous == 'released' and 'settled_after_release' or 'settled_after_expiry'
end

for p = 1, 2 do
  add_used(KEYS[p], tonumber(ARGV[2]), tonumber(ARGV[3]), expire_ats[p])
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'state', 'settled', 'previous_state', previous,
  'day', window_ids[1], 'month', window_ids[2], 'tokens', int(tokens), 'micro', int(micro),
  'actual_tokens', ARGV[2], 'actual_micro', ARGV[3], 'expires_at', expires_at,
  'finished_at', ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[5])

local alerts = {}
for p = 1, 2 do
  fire_alerts(alerts, policy, p, window_ids[p], counters(KEYS[p]), expire_ats[p])
end
return cjson.encode({status = status, tokens = tokens, micro = micro,
  actual_tokens = tonumber(ARGV[2]), actual_micro = tonumber(ARGV[3]), alerts = alerts})
