"""The Lua scripts of the Redis broker (run by ``redis_calls.Script``: EVALSHA, EVAL on NOSCRIPT).

Layout of one topic (``prefix`` namespaces every name, so two clusters can share a Redis):

- ``{prefix}:stream:{topic}`` - hash ``e`` (epoch), ``o`` (offset of the newest publication);
- ``{prefix}:history:{topic}`` - list, oldest first, of ``b"<offset> <time> " + data``; the
  time is the publishing node's clock (an injected clock works against a real Redis);
- ``{prefix}:pub:{topic}`` - pub/sub channel (``{prefix}:db{n}:pub:{topic}`` in database
  ``n`` > 0: pub/sub is shared by every database), messages ``b"<offset>:<epoch>:" + data``
  (a broadcast: ``b"0:<node id>:" + data``). Offsets are digits and epochs and node ids are
  hex, so the first two ``:`` split a message whatever bytes ``data`` holds.

Both keys expire ``history_ttl`` after the last publish, so an idle topic costs nothing for
ever. When the hash is gone (expired, or Redis flushed or restarted without persistence), the
next script to touch the topic gives it a new epoch (sent by the caller: Lua in Redis has no
good randomness), so a client holding the old one is told it cannot recover.
"""

from __future__ import annotations

# Drops history entries older than the history ttl from the head of the list. Entries are
# appended in publish order, so the first young one ends the loop; the list holds at most
# ``size`` entries, which bounds it.
_TRIM_AGE = """
local function trim_age(hist, now, ttl, size)
  for _ = 1, size do
    local head = redis.call('LINDEX', hist, 0)
    if not head then return end
    local t = tonumber(string.match(head, '^%d+ (%S+) '))
    if t and now - t <= ttl then return end
    redis.call('LPOP', hist)
  end
end
"""

# Creates the stream of a topic whose hash is missing: a new epoch, offset 0, and no history
# (a history list without its hash would belong to the lost epoch).
_ENSURE = """
local function ensure(meta, hist, fresh, keyttl)
  local epoch = redis.call('HGET', meta, 'e')
  if epoch then return epoch end
  redis.call('DEL', hist)
  redis.call('HSET', meta, 'e', fresh, 'o', 0)
  redis.call('PEXPIRE', meta, keyttl)
  return fresh
end
"""

#: Appends ``data`` to every topic in one atomic step and publishes it on their channels.
#: KEYS: stream hash and history list of topic 1, of topic 2, ...
#: ARGV: now, history size, history ttl (s), key ttl (ms), fresh epoch, data, channel 1, ...
#: Returns ``{offset 1, epoch 1, offset 2, epoch 2, ...}``.
PUBLISH = (
    _TRIM_AGE
    + _ENSURE
    + """
local now, size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keyttl, fresh, data = ARGV[4], ARGV[5], ARGV[6]
local out = {}
for i = 1, #KEYS / 2 do
  local meta, hist = KEYS[2 * i - 1], KEYS[2 * i]
  local epoch = ensure(meta, hist, fresh, keyttl)
  local offset = redis.call('HINCRBY', meta, 'o', 1)
  if size > 0 then
    redis.call('RPUSH', hist, offset .. ' ' .. ARGV[1] .. ' ' .. data)
    redis.call('LTRIM', hist, -size, -1)
    trim_age(hist, now, ttl, size)
    redis.call('PEXPIRE', hist, keyttl)
  end
  redis.call('PEXPIRE', meta, keyttl)
  redis.call('PUBLISH', ARGV[6 + i], offset .. ':' .. epoch .. ':' .. data)
  out[2 * i - 1] = offset
  out[2 * i] = epoch
end
return out
"""
)

#: Position and history of one topic (creating the stream, as ``position`` of an unused topic
#: does, so the epoch a client is given is the one publications will carry).
#: KEYS: stream hash, history list.
#: ARGV: now, history ttl (s), key ttl (ms), fresh epoch, history size, since offset ("" for
#: the newest ``limit``), since epoch, limit.
#: Returns ``{epoch, offset, complete (0|1), entry, entry, ...}`` with entries oldest first.
READ = (
    _TRIM_AGE
    + _ENSURE
    + """
local meta, hist = KEYS[1], KEYS[2]
local now, ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[8])
local epoch = ensure(meta, hist, ARGV[4], ARGV[3])
local offset = tonumber(redis.call('HGET', meta, 'o'))
trim_age(hist, now, ttl, tonumber(ARGV[5]))
local n = redis.call('LLEN', hist)
local out = {epoch, offset, 1}
local first, last
if ARGV[6] == '' then
  if limit <= 0 or n == 0 then return out end
  first, last = -limit, -1
else
  local since = tonumber(ARGV[6])
  -- another epoch, ahead of the stream, or older than the retained window: cannot recover
  if ARGV[7] ~= epoch or since < 0 or since > offset or since + 1 < offset - n + 1 then
    out[3] = 0
    return out
  end
  if offset - since > limit then out[3] = 0 end
  if since == offset or limit <= 0 then return out end
  first = since + 1 - (offset - n + 1)
  last = first + limit - 1
end
local items = redis.call('LRANGE', hist, first, last)
for i = 1, #items do out[3 + i] = items[i] end
return out
"""
)
