-- Helpers shared by the quota scripts; prepended to each script when it is registered.
--
-- Every script gets the same KEYS, all under one subscription's hash tag:
--   1 day window hash    2 month window hash   3 reservation hash   4 tombstone hash
--   5 expiry sorted set  6 freeze switch       7.. alert markers, ordered
--   (day, month) x (tokens, usd) x thresholds.
-- Window hashes hold used_tokens, reserved_tokens, used_micro and reserved_micro.
-- Time always comes from ARGV: scripts never read the server clock, so tests can move it.

local PERIODS = {'day', 'month'}
local METRICS = {'tokens', 'usd'}

-- Integers go back to Redis as plain digits; tostring() would write 1e+15 past 14 digits.
local function int(n)
  return string.format('%d', n)
end

local function counters(key)
  local v = redis.call('HMGET', key, 'used_tokens', 'reserved_tokens', 'used_micro',
    'reserved_micro')
  return {
    used_tokens = tonumber(v[1]) or 0,
    reserved_tokens = tonumber(v[2]) or 0,
    used_micro = tonumber(v[3]) or 0,
    reserved_micro = tonumber(v[4]) or 0,
  }
end

-- Limits (-1 = unlimited) for day then month, then the threshold count and thresholds.
local function read_policy(first)
  local n = tonumber(ARGV[first + 4])
  local thresholds = {}
  for i = 1, n do
    thresholds[i] = tonumber(ARGV[first + 4 + i])
  end
  return {
    limits = {
      {tokens = tonumber(ARGV[first]), usd = tonumber(ARGV[first + 1])},
      {tokens = tonumber(ARGV[first + 2]), usd = tonumber(ARGV[first + 3])},
    },
    thresholds = thresholds,
  }
end

-- Gives back reserved amounts. A window that expired meanwhile is left alone rather than
-- recreated with negative reservations.
local function unreserve(key, tokens, micro)
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'reserved_tokens', int(-tokens))
    redis.call('HINCRBY', key, 'reserved_micro', int(-micro))
  end
end

local function add_used(key, tokens, micro, expire_at)
  redis.call('HINCRBY', key, 'used_tokens', int(tokens))
  redis.call('HINCRBY', key, 'used_micro', int(micro))
  redis.call('EXPIREAT', key, expire_at)
end

-- Marks every threshold that used + reserved has reached; SET NX makes each fire once per
-- window, and only the markers this call created are reported.
local function fire_alerts(alerts, policy, period, window_id, c, expire_at)
  local n = #policy.thresholds
  local values = {c.used_tokens + c.reserved_tokens, c.used_micro + c.reserved_micro}
  for m, metric in ipairs(METRICS) do
    local limit = policy.limits[period][metric]
    local value = values[m]
    if limit >= 0 and value > 0 then
      for i, t in ipairs(policy.thresholds) do
        if value * 100 >= t * limit then
          local key = KEYS[6 + ((period - 1) * 2 + (m - 1)) * n + i]
          if redis.call('SET', key, int(value), 'NX', 'EXAT', expire_at) then
            alerts[#alerts + 1] = {PERIODS[period], window_id, metric, t, value, limit}
          end
        end
      end
    end
  end
end
