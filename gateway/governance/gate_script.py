"""The shared governance gate's Lua script (``remote.RemoteGate`` sends it): what Redis does
with one batch of settlements, token corrections and admissions, the layout of its arguments,
keys and answer, and the two ends of that layout: ``encode`` (a batch into the script's keys and
argument) and ``decode`` (one request's answer out of its reply)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.governance.budgets import UNSEEDED, Hold, Reserved, Settled
from gateway.governance.lease_state import Ops
from gateway.governance.windows import Check, Counts

BUDGET_PREFIX = "tiergate:budget:"

# KEYS: three per settlement's hold (its spend, holds and their sum), one per adjustment (a
# tokens window), then per ask two per check (previous and current window) and three per hold.
# ARGV[1], one JSON array (one argument for the client to write, not dozens): now, the previous
# window's share, the windows' TTL (ms), the number of settlements, adjustments and asks,
# whether to sweep expired holds (once a second: only a request that never ended leaves one,
# and its hold already outlives its deadline); each settlement (rid, amount held, actual cost,
# holds); each adjustment's delta; each ask (rid, its holds' expiry, checks, each check's cost
# and limit, holds, options, each option, each hold's limit and TTL); then the replicas' leases
# (``leases.py``): the numbers of rate grants and budget lease changes (header words 8 and 9),
# each rate grant (units wanted, the ceiling the window must stay within after them; keys: its
# previous and current window) and each budget lease change (the old hold's rid and amount, the
# spend to add, the new hold's rid, the amount to keep, the amount wanted if it fits under the
# ceiling, the new hold's expiry and the holds' TTL; keys: its spend, holds and their sum).
#
# A hold's keys: ``spent`` (seeded from the ledger, then counted here), ``holds`` (a sorted set
# of "rid amount" by expiry, and "~" that never expires) and ``holds:sum`` (the amounts held,
# kept as they come and go). Every counter the batch touches is read once, kept in the script
# while its asks are decided one after the other, and written once at the end.
#
# The answer, one string: per ask (separated by ';'), "fits option", each hold's left and each
# check's previous and current count; or "0 -2 <the unseeded hold's index>"; then per rate grant
# "granted previous current", per budget lease change "amount held, room left under the ceiling"
# (-1 when the budget's period is not seeded).
GATE = """
local w = cjson.decode(ARGV[1])
local now, share, ttl = w[1], w[2], w[3]
local seen, delta, fresh, windows = {}, {}, {}, {}
for first = 1, #KEYS, 1000 do
  local last = math.min(#KEYS, first + 999)
  local values = redis.call('MGET', unpack(KEYS, first, last))
  for i = first, last do
    local v = tonumber(values[i - first + 1]) or false
    seen[KEYS[i]] = v
    if v == false then fresh[KEYS[i]] = true end
  end
end
local function add(key, d)
  seen[key] = (seen[key] or 0) + d
  delta[key] = (delta[key] or 0) + d
end
local function member(rid, amount) return rid .. ' ' .. string.format('%d', amount) end
local added, swept = {}, {}
local function sweep(holds, sum)
  if swept[holds] then return end
  swept[holds] = true
  local old = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #old > 0 then
    local gone = 0
    for _, m in ipairs(old) do gone = gone + tonumber(string.match(m, ' (%S+)$')) end
    add(sum, -gone)
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  end
end
local a, k = 10, 0
for _ = 1, w[4] do
  local rid, amount, actual, n = w[a], w[a + 1], w[a + 2], w[a + 3]
  a = a + 4
  for _ = 1, n do
    local spent, holds, sum = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
    if amount > 0 and redis.call('ZREM', holds, member(rid, amount)) == 1 then
      add(sum, -amount)
    end
    if actual ~= 0 and seen[spent] then add(spent, actual) end
    k = k + 3
  end
end
for _ = 1, w[5] do
  local key, d = KEYS[k + 1], w[a]
  a, k = a + 1, k + 1
  if d > 0 then
    add(key, d)
    windows[key] = true
  elseif d < 0 and seen[key] then
    add(key, math.max(d, -seen[key]))
  end
end
local out = {}
for q = 1, w[6] do
  local rid, expires, nc = w[a], w[a + 1], w[a + 2]
  local ca, ck = a + 3, k
  a, k = ca + 2 * nc, k + 2 * nc
  local nh, no = w[a], w[a + 1]
  local oa, hk = a + 2, k
  a, k = oa + no + 2 * nh, k + 3 * nh
  local row, left = nil, {}
  for i = 1, nh do
    local spent, holds, sum = KEYS[hk + 3 * i - 2], KEYS[hk + 3 * i - 1], KEYS[hk + 3 * i]
    local s = seen[spent]
    if not s then
      row = '0 -2 ' .. (i - 1)
      break
    end
    if w[7] == 1 then sweep(holds, sum) end
    left[i] = w[oa + no + 2 * i - 2] - s - (seen[sum] or 0)
  end
  if row == nil then
    local fits, counts = 1, {}
    for i = 1, nc do
      local prev, cur = seen[KEYS[ck + 2 * i - 1]] or 0, seen[KEYS[ck + 2 * i]] or 0
      if math.floor(prev * share) + cur + w[ca + 2 * i - 2] > w[ca + 2 * i - 1] then fits = 0 end
      counts[2 * i - 1], counts[2 * i] = prev, cur
    end
    local option, amount = 0, 0
    if nh > 0 then
      option = -1
      for j = 1, no do
        local want, room = w[oa + j - 1], true
        if want > 0 then
          for i = 1, nh do if want > left[i] then room = false break end end
        end
        if room then
          option, amount = j - 1, want
          break
        end
      end
    end
    if fits == 1 and option >= 0 then
      for i = 1, nc do
        local cost, key = w[ca + 2 * i - 2], KEYS[ck + 2 * i]
        if cost > 0 then
          add(key, cost)
          windows[key] = true
          counts[2 * i] = seen[key]
        end
      end
      if amount > 0 then
        for i = 1, nh do
          local holds, sum = KEYS[hk + 3 * i - 1], KEYS[hk + 3 * i]
          add(sum, amount)
          local list = added[holds]
          if list == nil then
            list = {sum, w[oa + no + 2 * i - 1]}
            added[holds] = list
          end
          list[#list + 1] = expires
          list[#list + 1] = member(rid, amount)
        end
      end
    end
    local words = {fits, option}
    for i = 1, nh do words[#words + 1] = left[i] end
    for i = 1, 2 * nc do words[#words + 1] = counts[i] end
    for i = 1, #words do words[i] = string.format('%d', words[i]) end
    row = table.concat(words, ' ')
  end
  out[q] = row
end
local function held(holds, sum, expires, rid, amount, hold_ttl)
  add(sum, amount)
  local list = added[holds]
  if list == nil then
    list = {sum, hold_ttl}
    added[holds] = list
  end
  list[#list + 1] = expires
  list[#list + 1] = member(rid, amount)
end
for _ = 1, w[8] do
  local prev, cur = KEYS[k + 1], KEYS[k + 2]
  local want, ceiling = w[a], w[a + 1]
  a, k = a + 2, k + 2
  local p, c, got = seen[prev] or 0, seen[cur] or 0, 0
  if math.floor(p * share) + c + want <= ceiling then
    add(cur, want)
    windows[cur] = true
    got, c = want, seen[cur]
  end
  out[#out + 1] = string.format('%d %d %d', got, p, c)
end
for _ = 1, w[9] do
  local spent, holds, sum = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local orid, old, d, nrid = w[a], w[a + 1], w[a + 2], w[a + 3]
  local keep, want, ceiling, expires, hold_ttl = w[a + 4], w[a + 5], w[a + 6], w[a + 7], w[a + 8]
  a, k = a + 9, k + 3
  if old > 0 and redis.call('ZREM', holds, member(orid, old)) == 1 then add(sum, -old) end
  local s = seen[spent]
  if d ~= 0 and s then add(spent, d) end
  s = seen[spent]
  local amount, room = keep, -1
  if s then
    if want > keep then
      sweep(holds, sum)
      if want <= ceiling - s - (seen[sum] or 0) then amount = want end
    end
    room = ceiling - s - (seen[sum] or 0) - amount
  end
  if amount > 0 then held(holds, sum, expires, nrid, amount, hold_ttl) end
  out[#out + 1] = string.format('%d %d', amount, room)
end
for key, d in pairs(delta) do
  if d ~= 0 then
    redis.call('INCRBY', key, d)
    if windows[key] and fresh[key] then redis.call('PEXPIRE', key, ttl) end
  end
end
for holds, list in pairs(added) do
  if fresh[list[1]] then
    -- new this period: the holds live as long as the spend, and a member that never expires
    -- keeps the set (and its TTL) when the last hold goes
    list[#list + 1] = '+inf'
    list[#list + 1] = '~'
    redis.call('ZADD', holds, unpack(list, 3))
    redis.call('EXPIRE', holds, list[2])
    redis.call('EXPIRE', list[1], list[2])
  else
    redis.call('ZADD', holds, unpack(list, 3))
  end
end
return table.concat(out, ';')
"""


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's admission: its rate-limit checks, and the budgets it draws on with its
    options (worst cases, best first)."""

    checks: tuple[Check, ...]
    holds: tuple[Hold, ...]
    options: tuple[int, ...]
    rid: str
    expires: float  # when its holds free themselves (epoch seconds)


@dataclass(frozen=True, slots=True)
class Answer:
    """``fits``: every rate limit had room (and was counted, when a budget option was taken
    too); ``counts`` per check, as seen (after this request's costs when counted);
    ``reserved``: the budget's verdict (index 0 and nothing left without budgets)."""

    fits: bool
    counts: tuple[Counts, ...]
    reserved: Reserved
    leased: bool = False  # admitted from this replica's leases, without a call


@dataclass(frozen=True, slots=True)
class Call:
    """What one script call is made at: the time, the rate windows' length and their keys'
    prefix, and whether it sweeps the expired holds."""

    now: float
    window_s: float
    prefix: str
    sweep: bool


def encode(
    call: Call,
    asks: Sequence[Ask],
    settled: Sequence[Settled],
    adjusted: dict[tuple[str, int | None], int],
    ops: Ops,
) -> tuple[list[str], tuple[str], float]:
    """The script's keys and its one argument for this batch, and how far into its rate window
    it is (the layout above)."""
    now, window_s, prefix = call.now, call.window_s, call.prefix
    number = int(now // window_s)
    elapsed = now - number * window_s
    keys: list[str] = []
    words: list[str | int | float] = [
        now,
        max(0.0, 1.0 - elapsed / window_s),
        int(window_s * 2000) + 1000,
        len(settled),
        len(adjusted),
        len(asks),
        1 if call.sweep else 0,
        len(ops.rates),
        len(ops.budgets),
    ]
    for item in settled:
        for hold in item.holds:
            keys += hold_keys(hold.name)
        words += (item.rid, item.held, item.actual, len(item.holds))
    current = f":{number}"
    for (name, at), delta in adjusted.items():
        keys.append(prefix + name + (current if at is None else f":{at}"))
        words.append(delta)
    previous = f":{number - 1}"
    today = datetime.fromtimestamp(now, UTC)
    for ask in asks:
        words += (ask.rid, ask.expires, len(ask.checks))
        for check in ask.checks:
            base = prefix + check.key
            keys += (base + previous, base + current)
            words += (check.cost, check.limit)
        words += (len(ask.holds), len(ask.options), *ask.options)
        for hold in ask.holds:
            keys += hold_keys(hold.name)
            words += (hold.limit, hold.ttl_s(today))
    for grant in ops.rates:
        lease = grant.lease
        base = prefix + lease.key
        keys += (f"{base}:{lease.number - 1}", f"{base}:{lease.number}")
        words += (grant.want, grant.ceiling)
    for op in ops.budgets:
        keys += hold_keys(op.lease.hold.name)
        words += (op.old_rid, op.old_amount, op.delta, op.new_rid, op.keep, op.want)
        words += (op.ceiling, op.expires, op.lease.hold.ttl_s(today))
    return keys, (json.dumps(words),), elapsed


@functools.lru_cache(maxsize=4096)
def hold_keys(name: str) -> tuple[str, str, str]:
    """A budget hold's three keys: its spend, its holds and their sum."""
    base = BUDGET_PREFIX + name
    return base + ":spent", base + ":holds", base + ":holds:sum"


def decode(ask: Ask, row: bytes, elapsed: float) -> Answer:
    """One request's answer from its part of the reply (the layout above)."""
    words = [int(word) for word in row.split()]
    if words[1] == UNSEEDED:
        return Answer(False, (), Reserved(UNSEEDED, (words[2],)))
    nh = len(ask.holds)
    counts = tuple(
        Counts(words[2 + nh + 2 * i], words[3 + nh + 2 * i], elapsed)
        for i in range(len(ask.checks))
    )
    return Answer(words[0] == 1, counts, Reserved(words[1], tuple(words[2 : 2 + nh])))
