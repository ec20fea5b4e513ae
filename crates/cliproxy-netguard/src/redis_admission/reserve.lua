-- RedisAdmission's reserve: checks and takes, for one request, every limit that applies to it,
-- all of them or none, with the Redis clock. One call is one round trip (EVALSHA).
--
-- KEYS: 1 provider's minute buckets, 2 client key's minute buckets (hashes: r = requests TAT,
--       t = tokens TAT, microseconds since the Unix epoch), 3 provider's quota, 4 client key's
--       quota, 5 client key's budget (hashes: used = the period's count, h<minute> = what the
--       requests admitted in that minute hold).
-- ARGV: 1-5 provider buckets: requests interval (us, 0 = none), requests limit, tokens
--       interval (0 = none), tokens limit, tokens reserved; 6-10 the same for the client key;
--       11-12, 13-14, 15-16: limit (0 = none) and amount held for the provider's quota, the
--       client key's quota and its budget; 17-19 their keys' EXPIREAT; 20 how many minutes a
--       hold counts (older ones belong to requests whose instance never ended them);
--       21-22 the client address's shared bucket: interval (us, 0 = none) and burst; 23-24
--       the same for the shared global bucket. KEYS 6 and 7 are those buckets (field r).
-- Reply: {0, now_s, minute, then per bucket (provider r, t, client r, t) remaining and
--        reset-after in us (-1, -1 without one), then per quota used and held after the take}
--        or {n, now_s, minute, ...} for the n-th limit that refused (1-4 buckets in that order,
--        8 the address's, 9 the global one: remaining, reset-after us, retry-after us; 5-7
--        quotas: used, held). The address's and the global bucket are checked first.

local time = redis.call('TIME')
local now_s = tonumber(time[1])
local now = now_s * 1000000 + tonumber(time[2])
local minute = math.floor(now_s / 60)
-- Bucket arithmetic is in doubles (exact to 0.25 us at today's epoch): a decision that is
-- equal in exact arithmetic must not be refused for a rounding error.
local eps = 0.5

local function gcra(tat, cost, interval, limit)
  local capacity = interval * limit
  local base = math.max(tat, now)
  local new_tat = base + cost * interval
  local ahead = new_tat - now
  if ahead > capacity + eps then
    local owed = base - now
    local remaining = math.floor(math.max(capacity - owed, 0) / interval + 1e-9)
    return nil, remaining, math.ceil(owed), math.max(math.ceil(ahead - capacity), 1)
  end
  return new_tat, math.floor(math.max(capacity - ahead, 0) / interval + 1e-9), math.ceil(ahead)
end

-- The address's and the global bucket, in the order a request meets them, then the minute
-- buckets in the order LocalAdmission checks them.
local front = {
  {KEYS[6], 'r', tonumber(ARGV[21]), tonumber(ARGV[22]), 1, 8},
  {KEYS[7], 'r', tonumber(ARGV[23]), tonumber(ARGV[24]), 1, 9},
}
local front_taken = {}
for i, b in ipairs(front) do
  if b[3] > 0 then
    local tat = tonumber(redis.call('HGET', b[1], b[2]) or '0')
    local new_tat, remaining, reset, retry = gcra(tat, b[5], b[3], b[4])
    if not new_tat then
      return {b[6], now_s, minute, remaining, reset, retry}
    end
    front_taken[i] = new_tat
  end
end

local buckets = {
  {KEYS[1], 'r', tonumber(ARGV[1]), tonumber(ARGV[2]), 1},
  {KEYS[1], 't', tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])},
  {KEYS[2], 'r', tonumber(ARGV[6]), tonumber(ARGV[7]), 1},
  {KEYS[2], 't', tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])},
}
local taken = {}
local standing = {}
for i, b in ipairs(buckets) do
  if b[3] > 0 then
    local tat = tonumber(redis.call('HGET', b[1], b[2]) or '0')
    local new_tat, remaining, reset, retry = gcra(tat, b[5], b[3], b[4])
    if not new_tat then
      return {i, now_s, minute, remaining, reset, retry}
    end
    taken[i] = new_tat
    standing[#standing + 1] = remaining
    standing[#standing + 1] = reset
  else
    standing[#standing + 1] = -1
    standing[#standing + 1] = -1
  end
end

local oldest = minute - tonumber(ARGV[20]) + 1
-- The period's count and what live holds keep; holds of a minute past the window are
-- dropped (their requests' instance crashed or lost its settlement).
local function quota(key)
  local fields = redis.call('HGETALL', key)
  local used, held = 0, 0
  for i = 1, #fields, 2 do
    local name, value = fields[i], tonumber(fields[i + 1])
    if name == 'used' then
      used = value
    else
      local at = tonumber(string.sub(name, 2))
      if at and at >= oldest then
        held = held + value
      else
        redis.call('HDEL', key, name)
      end
    end
  end
  return used, held
end

local quotas = {
  {KEYS[3], tonumber(ARGV[11]), ARGV[12], ARGV[17]},
  {KEYS[4], tonumber(ARGV[13]), ARGV[14], ARGV[18]},
  {KEYS[5], tonumber(ARGV[15]), ARGV[16], ARGV[19]},
}
local counts = {}
for i, q in ipairs(quotas) do
  if q[2] > 0 then
    local used, held = quota(q[1])
    if math.max(q[2] - used, 0) - held <= 0 then
      return {4 + i, now_s, minute, used, held}
    end
    counts[i] = {used, held}
  end
end

-- Everything admits: take it all. A key's buckets are all taken when they are configured, so
-- the last of the new TATs is when the key's buckets are all full again: a full bucket is the
-- same as none, and the key goes then.
local full_at = {}
local order = {}
local function take(key, field, tat)
  redis.call('HSET', key, field, string.format('%.17g', tat))
  if not full_at[key] then
    order[#order + 1] = key
  end
  full_at[key] = math.max(full_at[key] or 0, tat)
end
for i, b in ipairs(buckets) do
  if taken[i] then
    take(b[1], b[2], taken[i])
  end
end
for i, b in ipairs(front) do
  if front_taken[i] then
    take(b[1], b[2], front_taken[i])
  end
end
for _, key in ipairs(order) do
  redis.call('PEXPIRE', key, math.ceil((full_at[key] - now) / 1000) + 1000)
end
local reply = {0, now_s, minute}
for _, v in ipairs(standing) do
  reply[#reply + 1] = v
end
for i, q in ipairs(quotas) do
  if counts[i] then
    if tonumber(q[3]) > 0 then
      redis.call('HINCRBY', q[1], 'h' .. minute, q[3])
      redis.call('EXPIREAT', q[1], q[4])
    end
    reply[#reply + 1] = counts[i][1]
    reply[#reply + 1] = counts[i][2] + tonumber(q[3])
  else
    reply[#reply + 1] = -1
    reply[#reply + 1] = -1
  end
end
return reply
