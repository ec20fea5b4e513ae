-- RedisAdmission's settlement batch: the corrections of many settled or cancelled requests in
-- one call, applied in the order they were made, with the Redis clock.
--
-- KEYS: the keys the corrections touch. ARGV: groups of four: op, key index, amount, extra.
--   G: give back `amount` us to the bucket field `extra` (r or t); never fuller than full.
--   D: take `amount` us more from the bucket field `extra` (usage above what was reserved).
--   H: end a hold of `amount` in the quota field `extra` (h<minute>).
--   U: add `amount` to the quota's count; `extra` is the key's EXPIREAT.
-- Reply: the number of corrections applied.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local function expire_bucket(key)
  local tats = redis.call('HMGET', key, 'r', 't')
  local last = math.max(tonumber(tats[1] or '0'), tonumber(tats[2] or '0'))
  if last > now then
    redis.call('PEXPIRE', key, math.ceil((last - now) / 1000) + 1000)
  else
    redis.call('DEL', key)
  end
end

local applied = 0
for i = 1, #ARGV, 4 do
  local op, key, amount, extra = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op == 'G' then
    local tat = tonumber(redis.call('HGET', key, extra) or '0')
    -- A bucket that is full already (or gone, which is the same) stays as it is.
    if tat > now then
      local back = math.max(tat - tonumber(amount), now)
      redis.call('HSET', key, extra, string.format('%.17g', back))
      expire_bucket(key)
    end
  elseif op == 'D' then
    local tat = tonumber(redis.call('HGET', key, extra) or '0')
    local owed = math.max(tat, now) + tonumber(amount)
    redis.call('HSET', key, extra, string.format('%.17g', owed))
    expire_bucket(key)
  elseif op == 'H' then
    local left = redis.call('HINCRBY', key, extra, '-' .. amount)
    if left <= 0 then
      redis.call('HDEL', key, extra)
    end
  elseif op == 'U' then
    redis.call('HINCRBY', key, 'used', amount)
    redis.call('EXPIREAT', key, extra)
  end
  applied = applied + 1
end
return applied
