"""The downloader's Lua scripts, run atomically by Redis (spec §2 "Atomic Lua scripts").

The key layout they touch is defined in :mod:`pazari.downloader.store` (``job:<id>``,
``jobs:<aggr_id>``, ``aggr:<aggr_id>``); scripts that derive a key from a member spell the
same prefixes. Scores are unix seconds, compared as numbers (the original compared strings).
"""

# Enqueue a job, creating its aggregation if absent, atomically (the original's HMSET +
# ZADD were separate, spec §2 Crash). KEYS: aggr, job, jobs. ARGV: now, n_aggr_pairs,
# aggr pairs..., job pairs...
ENQUEUE = """
local n = tonumber(ARGV[2])
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + n))
  created = 1
end
redis.call('HSET', KEYS[2], unpack(ARGV, 3 + n, #ARGV))
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[3 + n + 1])
return created
"""

# Pop up to ARGV[3] eligible jobs for download: each moves to the in-flight set, is marked
# InProgress and has its attempt counted; the hashes come back in the same round trip. A
# popped id without a hash is dropped. KEYS: jobs, inflight. ARGV: now, lease_until, n.
POP_DOWNLOADS = """
local now = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
if #top == 0 then return redis.error_reply('EMPTY') end
if tonumber(top[2]) > now then return redis.error_reply('RETRYLATER') end
local out = {}
for i = 1, #top, 2 do
  local id = top[i]
  if tonumber(top[i + 1]) > now then break end
  redis.call('ZREM', KEYS[1], id)
  local key = 'job:' .. id
  local hid = redis.call('HGET', key, 'ID')
  if hid and hid ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', key, 'DownloadState', 'InProgress', 'DownloadMeta', '',
               'ResponseCode', '0')
    redis.call('HINCRBY', key, 'DownloadCount', 1)
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
return out
"""

# The same for callbacks: InProgress, CallbackMeta cleared, CallbackCount counted (spec §4).
# KEYS: CallbackQueue, inflight. ARGV: now, lease_until, n.
POP_CALLBACKS = """
local now = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
if #top == 0 then return redis.error_reply('EMPTY') end
if tonumber(top[2]) > now then return redis.error_reply('RETRYLATER') end
local out = {}
for i = 1, #top, 2 do
  local id = top[i]
  if tonumber(top[i + 1]) > now then break end
  redis.call('ZREM', KEYS[1], id)
  local key = 'job:' .. id
  local hid = redis.call('HGET', key, 'ID')
  if hid and hid ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('HSET', key, 'CallbackState', 'InProgress', 'CallbackMeta', '')
    redis.call('HINCRBY', key, 'CallbackCount', 1)
    out[#out + 1] = redis.call('HGETALL', key)
  end
end
return out
"""

# Move expired in-flight downloads back to their aggregation queue (crash recovery).
# KEYS: inflight. ARGV: now, limit.
RECLAIM_DOWNLOADS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local aggr = redis.call('HGET', 'job:' .. id, 'AggrID')
  if aggr then
    redis.call('HSET', 'job:' .. id, 'DownloadState', 'Pending')
    redis.call('ZADD', 'jobs:' .. aggr, ARGV[1], id)
  end
end
return #ids
"""

# Same for callbacks: back to CallbackQueue as Pending.
RECLAIM_CALLBACKS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', 'job:' .. id) == 1 then
    redis.call('HSET', 'job:' .. id, 'CallbackState', 'Pending')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
  end
end
return #ids
"""

# Extend leases of in-flight ids only where they are still ours (XX: never resurrect).
# spec §2 delaggr: drop an aggregation hash only when its queue is empty.
DELAGGR = """
if redis.call('ZCOUNT', KEYS[1], '-inf', '+inf') > 0 then
  redis.call('HSET', KEYS[2], 'ExpiresAt', '')
  return 0
end
return redis.call('DEL', KEYS[2])
"""

# The aggregation lease (spec §2 aggrpop) with numeric comparison. A missing hash (the
# original's NOTFOUND default aggregation, limit ARGV[3]) is created so it is leased too
# (limitation 4). KEYS: aggr. ARGV: now, lease_seconds, default_limit, aggr_id.
AGGRPOP = """
local exp = redis.call('HGET', KEYS[1], 'ExpiresAt')
local now = tonumber(ARGV[1])
if not exp then
  redis.call('HSET', KEYS[1], 'ID', ARGV[4], 'Limit', ARGV[3], 'Proxy', '',
             'ExpiresAt', tostring(now + tonumber(ARGV[2])))
  return redis.call('HGETALL', KEYS[1])
end
if exp == '' or tonumber(exp) == nil or tonumber(exp) < now then
  redis.call('HSET', KEYS[1], 'ExpiresAt', tostring(now + tonumber(ARGV[2])))
  return redis.call('HGETALL', KEYS[1])
end
return redis.error_reply('BEINGPROCESSED')
"""

# Renew an aggregation lease only if the hash still exists (a busy pool keeps it,
# limitation 4). KEYS: aggr. ARGV: expires_at.
RENEW_AGGR = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'ExpiresAt', ARGV[1])
  return 1
end
return 0
"""
