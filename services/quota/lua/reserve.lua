-- Reserves tokens and micro-dollars in the day and month windows at once, or refuses.
-- ARGV: 1 reservation id, 2 tokens, 3 micro-dollars, 4 now (ms), 5 expires at (ms),
--       6 day window id, 7 month window id, 8 day key expiry (s), 9 month key expiry (s),
--       10 '1' if hard, 11 subscription, 12 task id, 13.. policy (see read_policy).
local rid = ARGV[1]
local tokens, micro = tonumber(ARGV[2]), tonumber(ARGV[3])
local window_ids = {ARGV[6], ARGV[7]}
local expire_ats = {ARGV[8], ARGV[9]}
local hard = ARGV[10] == '1'
local policy = read_policy(13)

local frozen = redis.call('EXISTS', KEYS[6]) == 1
local windows = {counters(KEYS[1]), counters(KEYS[2])}

-- Idempotency: a reservation id seen before (live or finished) changes nothing.
local live_expiry = redis.call('HGET', KEYS[3], 'expires_at')
if live_expiry then
  return cjson.encode({status = 'duplicate', state = 'reserved', frozen = frozen,
    expires_at = tonumber(live_expiry), windows = windows})
end
local done = redis.call('HMGET', KEYS[4], 'state', 'expires_at')
if done[1] then
  return cjson.encode({status = 'duplicate', state = done[1], frozen = frozen,
    expires_at = tonumber(done[2]), windows = windows})
end

if frozen then
  return cjson.encode({status = 'rejected', reason = 'frozen', frozen = true, windows = windows})
end

local exceeded = {}
for p = 1, 2 do
  local c, limit = windows[p], policy.limits[p]
  if limit.tokens >= 0 and c.used_tokens + c.reserved_tokens + tokens > limit.tokens then
    exceeded[#exceeded + 1] = PERIODS[p] .. '_tokens'
  end
  if limit.usd >= 0 and c.used_micro + c.reserved_micro + micro > limit.usd then
    exceeded[#exceeded + 1] = PERIODS[p] .. '_usd'
  end
end
if hard and #exceeded > 0 then
  return cjson.encode({status = 'rejected', reason = 'over_limit', exceeded = exceeded,
    frozen = false, windows = windows})
end

for p = 1, 2 do
  redis.call('HINCRBY', KEYS[p], 'reserved_tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[p], 'reserved_micro', ARGV[3])
  redis.call('EXPIREAT', KEYS[p], expire_ats[p])
  windows[p].reserved_tokens = windows[p].reserved_tokens + tokens
  windows[p].reserved_micro = windows[p].reserved_micro + micro
end
redis.call('HSET', KEYS[3], 'subscription', ARGV[11], 'task_id', ARGV[12], 'tokens', ARGV[2],
  'micro', ARGV[3], 'day', ARGV[6], 'month', ARGV[7], 'created_at', ARGV[4],
  'expires_at', ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[5], rid)

local alerts = {}
for p = 1, 2 do
  fire_alerts(alerts, policy, p, window_ids[p], windows[p], expire_ats[p])
end
return cjson.encode({status = 'accepted', exceeded = exceeded, alerts = alerts, frozen = false,
  expires_at = tonumber(ARGV[5]), windows = windows})
