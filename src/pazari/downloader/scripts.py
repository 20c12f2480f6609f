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

# Pop up to ARGV[3] due callbacks: each moves to the in-flight set, is marked InProgress with
# CallbackMeta cleared and its attempt counted (spec §4); the hashes come back in the same
# round trip. A popped id without a hash is dropped.
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

# Move expired in-flight downloads back to their aggregation queue (crash recovery),
# counting each reclaim in ReclaimCount: a job that kills every processor that takes it is
# failed by the next one once the count passes max_reclaims (issue 11).
# KEYS: inflight. ARGV: now, limit.
RECLAIM_DOWNLOADS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local aggr = redis.call('HGET', 'job:' .. id, 'AggrID')
  if aggr then
    redis.call('HSET', 'job:' .. id, 'DownloadState', 'Pending')
    redis.call('HINCRBY', 'job:' .. id, 'ReclaimCount', 1)
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

# ---------------------------------------------------------------------------------------
# Batched forms (one call per batch of jobs; the per-job writes are those of the scripts and
# MULTIs above). ARGV[1] is a JSON array built by the store, every value a string, so the
# Python side packs one argument per batch instead of dozens per job.

# Enqueue many jobs (ENQUEUE each), refusing an id that is already taken so the api needs no
# separate EXISTS round trip. Item: [job_id, aggr_id, [aggr pairs], [job pairs]].
# Returns per item: 1 aggregation created, 0 queued, -1 id taken (nothing written). A taken
# id whose URL, aggregation and Extra are ours is our own write replayed by a client retry
# after a lost reply: 0, so the retry does not queue the job twice. Item: [job_id, aggr_id,
# [aggr pairs], [job pairs], url, extra]. ARGV: json, now.
ENQUEUE_MANY = """
local items = cjson.decode(ARGV[1])
local out = {}
for i, it in ipairs(items) do
  local jkey = 'job:' .. it[1]
  if redis.call('EXISTS', jkey) == 1 then
    local h = redis.call('HMGET', jkey, 'URL', 'AggrID', 'Extra')
    if h[1] == it[5] and h[2] == it[2] and h[3] == it[6] then out[i] = 0 else out[i] = -1 end
  else
    local akey = 'aggr:' .. it[2]
    out[i] = 0
    if redis.call('EXISTS', akey) == 0 then
      redis.call('HSET', akey, unpack(it[3]))
      out[i] = 1
    end
    redis.call('HSET', jkey, unpack(it[4]))
    redis.call('ZADD', 'jobs:' .. it[2], ARGV[2], it[1])
  end
end
return out
"""

# Write download outcomes and leave the in-flight set (Store.finish_download per item).
# Item: [job_id, [changed field pairs], target zset or '', score]. A job whose hash is gone
# (delivered and reaped after its lease was reclaimed) is only dropped from the in-flight
# set, never resurrected. KEYS: DownloadsInFlight. ARGV: json.
FINISH_DOWNLOADS = """
local items = cjson.decode(ARGV[1])
for _, it in ipairs(items) do
  local id = it[1]
  redis.call('ZREM', KEYS[1], id)
  local key = 'job:' .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, unpack(it[2]))
    if it[3] ~= '' then redis.call('ZADD', it[3], it[4], id) end
  end
end
return #items
"""

# Delivered callbacks (Store.callback_delivered per item): delete the hash, leave the
# in-flight set, schedule the file for deletion. Item: [job_id, score].
# KEYS: CallbacksInFlight, JobDeletionQueue. ARGV: json.
CALLBACKS_DELIVERED = """
local items = cjson.decode(ARGV[1])
for _, it in ipairs(items) do
  redis.call('DEL', 'job:' .. it[1])
  redis.call('ZREM', KEYS[1], it[1])
  redis.call('ZADD', KEYS[2], it[2], it[1])
end
return #items
"""

# Pop eligible jobs for download from many aggregations in one call (the pools that have
# free slots now): each job moves to the in-flight set, is marked InProgress and has its
# attempt counted; the hashes come back in the same round trip. A popped id without a hash
# is dropped.
# Request: [aggr_id, n, lease_until]. Reply per request: {'EMPTY'}, {'RETRYLATER'} or
# {'OK', hash, hash, ...}.
# KEYS: inflight. ARGV: now, json.
POP_DOWNLOADS_MANY = """
local now = tonumber(ARGV[1])
local reqs = cjson.decode(ARGV[2])
local out = {}
for r, req in ipairs(reqs) do
  local top = redis.call('ZRANGE', 'jobs:' .. req[1], 0, tonumber(req[2]) - 1, 'WITHSCORES')
  local res
  if #top == 0 then
    res = {'EMPTY'}
  elseif tonumber(top[2]) > now then
    res = {'RETRYLATER'}
  else
    res = {'OK'}
    for i = 1, #top, 2 do
      local id = top[i]
      if tonumber(top[i + 1]) > now then break end
      redis.call('ZREM', 'jobs:' .. req[1], id)
      local key = 'job:' .. id
      local hid = redis.call('HGET', key, 'ID')
      if hid and hid ~= '' then
        redis.call('ZADD', KEYS[1], req[3], id)
        redis.call('HSET', key, 'DownloadState', 'InProgress', 'DownloadMeta', '',
                   'ResponseCode', '0')
        redis.call('HINCRBY', key, 'DownloadCount', 1)
        res[#res + 1] = redis.call('HGETALL', key)
      end
    end
  end
  out[r] = res
end
return out
"""

# Renew the leases of every aggregation this processor has a pool for, in one call. A lease
# already released (ExpiresAt '') or a deleted hash is left alone, so a renewal racing a
# pool's release cannot take the aggregation back. ARGV: expires_at, json [aggr_id, ...].
RENEW_AGGRS = """
local n = 0
for _, id in ipairs(cjson.decode(ARGV[2])) do
  local key = 'aggr:' .. id
  local exp = redis.call('HGET', key, 'ExpiresAt')
  if exp and exp ~= '' then
    redis.call('HSET', key, 'ExpiresAt', ARGV[1])
    n = n + 1
  end
end
return n
"""

# ---------------------------------------------------------------------------------------
# Cluster layout (issue 16; pazari.downloader.layout). The same steps as the scripts above,
# for the keys of one shard: every key a script touches carries the shard's hash tag T, so
# each call runs in one slot. T is read from KEYS[1], which is always a key of the shard;
# the per-job keys are built from it (Redis Cluster serves undeclared keys of the declared
# slot; declaring every job's keys would cost a KEYS entry per job and item). The
# aggregation index (T .. 'Aggregations') gains an id with every ZADD to its queue.

C_TAG = "local T = string.match(KEYS[1], '^{[^}]*}')\n"

# ENQUEUE. KEYS: aggr, job, jobs, index. ARGV: now, aggr_id, n_aggr_pairs, aggr pairs...,
# job pairs...
C_ENQUEUE = """
local n = tonumber(ARGV[3])
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4, 3 + n))
  created = 1
end
redis.call('HSET', KEYS[2], unpack(ARGV, 4 + n, #ARGV))
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[4 + n + 1])
redis.call('SADD', KEYS[4], ARGV[2])
return created
"""

# ENQUEUE_MANY for the items of one shard. KEYS: index. ARGV: json, now.
C_ENQUEUE_MANY = C_TAG + """
local items = cjson.decode(ARGV[1])
local out = {}
for i, it in ipairs(items) do
  local jkey = T .. 'job:' .. it[1]
  if redis.call('EXISTS', jkey) == 1 then
    local h = redis.call('HMGET', jkey, 'URL', 'AggrID', 'Extra')
    if h[1] == it[5] and h[2] == it[2] and h[3] == it[6] then out[i] = 0 else out[i] = -1 end
  else
    local akey = T .. 'aggr:' .. it[2]
    out[i] = 0
    if redis.call('EXISTS', akey) == 0 then
      redis.call('HSET', akey, unpack(it[3]))
      out[i] = 1
    end
    redis.call('HSET', jkey, unpack(it[4]))
    redis.call('ZADD', T .. 'jobs:' .. it[2], ARGV[2], it[1])
    redis.call('SADD', KEYS[1], it[2])
  end
end
return out
"""

# The aggregations of one shard with queued jobs; ids whose queue is empty leave the index
# (safe at any time: a later ZADD to the queue adds the id back in the same script).
# KEYS: index.
C_AGGREGATIONS = C_TAG + """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', T .. 'jobs:' .. id) == 1 then
    out[#out + 1] = id
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"""

# POP_DOWNLOADS_MANY for the aggregations of one shard. KEYS: inflight. ARGV: now, json.
C_POP_DOWNLOADS_MANY = C_TAG + """
local now = tonumber(ARGV[1])
local reqs = cjson.decode(ARGV[2])
local out = {}
for r, req in ipairs(reqs) do
  local qkey = T .. 'jobs:' .. req[1]
  local top = redis.call('ZRANGE', qkey, 0, tonumber(req[2]) - 1, 'WITHSCORES')
  local res
  if #top == 0 then
    res = {'EMPTY'}
  elseif tonumber(top[2]) > now then
    res = {'RETRYLATER'}
  else
    res = {'OK'}
    for i = 1, #top, 2 do
      local id = top[i]
      if tonumber(top[i + 1]) > now then break end
      redis.call('ZREM', qkey, id)
      local key = T .. 'job:' .. id
      local hid = redis.call('HGET', key, 'ID')
      if hid and hid ~= '' then
        redis.call('ZADD', KEYS[1], req[3], id)
        redis.call('HSET', key, 'DownloadState', 'InProgress', 'DownloadMeta', '',
                   'ResponseCode', '0')
        redis.call('HINCRBY', key, 'DownloadCount', 1)
        res[#res + 1] = redis.call('HGETALL', key)
      end
    end
  end
  out[r] = res
end
return out
"""

# FINISH_DOWNLOADS for one shard; item [job_id, pairs, target key or '', score, aggr_id or
# '' (set when the target is the aggregation's queue)]. KEYS: inflight, index. ARGV: json.
C_FINISH_DOWNLOADS = C_TAG + """
local items = cjson.decode(ARGV[1])
for _, it in ipairs(items) do
  local id = it[1]
  redis.call('ZREM', KEYS[1], id)
  local key = T .. 'job:' .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, unpack(it[2]))
    if it[3] ~= '' then redis.call('ZADD', it[3], it[4], id) end
    if it[5] ~= '' then redis.call('SADD', KEYS[2], it[5]) end
  end
end
return #items
"""

# RECLAIM_DOWNLOADS for one shard. KEYS: inflight, index. ARGV: now, limit.
C_RECLAIM_DOWNLOADS = C_TAG + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = T .. 'job:' .. id
  local aggr = redis.call('HGET', key, 'AggrID')
  if aggr then
    redis.call('HSET', key, 'DownloadState', 'Pending')
    redis.call('HINCRBY', key, 'ReclaimCount', 1)
    redis.call('ZADD', T .. 'jobs:' .. aggr, ARGV[1], id)
    redis.call('SADD', KEYS[2], aggr)
  end
end
return #ids
"""

# RENEW_AGGRS for the aggregations of one shard. KEYS: index (for the tag and the slot).
# ARGV: expires_at, json.
C_RENEW_AGGRS = C_TAG + """
local n = 0
for _, id in ipairs(cjson.decode(ARGV[2])) do
  local key = T .. 'aggr:' .. id
  local exp = redis.call('HGET', key, 'ExpiresAt')
  if exp and exp ~= '' then
    redis.call('HSET', key, 'ExpiresAt', ARGV[1])
    n = n + 1
  end
end
return n
"""

# POP_CALLBACKS for one shard. KEYS: CallbackQueue, inflight. ARGV: now, lease_until, n.
C_POP_CALLBACKS = C_TAG + """
local now = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
if #top == 0 then return redis.error_reply('EMPTY') end
if tonumber(top[2]) > now then return redis.error_reply('RETRYLATER') end
local out = {}
for i = 1, #top, 2 do
  local id = top[i]
  if tonumber(top[i + 1]) > now then break end
  redis.call('ZREM', KEYS[1], id)
  local key = T .. 'job:' .. id
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

# RECLAIM_CALLBACKS for one shard. KEYS: inflight, CallbackQueue. ARGV: now, limit.
C_RECLAIM_CALLBACKS = C_TAG + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = T .. 'job:' .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'CallbackState', 'Pending')
    redis.call('ZADD', KEYS[2], ARGV[1], id)
  end
end
return #ids
"""

# CALLBACKS_DELIVERED for one shard. KEYS: inflight, JobDeletionQueue. ARGV: json.
C_CALLBACKS_DELIVERED = C_TAG + """
local items = cjson.decode(ARGV[1])
for _, it in ipairs(items) do
  redis.call('DEL', T .. 'job:' .. it[1])
  redis.call('ZREM', KEYS[1], it[1])
  redis.call('ZADD', KEYS[2], it[2], it[1])
end
return #items
"""

# The single layout's MULTIs, as scripts (a cluster client has no MULTI across its nodes;
# one slot is enough, but a script is one call either way).
# queue_callback. KEYS: job, CallbackQueue. ARGV: score, id, job pairs...
C_QUEUE_CALLBACK = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3, #ARGV))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# callback_outcome. KEYS: job, inflight, CallbackQueue. ARGV: retry score or '', id,
# job pairs...
C_CALLBACK_OUTCOME = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3, #ARGV))
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2]) end
return 1
"""

# drop_deleted. KEYS: JobDeletionQueue, job. ARGV: id.
C_DROP_DELETED = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
"""
