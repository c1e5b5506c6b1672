-- Prepended to reserve.lua on a single Redis server (the id's index key lies outside the
-- subscription's hash tag, so a Redis Cluster claims it in a command of its own first).
-- KEYS: those of reserve.lua, then the reservation id's index key (ns:rsub:<id>).
-- ARGV: those of reserve.lua, then the index key's time to live (s).
-- Claims the id for this subscription (ARGV[11]); an id another subscription holds is
-- answered 'claim_taken', reserving nothing: the caller decides whether it may take it.
local index_key = KEYS[#KEYS]
if not redis.call('SET', index_key, ARGV[11], 'NX', 'EX', ARGV[#ARGV]) then
  if redis.call('GET', index_key) ~= ARGV[11] then
    return 'claim_taken'
  end
end
