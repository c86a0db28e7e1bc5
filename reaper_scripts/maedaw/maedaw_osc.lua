-- @noindex
--
-- maedaw's wire, for every DAW: OSC 1.0 and the bits of JSON the contract uses, in pure Lua
-- (5.3 and 5.4: REAPER embeds 5.4, Ardour 7 embeds 5.3); the requests of the contract by name;
-- the transports (LuaSocket UDP, or the `maedaw send` helper process that sends the packets
-- and writes the replies to a file); the matching of replies to the jobs that asked; and the
-- signature every request carries (HMAC-SHA256 under the user's token, docs/security.md).
--
-- The contract is docs/osc.md of the maedaw repository ("maedaw-osc/1"; the daemon's side is
-- bridge/contract.py). The REAPER library (maedaw_lib.lua beside this file) and the Ardour
-- library (ardour_scripts/maedaw/maedaw_lib.lua) load this file and add only their DAW's glue.
-- Nothing here may touch a DAW's API, `package`, `require` or `debug` (Ardour's action
-- sandbox has none of them): what differs per DAW is passed in.

local M = {}

M.CONTRACT = 'maedaw-osc/1'

------------------------------------------------------------------------------------------
-- OSC 1.0 (string.pack is Lua 5.3's)
------------------------------------------------------------------------------------------

local function osc_string(s)
  -- a string is its bytes, a NUL, and NULs up to a multiple of 4
  return s .. string.rep('\0', 4 - #s % 4)
end

local PACK = { i = '>i4', h = '>i8', f = '>f', d = '>d' }

--- Encode one message. `types` is the type tag string without the comma ("ssdds"):
--- s string, i int32, h int64, f float32, d float64, b blob.
function M.osc_encode(address, types, args)
  args = args or {}
  assert(#types == #args, 'osc_encode: ' .. #types .. ' type tags for ' .. #args .. ' arguments')
  local parts = { osc_string(address), osc_string(',' .. types) }
  for k = 1, #types do
    local t, v = types:sub(k, k), args[k]
    if t == 's' then
      v = osc_string(tostring(v))
    elseif t == 'b' then
      v = string.pack('>i4', #v) .. v .. string.rep('\0', (4 - #v % 4) % 4)
    elseif t == 'i' or t == 'h' then
      local n = math.tointeger(v) or error('osc_encode: not an integer: ' .. tostring(v))
      v = string.pack(PACK[t], n)
    elseif PACK[t] then
      v = string.pack(PACK[t], v)
    else
      error('osc_encode: unsupported type tag ' .. t)
    end
    parts[#parts + 1] = v
  end
  return table.concat(parts)
end

local function read_osc_string(data, pos)
  local zero = data:find('\0', pos, true)
  if not zero then return nil end
  local used = zero - pos + 1
  return data:sub(pos, zero - 1), pos + used + (4 - used % 4) % 4
end

--- Decode one message (not a bundle). Returns {address=, types=, args={...}} or nil, why.
function M.osc_decode(data)
  if type(data) ~= 'string' or #data < 8 or #data % 4 ~= 0 then return nil, 'not an OSC packet' end
  local address, pos = read_osc_string(data, 1)
  if not address or address:sub(1, 1) ~= '/' then return nil, 'not an OSC message' end
  local tags
  tags, pos = read_osc_string(data, pos)
  if not tags or tags:sub(1, 1) ~= ',' then return nil, 'no type tags' end
  local msg = { address = address, types = tags:sub(2), args = {} }
  local ok, err = pcall(function()
    for k = 2, #tags do
      local t, v = tags:sub(k, k), nil
      if t == 's' or t == 'S' then
        v, pos = read_osc_string(data, pos)
        if not v then error('unterminated string') end
      elseif PACK[t] then v, pos = string.unpack(PACK[t], data, pos)
      elseif t == 'T' then v = true
      elseif t == 'F' then v = false
      elseif t == 'N' then v = nil
      elseif t == 'b' then
        local size
        size, pos = string.unpack('>i4', data, pos)
        v = data:sub(pos, pos + size - 1)
        pos = pos + size + (4 - size % 4) % 4
      else
        error('unsupported type tag ' .. t)
      end
      msg.args[k - 1] = v
    end
  end)
  if not ok then return nil, err end
  return msg
end

function M.hex(data)
  return (data:gsub('.', function(c) return string.format('%02x', c:byte()) end))
end

function M.unhex(text)
  return (text:gsub('%x%x', function(h) return string.char(tonumber(h, 16)) end))
end

------------------------------------------------------------------------------------------
-- signing (docs/security.md): every request goes inside an /maedaw/auth envelope,
-- s nonce, s time, s mac, b request, where mac = HMAC-SHA256(token, "maedaw-auth/1\n" ..
-- nonce .. "\n" .. time .. "\n" .. request) in hex. The DAWs' Lua has no hash library, so
-- SHA-256 (FIPS 180-4) is here, on Lua 5.3 integers masked to 32 bits.
------------------------------------------------------------------------------------------

local SHA_K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
local MASK = 0xffffffff

local function rrot(x, n)
  return ((x >> n) | (x << (32 - n))) & MASK
end

--- The SHA-256 digest of `data` (32 raw bytes).
function M.sha256(data)
  local h = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
              0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
  -- padding: 0x80, zeros up to 56 mod 64, the length in bits as 64-bit big-endian
  data = data .. '\128' .. string.rep('\0', (55 - #data) % 64) .. string.pack('>I8', #data * 8)
  local w = {}
  for block = 1, #data, 64 do
    for i = 1, 16 do w[i] = string.unpack('>I4', data, block + (i - 1) * 4) end
    for i = 17, 64 do
      local x, y = w[i - 15], w[i - 2]
      local s0 = rrot(x, 7) ~ rrot(x, 18) ~ (x >> 3)
      local s1 = rrot(y, 17) ~ rrot(y, 19) ~ (y >> 10)
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & MASK
    end
    local a, b, c, d, e, f, g, hh = h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    for i = 1, 64 do
      local t1 = (hh + (rrot(e, 6) ~ rrot(e, 11) ~ rrot(e, 25)) + ((e & f) ~ (~e & g))
        + SHA_K[i] + w[i]) & MASK
      local t2 = ((rrot(a, 2) ~ rrot(a, 13) ~ rrot(a, 22)) + ((a & b) ~ (a & c) ~ (b & c))) & MASK
      hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & MASK, c, b, a, (t1 + t2) & MASK
    end
    local v = { a, b, c, d, e, f, g, hh }
    for i = 1, 8 do h[i] = (h[i] + v[i]) & MASK end
  end
  return string.pack('>I4I4I4I4I4I4I4I4', table.unpack(h))
end

--- HMAC-SHA256 (RFC 2104) of `message` under `key`, in lowercase hex.
function M.hmac_sha256(key, message)
  if #key > 64 then key = M.sha256(key) end
  key = key .. string.rep('\0', 64 - #key)
  local inner_pad = key:gsub('.', function(c) return string.char(c:byte() ~ 0x36) end)
  local outer_pad = key:gsub('.', function(c) return string.char(c:byte() ~ 0x5c) end)
  return M.hex(M.sha256(outer_pad .. M.sha256(inner_pad .. message)))
end

M.AUTH_ADDRESS = '/maedaw/auth'
local nonce_counter = 0

--- `packet` signed with `token`, inside an /maedaw/auth envelope (`now`, `nonce`: tests).
function M.seal(packet, token, now, nonce)
  if not nonce then
    nonce_counter = nonce_counter + 1
    -- unique, not secret: the time, the CPU clock, a table's address, a counter, hashed
    local seed = table.concat({ os.time(), os.clock and os.clock() or 0, tostring({}),
      math.random(0, 0x7fffffff),
      nonce_counter }, '/')
    nonce = M.hex(M.sha256(seed)):sub(1, 24)
  end
  local when = string.format('%d', now or os.time())
  local mac = M.hmac_sha256(token, 'maedaw-auth/1\n' .. nonce .. '\n' .. when .. '\n' .. packet)
  return M.osc_encode(M.AUTH_ADDRESS, 'sssb', { nonce, when, mac, packet })
end

--- The request inside an envelope, or `packet` itself when it is not one.
function M.inner(packet)
  if packet:sub(1, #M.AUTH_ADDRESS + 1) ~= M.AUTH_ADDRESS .. '\0' then return packet end
  local msg = M.osc_decode(packet)
  return msg and type(msg.args[4]) == 'string' and msg.args[4] or packet
end

local function valid_token(text)
  text = text and text:match('^%s*(.-)%s*$')
  if text and #text >= 32 and #text <= 256 and text:match('^[%w_%-]+$') then return text end
  return nil
end

--- Where the local daemon keeps its token (its state folder, platformdirs' user data dir
--- for "maedaw"): Linux (XDG), macOS, Windows. `getenv` is os.getenv (passed in: tests).
function M.token_files(getenv)
  local home, files = getenv('HOME') or '', {}
  local xdg = getenv('XDG_DATA_HOME')
  files[#files + 1] = ((xdg and xdg ~= '') and xdg or (home .. '/.local/share')) .. '/maedaw/token'
  files[#files + 1] = home .. '/Library/Application Support/maedaw/token'
  local local_app = getenv('LOCALAPPDATA')
  if local_app then files[#files + 1] = local_app .. '\\maedaw\\maedaw\\token' end
  return files
end

--- The token to sign with: the `token` setting, else $MAEDAW_TOKEN, else the local daemon's
--- token file; nil when there is none (requests then go unsigned: the daemon will say
--- `forbidden` unless it runs with --no-token).
function M.token(settings, getenv)
  getenv = getenv or os.getenv
  local given = valid_token(settings.token) or valid_token(getenv('MAEDAW_TOKEN'))
  if given then return given end
  for _, path in ipairs(M.token_files(getenv)) do
    local f = io.open(path, 'rb')
    if f then
      local text = valid_token(f:read('a'))
      f:close()
      if text then return text end
    end
  end
  return nil
end

------------------------------------------------------------------------------------------
-- JSON: the options the clients write, the summaries they read
------------------------------------------------------------------------------------------

local NAMED_ESCAPES = {
  ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t',
}

--- JSON string literal.
function M.json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return NAMED_ESCAPES[c] or string.format('\\u%04x', c:byte())
  end) .. '"'
end

local function json_value(v)
  if type(v) == 'number' then
    return math.type(v) == 'integer' and tostring(v) or string.format('%.17g', v)
  elseif type(v) == 'boolean' then
    return tostring(v)
  elseif type(v) == 'table' then
    local items = {}
    for _, x in ipairs(v) do items[#items + 1] = json_value(x) end
    return '[' .. table.concat(items, ', ') .. ']'
  elseif v == nil then
    return 'null'
  end
  return M.json_string(v)
end

--- A flat JSON object (keys sorted) from a Lua table of strings / numbers / booleans /
--- arrays of those: the options of a request.
function M.json_object(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = M.json_string(k) .. ': ' .. json_value(t[k]) end
  return '{' .. table.concat(parts, ', ') .. '}'
end

--- One top-level number or string field of a flat JSON object (reply summaries).
function M.json_field(text, key)
  local pattern = '"' .. key:gsub('%p', '%%%0') .. '"%s*:%s*'
  local num = text:match(pattern .. '(-?[%d%.eE+-]+)')
  if num then return tonumber(num) end
  return text:match(pattern .. '"(.-)"')
end

local function json_unescape(s)
  return (s:gsub('\\u(%x%x%x%x)', function(h) return utf8.char(tonumber(h, 16)) end)
    :gsub('\\(.)', { n = '\n', t = '\t', ['"'] = '"', ['\\'] = '\\', ['/'] = '/' }))
end

--- The tags of a tag job's done summary (JSON): a list of {label, score}, best first; nil
--- when the text holds no "tags" array (not a tag summary).
function M.parse_tags(summary)
  local array = summary and summary:match('"tags"%s*:%s*(%b[])')
  if not array then return nil end
  local list = {}
  for object in array:gmatch('%b{}') do
    local label = object:match('"label"%s*:%s*"(.-[^\\])"')
    local score = M.json_field(object, 'score')
    if label and type(score) == 'number' then
      list[#list + 1] = { label = json_unescape(label), score = score }
    end
  end
  return list
end

--- The ranking of a similar job's done summary (JSON): a list of {id, similarity}, best
--- first, and the number of candidates the daemon skipped.
function M.parse_similar(summary)
  local list, skipped = {}, 0
  local results = summary and summary:match('"results"%s*:%s*(%b[])')
  for object in (results or ''):gmatch('%b{}') do
    local id = object:match('"id"%s*:%s*"([^"]*)"')
    local sim = M.json_field(object, 'similarity')
    if id and type(sim) == 'number' then list[#list + 1] = { id = id, similarity = sim } end
  end
  local gone = summary and summary:match('"skipped"%s*:%s*(%b[])')
  for _ in (gone or ''):gmatch('%b{}') do skipped = skipped + 1 end
  return list, skipped
end

--- The markers of a repair job's done summary (JSON): a list of {at, length, label} (seconds
--- into the stem, its length, what was done there), in time order, and how many spans the
--- report has in all (the summary carries at most 32).
function M.parse_marks(summary)
  local list = {}
  local marks = summary and summary:match('"marks"%s*:%s*(%b[])')
  for object in (marks or ''):gmatch('%b{}') do
    local at, length = M.json_field(object, 'at'), M.json_field(object, 'length')
    local label = object:match('"label"%s*:%s*"(.-[^\\])"')
    if type(at) == 'number' and type(length) == 'number' and label then
      list[#list + 1] = { at = at, length = length, label = json_unescape(label) }
    end
  end
  local total = summary and M.json_field(summary, 'marks_total')
  return list, type(total) == 'number' and total or #list
end

------------------------------------------------------------------------------------------
-- the contract's requests, by name
------------------------------------------------------------------------------------------

--- A client job id the contract accepts: [A-Za-z0-9_.:-]{1,128}.
local id_counter = 0
function M.new_client_job(kind)
  id_counter = id_counter + 1
  return string.format('%s-%x-%04x-%d', kind, os.time(), math.random(0, 0xffff), id_counter)
end

-- address, type tags, argument names (docs/osc.md, "Requests")
local REQUESTS = {
  ping = { '/maedaw/ping', 's', { 'client_job' } },
  cancel = { '/maedaw/cancel', 's', { 'client_job' } },
  status = { '/maedaw/status', 's', { 'client_job' } },
  repair = { '/maedaw/repair', 'ssddss',
             { 'client_job', 'source', 'start', 'end', 'out_dir', 'options' } },
  restore = { '/maedaw/restore', 'sssddss',
              { 'client_job', 'op', 'source', 'start', 'end', 'out_dir', 'options' } },
  tag = { '/maedaw/tag', 'ssdds', { 'client_job', 'source', 'start', 'end', 'options' } },
  similar = { '/maedaw/similar', 'ssddss',
              { 'client_job', 'source', 'start', 'end', 'candidates', 'options' } },
  teach = { '/maedaw/teach', 'sssdds',
            { 'client_job', 'name', 'source', 'start', 'end', 'options' } },
}

--- The packet of one request: `kind` names it (repair, restore, tag, ...), `fields` holds
--- its arguments by their names in docs/osc.md; `options` is a table (written as JSON).
function M.request(kind, fields)
  local spec = REQUESTS[kind] or error('request: unknown kind ' .. tostring(kind))
  local args = {}
  for n, name in ipairs(spec[3]) do
    local v = fields[name]
    if v == nil then error('request ' .. kind .. ': no ' .. name) end
    args[n] = name == 'options' and M.json_object(v) or v
  end
  return M.osc_encode(spec[1], spec[2], args)
end

--- What to tell the user when `msg` is the daemon's `forbidden` answer to the ping `ping_id`
--- (no token, or not its token), else nil.
function M.refused(msg, ping_id)
  if msg.address ~= '/maedaw/error' or msg.args[1] ~= ping_id or msg.args[3] ~= 'forbidden' then
    return nil
  end
  return 'The daemon refused the request: ' .. tostring(msg.args[4]) .. '.\nSet its token in ' ..
    'the settings (`maedaw token` on the daemon\'s machine prints it; blank: this machine\'s).'
end

--- The daemon's fields from a pong that answers the ping `ping_id`, else nil.
function M.pong(msg, ping_id)
  if msg.address ~= '/maedaw/pong' or msg.args[1] ~= ping_id then return nil end
  return { contract = msg.args[2], version = msg.args[3], model = msg.args[4] }
end

------------------------------------------------------------------------------------------
-- jobs: requests in flight and the replies about them
------------------------------------------------------------------------------------------

-- A job's state: sent -> accepted -> done | error | cancelled | timeout (the last two
-- set by the daemon's error code, or by the client that gave up on the job).
M.FAILED = { error = true, cancelled = true, timeout = true }

function M.is_final(job)
  return job.state == 'done' or M.FAILED[job.state] == true
end

--- Applies one reply to its job: state, job_id, fraction, stage, stem, report, summary, code,
--- message (and status_json for a /maedaw/status answer).
function M.apply_reply(job, msg)
  local a = msg.args
  if msg.address == '/maedaw/accepted' then
    job.state, job.job_id, job.stage = 'accepted', a[2], 'queued'
  elseif msg.address == '/maedaw/progress' then
    job.state, job.job_id = 'accepted', a[2] or job.job_id
    job.fraction, job.stage = a[3] or job.fraction, a[4] or job.stage
  elseif msg.address == '/maedaw/done' then
    job.state, job.fraction = 'done', 1
    job.job_id, job.stem, job.report, job.summary = a[2], a[3], a[4], a[5] or ''
  elseif msg.address == '/maedaw/error' then
    job.job_id, job.code, job.message = a[2], a[3], a[4]
    job.state = job.code == 'cancelled' and 'cancelled' or 'error'
  elseif msg.address == '/maedaw/status' then
    job.state, job.status_json = 'done', a[2]
  end
end

local Jobs = {}
Jobs.__index = Jobs

--- Tracks `requests` (each with its client_job): every one starts as 'sent' at stage `stage`.
function M.jobs(requests, stage)
  local by_client = {}
  for _, job in ipairs(requests) do
    job.state, job.fraction, job.stage = 'sent', 0, stage
    by_client[job.client_job] = job
  end
  return setmetatable({ list = requests, by_client = by_client }, Jobs)
end

--- The unfinished job a reply is about, or nil.
function Jobs:waiting_for(msg)
  local job = self.by_client[msg.args[1]]
  if job and not M.is_final(job) then return job end
  return nil
end

--- Applies a reply to its job when that job still waits; returns the job, or nil.
function Jobs:handle(msg)
  local job = self:waiting_for(msg)
  if job then M.apply_reply(job, msg) end
  return job
end

function Jobs:pending()
  local list = {}
  for _, job in ipairs(self.list) do
    if not M.is_final(job) then list[#list + 1] = job end
  end
  return list
end

--- The fraction done over all jobs, and "N of M done - <stage>" (the first unfinished job's
--- stage, or `stage` when given).
function Jobs:progress(stage)
  local done, total = 0, 0
  for _, job in ipairs(self.list) do
    if M.is_final(job) then done = done + 1 end
    total = total + (M.is_final(job) and 1 or (job.fraction or 0))
  end
  local first = self:pending()[1]
  stage = stage or (first and first.stage) or ''
  return total / #self.list, string.format('%d of %d done - %s', done, #self.list, stage)
end

------------------------------------------------------------------------------------------
-- transports: each has :send(list of packets, wait_s), :poll() -> list of messages, :close()
------------------------------------------------------------------------------------------

-- How big messages travel (docs/osc.md, "Large messages"): a datagram over UDP_SAFE_BYTES is
-- not portable (LuaSocket reads 8192 bytes unless told more; macOS loopback refuses datagrams
-- over 9216 by default), so such a request, and every request whose replies may be that big,
-- goes over TCP with SLIP framing; its replies come back on that connection.
M.UDP_SAFE_BYTES = 8192
M.STREAM_ADDRESSES = { ['/maedaw/similar'] = true, ['/maedaw/status'] = true }
M.MAX_DATAGRAM = 65507   -- the most one IPv4 datagram holds
M.RECEIVE_BYTES = 65535  -- receivefrom's size: any datagram, whole
M.TCP_CONNECT_S = 5      -- past this, a connection that is not up counts as refused

--- True when `packet` must go over TCP/SLIP rather than as one UDP datagram.
function M.needs_stream(packet)
  if #packet > M.UDP_SAFE_BYTES then return true end
  local address = M.inner(packet):match('^([^\0]*)')
  return M.STREAM_ADDRESSES[address] == true
end

local SLIP_END, SLIP_ESC = '\192', '\219'
local SLIP_ENCODE = { [SLIP_END] = SLIP_ESC .. '\220', [SLIP_ESC] = SLIP_ESC .. '\221' }
local SLIP_DECODE = { ['\220'] = SLIP_END, ['\221'] = SLIP_ESC }

--- One packet as an OSC 1.1 (SLIP, RFC 1055) frame: END, escaped bytes, END.
function M.slip_encode(packet)
  return SLIP_END .. packet:gsub('[\192\219]', SLIP_ENCODE) .. SLIP_END
end

--- The complete frames at the start of `buffer` (decoded) and the incomplete rest.
function M.slip_frames(buffer)
  local frames, pos = {}, 1
  while true do
    local stop = buffer:find(SLIP_END, pos, true)
    if not stop then break end
    local frame = buffer:sub(pos, stop - 1)
    if frame ~= '' then frames[#frames + 1] = (frame:gsub('\219(.)', SLIP_DECODE)) end
    pos = stop + 1
  end
  return frames, buffer:sub(pos)
end

local SocketTransport = {}
SocketTransport.__index = SocketTransport

--- LuaSocket (`socket`: the loaded module): UDP, plus one TCP/SLIP connection opened when a
--- packet needs it (M.needs_stream). Never blocks, except for resolving a host name once
--- here (LuaSocket's sendto takes numeric addresses only).
function M.socket_transport(socket, settings)
  local host = settings.host
  if not host:match('^[%d.]+$') and not host:find(':', 1, true) then
    local ip, why = socket.dns.toip(host)
    if not ip then return nil, 'cannot resolve the daemon host ' .. host .. ': ' .. tostring(why) end
    host = ip
  end
  local udp, err = socket.udp()
  if not udp then return nil, err end
  local ok, why = udp:setsockname(host:match('^127%.') and '127.0.0.1' or '*', 0)
  if not ok then return nil, why end
  udp:settimeout(0) -- never block the DAW's UI
  return setmetatable({ kind = 'socket', socket = socket, udp = udp, host = host,
    port = settings.port, stream = nil, inbox = '', synthetic = {}, settings = settings,
    token = M.token(settings) }, SocketTransport)
end

-- every client job sent over TCP gets an error reply of its own when the connection fails
function SocketTransport:error_reply(client_job, why)
  self.synthetic[#self.synthetic + 1] = { address = '/maedaw/error', types = 'ssss',
    args = { client_job, '', 'transport', why } }
end

local function client_job_of(packet)
  local msg = M.osc_decode(M.inner(packet))
  return msg and type(msg.args[1]) == 'string' and msg.args[1] or nil
end

-- The connection failed: before it was up, its packets go as datagrams when they can (a
-- daemon started with --no-tcp); after, its jobs' replies are lost, so they fail.
function SocketTransport:lose_stream(why)
  local stream = self.stream
  self.stream, self.stream_failed = nil, why
  stream.tcp:close()
  if not stream.up then
    for _, packet in ipairs(stream.pending) do
      local ok, err = false, 'too large for one datagram'
      if #packet <= M.MAX_DATAGRAM then ok, err = self.udp:sendto(packet, self.host, self.port) end
      local client_job = client_job_of(packet)
      if not ok and client_job then self:error_reply(client_job, why .. '; over UDP: ' .. tostring(err)) end
    end
  else
    for _, client_job in ipairs(stream.jobs) do self:error_reply(client_job, why) end
  end
end

function SocketTransport:send(packets)
  self.token = self.token or M.token(self.settings) -- a daemon just started has just made it
  for _, packet in ipairs(packets) do
    if self.token then packet = M.seal(packet, self.token) end
    local stream = M.needs_stream(packet) and not self.stream_failed
    if not stream then
      local ok, err = self.udp:sendto(packet, self.host, self.port)
      if not ok then
        if #packet <= M.UDP_SAFE_BYTES or self.stream_failed then return nil, err end
        stream = true -- the OS refused the datagram: the stream takes it
      end
    end
    if stream then
      if not self.stream then
        local tcp, err = self.socket.tcp()
        if not tcp then return nil, 'no TCP socket: ' .. tostring(err) end
        tcp:settimeout(0)
        self.stream = { tcp = tcp, up = false, since = self.socket.gettime(), pending = {},
          jobs = {}, out = '' }
        local ok, why = tcp:connect(self.host, self.port)
        if ok then self.stream.up = true end
        if not ok and why ~= 'timeout' then self.stream.refused = why end
      end
      local s = self.stream
      s.jobs[#s.jobs + 1] = client_job_of(packet)
      if s.up then s.out = s.out .. M.slip_encode(packet) else s.pending[#s.pending + 1] = packet end
    end
  end
  self:pump()
  return true
end

-- moves the TCP connection along: connects, writes what is queued, reads what arrived
function SocketTransport:pump()
  local s = self.stream
  if not s then return end
  if not s.up then
    if s.refused then self:lose_stream('no TCP connection to the daemon: ' .. s.refused) return end
    local _, writable = self.socket.select(nil, { s.tcp }, 0)
    if writable[1] then
      if not s.tcp:getpeername() then self:lose_stream('the daemon refused a TCP connection') return end
      s.up = true
      for _, packet in ipairs(s.pending) do s.out = s.out .. M.slip_encode(packet) end
      s.pending = {}
    elseif self.socket.gettime() - s.since > M.TCP_CONNECT_S then
      self:lose_stream('no TCP connection to the daemon within ' .. M.TCP_CONNECT_S .. ' s')
      return
    else
      return
    end
  end
  if s.out ~= '' then
    local last, err, partial = s.tcp:send(s.out)
    s.out = s.out:sub((last or partial or 0) + 1)
    if err and err ~= 'timeout' then self:lose_stream('TCP send failed: ' .. err) return end
  end
  for _ = 1, 64 do
    local data, err, partial = s.tcp:receive(65536)
    data = data or partial
    if data and data ~= '' then self.inbox = self.inbox .. data end
    if err == 'closed' then self:lose_stream('the daemon closed the TCP connection') return end
    if err then break end
  end
end

function SocketTransport:poll()
  local messages = self.synthetic
  self.synthetic = {}
  for _ = 1, 256 do
    local data = self.udp:receivefrom(M.RECEIVE_BYTES) -- without a size LuaSocket cuts at 8192
    if not data then break end
    local msg = M.osc_decode(data)
    if msg then messages[#messages + 1] = msg end
  end
  self:pump()
  if self.inbox ~= '' then
    local frames
    frames, self.inbox = M.slip_frames(self.inbox)
    for _, frame in ipairs(frames) do
      local msg = M.osc_decode(frame)
      if msg then messages[#messages + 1] = msg end
    end
  end
  for _, msg in ipairs(self.synthetic) do messages[#messages + 1] = msg end
  self.synthetic = {}
  return messages
end

function SocketTransport:close()
  if self.stream then
    self:pump() -- what was queued just now
    if self.stream then self.stream.tcp:close() end
    self.stream = nil
  end
  if self.udp then self.udp:close() self.udp = nil end
end

-- The helper transport: each send starts `maedaw send`, which sends the packets from one UDP
-- socket, waits for the replies and appends each one as a hex line to a file polled here;
-- "end <why>" is its last line.
local HelperTransport = {}
HelperTransport.__index = HelperTransport

--- `settings`: helper (the command that runs maedaw), host, port. `daw` is the DAW's part:
---   path(name) -> a path for a temporary file of that name (the folder exists),
---   quote(arg) -> arg quoted for the command line `spawn` runs,
---   program(helper) -> optional: the helper setting as the command line's start,
---   spawn(command, log) -> true, or false[, why]: starts the command in the background (its
---     output goes to the file `log` where the DAW can put it there).
--- `wait_s`: how long each helper waits for replies unless a send says otherwise.
function M.helper_transport(settings, wait_s, daw)
  return setmetatable({ kind = 'helper', settings = settings, wait_s = wait_s, daw = daw,
    readers = {}, token = M.token(settings) }, HelperTransport)
end

function HelperTransport:send(packets, wait_s)
  self.token = self.token or M.token(self.settings) -- a daemon just started has just made it
  local daw, stamp = self.daw, M.new_client_job('h')
  local replies, log = daw.path(stamp .. '.replies'), daw.path(stamp .. '.log')
  local args = {
    daw.program and daw.program(self.settings.helper) or self.settings.helper, 'send', '--host', daw.quote(self.settings.host), '--port',
    tostring(self.settings.port), '--replies', daw.quote(replies), '--timeout',
    string.format('%.3f', wait_s or self.wait_s),
  }
  local files = {}
  local function give_up(why)
    for _, path in ipairs(files) do os.remove(path) end
    return nil, why
  end
  for n, packet in ipairs(packets) do
    local path = daw.path(string.format('%s.%d.osc', stamp, n))
    local f, why = io.open(path, 'wb')
    if not f then return give_up(why) end
    -- signed here when the token is known; else `maedaw send` signs with the local one
    f:write(self.token and M.seal(packet, self.token) or packet)
    f:close()
    files[#files + 1] = path -- the helper deletes them once it has read them
    args[#args + 1] = daw.quote(path)
  end
  -- the replies file exists before the helper starts, so a poll never races its creation
  local f, why = io.open(replies, 'wb')
  if not f then return give_up(why) end
  f:close()
  files[#files + 1] = replies
  local ok
  ok, why = daw.spawn(table.concat(args, ' '), log)
  if not ok then return give_up(why or ('could not start the helper: ' .. self.settings.helper)) end
  self.readers[#self.readers + 1] = { path = replies, log = log, offset = 0, ended = false }
  return true
end

--- Why the newest helper stopped waiting ('complete', 'timeout', ...), or nil while it waits.
function HelperTransport:last_ended()
  local reader = self.readers[#self.readers]
  return reader and reader.ended or nil
end

--- What the newest helper printed (e.g. "maedaw: not found"), for error messages.
function HelperTransport:log_text()
  local reader = self.readers[#self.readers]
  local f = reader and io.open(reader.log, 'rb')
  if not f then return '' end
  local text = f:read('a')
  f:close()
  return (text:match('^%s*(.-)%s*$'))
end

function HelperTransport:poll()
  local messages = {}
  for _, reader in ipairs(self.readers) do
    local f = io.open(reader.path, 'rb')
    if f then
      f:seek('set', reader.offset)
      local chunk = f:read('a') or ''
      f:close()
      local last = chunk:match('^.*()\n') -- consume complete lines only
      if last then
        reader.offset = reader.offset + last
        for line in chunk:sub(1, last):gmatch('([^\n]*)\n') do
          if line:sub(1, 4) == 'end ' then
            reader.ended = line:sub(5)
          elseif line:match('^%x+$') then
            local msg = M.osc_decode(M.unhex(line))
            if msg then messages[#messages + 1] = msg end
          end
        end
      end
    end
  end
  return messages
end

function HelperTransport:close()
  -- a helper that has ended leaves its replies to us; one still running (or not yet started)
  -- finds a stop file, exits, and removes its replies and the stop file itself
  self:poll() -- learn which helpers have ended since the last cycle
  for _, reader in ipairs(self.readers) do
    if reader.ended then
      os.remove(reader.path)
    else
      local stop = io.open(reader.path .. '.stop', 'wb')
      if stop then stop:close() end
    end
    os.remove(reader.log)
  end
end

return M
