-- maedaw library for Ardour (7.x, Lua 5.3): shared by the editor actions (GUI) and the
-- headless runner (ardour7-lua). It turns regions into requests of the maedaw OSC contract
-- (docs/osc.md, "maedaw-osc/1"), sends them, polls the replies and reports per region.
--
-- Transport. Ardour's Lua can send OSC (ARDOUR.LuaOSC.Address) but has no way to receive a
-- datagram, and cannot load C modules such as LuaSocket. So requests that need a reply go
-- through `maedaw send` (the same helper the REAPER scripts use without LuaSocket): this
-- library encodes each packet itself, starts the helper in the background, and the helper
-- sends the packets from its own UDP socket and appends every reply as a hex line to a file
-- that we poll. The fire-and-forget /maedaw/cancel goes out through ARDOUR.LuaOSC.
--
-- Nothing here touches the GUI: `ui` objects passed in by the caller show progress.
-- This file has no `ardour {}` header on purpose: it is a library, not a script.

local M = {}

M.CONTRACT = 'maedaw-osc/1'
M.RESTORE_OPS = { 'declip', 'declick', 'bandwidth', 'denoise', 'dehum' }
M.DEFAULTS = {
  host = '127.0.0.1',
  port = '9000',
  helper = 'maedaw',     -- command that runs `maedaw` (its `send` subcommand is the helper)
  out_dir = '',          -- blank: <session folder>/maedaw
  format = 'wav',        -- wav | flac
  timeout_s = '600',     -- per job; also sent to the daemon as the job's timeout_s
  ping_timeout_s = '3',
}
local GRACE_S = 15       -- after a job's own timeout, how long we still wait for its answer
local CANCEL_WAIT_S = 5  -- after a cancel, how long we wait for the daemon's "cancelled"
local POLL_US = 50000

------------------------------------------------------------------------------------------
-- OSC 1.0 (string.pack is Lua 5.3's; Ardour 7 embeds Lua 5.3)
------------------------------------------------------------------------------------------

local function osc_string(s)
  -- the bytes, a NUL, then NULs up to a multiple of 4
  return s .. string.rep('\0', 4 - #s % 4)
end

--- One message. `types` has no leading comma: s string, i int32, h int64, f float32, d float64.
function M.osc_encode(address, types, args)
  args = args or {}
  assert(#types == #args, 'osc_encode: ' .. #types .. ' type tags for ' .. #args .. ' arguments')
  local parts = { osc_string(address), osc_string(',' .. types) }
  for k = 1, #types do
    local t, v = types:sub(k, k), args[k]
    if t == 's' then
      parts[#parts + 1] = osc_string(tostring(v))
    elseif t == 'i' or t == 'h' then
      local n = math.tointeger(v) or error('osc_encode: not an integer: ' .. tostring(v))
      parts[#parts + 1] = string.pack(t == 'i' and '>i4' or '>i8', n)
    elseif t == 'f' then
      parts[#parts + 1] = string.pack('>f', v)
    elseif t == 'd' then
      parts[#parts + 1] = string.pack('>d', v)
    else
      error('osc_encode: unsupported type tag ' .. t)
    end
  end
  return table.concat(parts)
end

local function read_osc_string(data, pos)
  local zero = data:find('\0', pos, true)
  if not zero then return nil end
  local used = zero - pos + 1
  return data:sub(pos, zero - 1), pos + used + (4 - used % 4) % 4
end

--- One message (not a bundle): {address=, types=, args={}}; or nil, why.
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
      elseif t == 'i' then v, pos = string.unpack('>i4', data, pos)
      elseif t == 'h' then v, pos = string.unpack('>i8', data, pos)
      elseif t == 'f' then v, pos = string.unpack('>f', data, pos)
      elseif t == 'd' then v, pos = string.unpack('>d', data, pos)
      elseif t == 'T' then v = true
      elseif t == 'F' then v = false
      elseif t == 'N' then v = nil
      else error('unsupported type tag ' .. t) end
      msg.args[k - 1] = v
    end
  end)
  if not ok then return nil, err end
  return msg
end

function M.unhex(text)
  return (text:gsub('%x%x', function(h) return string.char(tonumber(h, 16)) end))
end

------------------------------------------------------------------------------------------
-- small helpers: JSON (the few bits we read and write), paths, shell, time
------------------------------------------------------------------------------------------

function M.json_string(s)
  local named = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return named[c] or string.format('\\u%04x', c:byte())
  end) .. '"'
end

--- A flat JSON object from a Lua table of strings / numbers / booleans / arrays of those.
function M.json_object(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local function value(v)
    if type(v) == 'number' then
      return math.type(v) == 'integer' and tostring(v) or string.format('%.17g', v)
    elseif type(v) == 'boolean' then
      return tostring(v)
    elseif type(v) == 'table' then
      local items = {}
      for _, x in ipairs(v) do items[#items + 1] = value(x) end
      return '[' .. table.concat(items, ', ') .. ']'
    elseif v == nil then
      return 'null'
    end
    return M.json_string(v)
  end
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = M.json_string(k) .. ': ' .. value(t[k]) end
  return '{' .. table.concat(parts, ', ') .. '}'
end

--- One top-level number or string field of a flat JSON object (reply summaries).
function M.json_field(text, key)
  local pattern = '"' .. key:gsub('%p', '%%%0') .. '"%s*:%s*'
  local num = text:match(pattern .. '(-?[%d%.eE+-]+)')
  if num then return tonumber(num) end
  return text:match(pattern .. '"(.-)"')
end

--- Tag names from a JSON text holding "tags": ["a", ...] or [{"label": "a", ...}, ...].
function M.json_tags(text)
  local list = text and text:match('"tags"%s*:%s*(%b[])')
  if not list then return nil end
  local tags = {}
  if list:find('{', 1, true) then
    for obj in list:gmatch('%b{}') do
      local name = M.json_field(obj, 'label') or M.json_field(obj, 'name')
      if name then tags[#tags + 1] = name end
    end
  else
    for name in list:gmatch('"(.-)"') do tags[#tags + 1] = name end
  end
  return tags
end

function M.read_file(path)
  local f = io.open(path, 'rb')
  if not f then return nil end
  local text = f:read('a')
  f:close()
  return text
end

function M.file_exists(path)
  local f = io.open(path, 'rb')
  if f then f:close() return true end
  return false
end

function M.join(...)
  return table.concat({ ... }, '/')
end

function M.basename(path)
  return path:match('([^/]*)$')
end

--- POSIX shell quoting ('...' with embedded quotes closed and escaped).
function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function is_windows()
  return (os.getenv('OS') or ''):find('Windows', 1, true) ~= nil
end

function M.mkdir(path)
  if is_windows() then error('maedaw for Ardour runs on Linux and macOS only') end
  local ok = os.execute('mkdir -p ' .. M.shell_quote(path))
  if not ok then return nil, 'could not create the folder ' .. path end
  return path
end

local function now_s()
  return ARDOUR.LuaAPI.monotonic_time() / 1e6
end

local function sleep()
  ARDOUR.LuaAPI.usleep(POLL_US)
end

--- A client job id the contract accepts: [A-Za-z0-9_.:-]{1,128}.
local counter = 0
function M.new_client_job(kind)
  counter = counter + 1
  return string.format('ardour-%s-%x-%04x-%d', kind, os.time(), math.random(0, 0xffff), counter)
end

------------------------------------------------------------------------------------------
-- settings: the action's parameters (strings, set when the action is added) over defaults;
-- each action file lists the same keys in its action_params()
------------------------------------------------------------------------------------------

--- Checked settings from `params` (a table of strings, may be nil); or nil, why.
function M.settings(params)
  local s = {}
  for key, default in pairs(M.DEFAULTS) do
    local v = params and params[key]
    v = v ~= nil and tostring(v):match('^%s*(.-)%s*$') or ''
    s[key] = v ~= '' and v or default
  end
  s.port = math.tointeger(tonumber(s.port))
  if not s.port or s.port < 1 or s.port > 65535 then return nil, 'port must be 1-65535' end
  s.timeout_s = tonumber(s.timeout_s)
  if not s.timeout_s or s.timeout_s <= 0 then return nil, 'timeout_s must be a number > 0' end
  s.ping_timeout_s = tonumber(s.ping_timeout_s)
  if not s.ping_timeout_s or s.ping_timeout_s <= 0 then return nil, 'ping_timeout_s must be > 0' end
  if s.format ~= 'wav' and s.format ~= 'flac' then return nil, 'format must be wav or flac' end
  if s.out_dir ~= '' and s.out_dir:sub(1, 1) ~= '/' then
    return nil, 'out_dir must be an absolute path (or blank)'
  end
  return s
end

--- The output folder: the setting, or <session folder>/maedaw; created if missing.
function M.resolve_out_dir(settings, session)
  if settings.out_dir == '' then
    settings.out_dir = M.join(session:path():gsub('/+$', ''), 'maedaw')
  end
  return M.mkdir(settings.out_dir)
end

------------------------------------------------------------------------------------------
-- regions -> requests
------------------------------------------------------------------------------------------

--- What to send for one audio region: one request per distinct source file (a region
--- recorded in Ardour has one mono file per channel; an imported stereo file is one file
--- read twice). Times are session samples; seconds = samples / session rate, which the
--- daemon rounds back to the same sample (sample-exact at the file's rate when it is the
--- session's, the usual case after Ardour's import). Returns a list, or nil, why.
function M.region_requests(region, session_rate)
  local ar = region:to_audioregion()
  if ar:isnil() then return nil, 'not an audio region' end
  local position = region:position():samples()
  local start = region:start():samples()
  local length = region:length():samples()
  if length <= 0 then return nil, 'empty region' end
  local by_file, order = {}, {}
  for c = 0, ar:n_channels() - 1 do
    local fs = region:source(c):to_filesource()
    if fs:isnil() then return nil, 'channel ' .. c .. ' is not read from a file' end
    local path = fs:path()
    if not by_file[path] then
      by_file[path] = { file = path, channels = {}, region_channels = {} }
      order[#order + 1] = path
    end
    table.insert(by_file[path].channels, fs:channel())
    table.insert(by_file[path].region_channels, c)
  end
  local requests = {}
  for _, path in ipairs(order) do
    local r = by_file[path]
    r.region_name = region:name()
    r.position = position
    r.start = start
    r.length = length
    r.rate = session_rate
    r.start_s = start / session_rate
    r.end_s = (start + length) / session_rate
    requests[#requests + 1] = r
  end
  return requests
end

--- The OSC packet for one request. kind: repair | restore | tag; op: a restore operation.
function M.request_packet(kind, req, settings, op)
  local client_job = M.new_client_job(kind)
  local options = M.json_object({ timeout_s = settings.timeout_s, format = settings.format })
  local packet
  if kind == 'repair' then
    packet = M.osc_encode('/maedaw/repair', 'ssddss',
      { client_job, req.file, req.start_s, req.end_s, settings.out_dir, options })
  elseif kind == 'restore' then
    packet = M.osc_encode('/maedaw/restore', 'sssddss',
      { client_job, op, req.file, req.start_s, req.end_s, settings.out_dir, options })
  elseif kind == 'tag' then
    options = M.json_object({ timeout_s = settings.timeout_s })
    packet = M.osc_encode('/maedaw/tag', 'ssdds',
      { client_job, req.file, req.start_s, req.end_s, options })
  else
    error('unknown request kind ' .. tostring(kind))
  end
  return client_job, packet
end

------------------------------------------------------------------------------------------
-- transport: `maedaw send` for requests (it receives the replies), LuaOSC for cancel
------------------------------------------------------------------------------------------

local Helper = {}
Helper.__index = Helper

--- Starts `maedaw send` on `packets` in the background; returns a poller, or nil, why.
function M.start_helper(settings, packets, wait_s, tmp_dir)
  if is_windows() then return nil, 'maedaw for Ardour runs on Linux and macOS only' end
  local stamp = M.new_client_job('h')
  local replies = M.join(tmp_dir, stamp .. '.replies')
  local log = M.join(tmp_dir, stamp .. '.log')
  local args = {
    settings.helper, 'send', '--host', M.shell_quote(settings.host), '--port',
    tostring(settings.port), '--replies', M.shell_quote(replies), '--timeout',
    string.format('%.3f', wait_s),
  }
  for n, packet in ipairs(packets) do
    local path = M.join(tmp_dir, string.format('%s.%d.osc', stamp, n))
    local f, why = io.open(path, 'wb')
    if not f then return nil, why end
    f:write(packet)
    f:close()
    args[#args + 1] = M.shell_quote(path) -- the helper deletes it once read
  end
  -- the replies file exists before the helper starts: a poll never races its creation
  local f, why = io.open(replies, 'wb')
  if not f then return nil, why end
  f:close()
  -- `helper` is a command line the user set (it may be "python3 -m maedaw.bridge.cli"),
  -- so it is not quoted; everything else is. `&`: the shell returns at once.
  local command = table.concat(args, ' ') .. ' </dev/null >' .. M.shell_quote(log) .. ' 2>&1 &'
  os.execute(command)
  return setmetatable({ replies = replies, log = log, offset = 0, ended = nil }, Helper)
end

--- New reply messages since the last poll; `self.ended` is set once the helper has ended.
function Helper:poll()
  local messages = {}
  local f = io.open(self.replies, 'rb')
  if not f then return messages end
  f:seek('set', self.offset)
  local chunk = f:read('a') or ''
  f:close()
  local last = chunk:match('^.*()\n') -- complete lines only
  if not last then return messages end
  self.offset = self.offset + last
  for line in chunk:sub(1, last):gmatch('([^\n]*)\n') do
    if line:sub(1, 4) == 'end ' then
      self.ended = line:sub(5)
    elseif line:match('^%x+$') then
      local msg = M.osc_decode(M.unhex(line))
      if msg then messages[#messages + 1] = msg end
    end
  end
  return messages
end

--- What the helper printed (e.g. "maedaw: not found"), for error messages.
function Helper:log_text()
  local text = M.read_file(self.log) or ''
  return text:match('^%s*(.-)%s*$')
end

--- Lets go of the helper: one that ended leaves its files to us; one still running sees
--- the stop file, exits and removes its replies and the stop file itself.
function Helper:close()
  self:poll()
  if self.ended then
    os.remove(self.replies)
  else
    local stop = io.open(self.replies .. '.stop', 'wb')
    if stop then stop:close() end
  end
  os.remove(self.log)
end

--- Sends /maedaw/cancel: through ARDOUR.LuaOSC (no reply is expected, and the daemon
--- cancels by client job id, whoever sends it). Its return value is not trusted: it has
--- been seen to say false for a packet that arrived.
function M.send_cancel(settings, client_job, tmp_dir)
  if ARDOUR.LuaOSC then
    local url = string.format('osc.udp://%s:%d/', settings.host, settings.port)
    ARDOUR.LuaOSC.Address(url):send('/maedaw/cancel', 's', client_job)
    return
  end
  local helper = M.start_helper(settings, { M.osc_encode('/maedaw/cancel', 's', { client_job }) },
    1, tmp_dir)
  if helper then helper:close() end
end

------------------------------------------------------------------------------------------
-- running requests: ping, send, poll until every job has its final reply
------------------------------------------------------------------------------------------

--- The temp folder for packets and replies (under the output folder: always writable).
function M.tmp_dir(out_dir)
  return M.mkdir(M.join(out_dir, '.maedaw-tmp'))
end

--- Pings the daemon; returns the pong's fields, or nil, a message that says what to do.
function M.ping(settings, tmp_dir)
  local client_job = M.new_client_job('ping')
  local helper, why = M.start_helper(settings, { M.osc_encode('/maedaw/ping', 's', { client_job }) },
    settings.ping_timeout_s, tmp_dir)
  if not helper then return nil, why end
  local deadline = now_s() + settings.ping_timeout_s + 2 -- + the helper's start-up
  local pong
  while not pong and not helper.ended and now_s() < deadline do
    for _, msg in ipairs(helper:poll()) do
      if msg.address == '/maedaw/pong' and msg.args[1] == client_job then pong = msg end
    end
    if not pong then sleep() end
  end
  local log = helper:log_text()
  helper:close()
  if not pong then
    local msg = string.format('The maedaw daemon is not answering at %s:%d.\n' ..
      'Start it with `maedaw serve` (or check host and port in the action\'s settings).',
      settings.host, settings.port)
    if log ~= '' then msg = msg .. '\nThe helper (' .. settings.helper .. ' send) said: ' .. log end
    return nil, msg
  end
  if pong.args[2] ~= M.CONTRACT then
    return nil, string.format('The daemon speaks %s; these scripts speak %s. Update one of them.',
      tostring(pong.args[2]), M.CONTRACT)
  end
  return { contract = pong.args[2], version = pong.args[3], model = pong.args[4] }
end

local function apply_reply(job, msg)
  local a = msg.args
  if msg.address == '/maedaw/accepted' then
    job.job_id, job.state = a[2], 'queued'
  elseif msg.address == '/maedaw/progress' then
    job.job_id, job.fraction, job.stage, job.state = a[2], a[3] or 0, a[4] or '', 'running'
  elseif msg.address == '/maedaw/done' then
    job.job_id, job.stem, job.report, job.summary = a[2], a[3], a[4], a[5] or ''
    job.fraction, job.state = 1, 'done'
  elseif msg.address == '/maedaw/error' then
    job.job_id, job.code, job.message = a[2], a[3], a[4]
    job.state = job.code == 'cancelled' and 'cancelled' or 'error'
  end
end

local function is_final(job)
  return job.state == 'done' or job.state == 'error' or job.state == 'cancelled'
    or job.state == 'timeout'
end

--- Sends one request per entry of `requests` (from region_requests) and waits for all.
--- `ui.progress(fraction, text)` is called while waiting and returns true to cancel;
--- `ui.on_accepted(job)` (optional) is called once per accepted job.
--- Each request gets: client_job, state (done | error | cancelled | timeout), stem, report,
--- summary, code, message. Returns the requests, or nil, why (nothing was sent).
function M.run(settings, kind, requests, ui, op)
  local tmp, why = M.tmp_dir(settings.out_dir)
  if not tmp then return nil, why end
  local pong
  pong, why = M.ping(settings, tmp)
  if not pong then return nil, why end

  local packets, by_client = {}, {}
  for _, req in ipairs(requests) do
    local client_job, packet = M.request_packet(kind, req, settings, op)
    req.client_job, req.state, req.fraction, req.stage = client_job, 'sent', 0, 'sent'
    packets[#packets + 1] = packet
    by_client[client_job] = req
  end
  local wait_s = settings.timeout_s + GRACE_S
  local helper
  helper, why = M.start_helper(settings, packets, wait_s, tmp)
  if not helper then return nil, why end

  local deadline = now_s() + wait_s
  local cancel_deadline
  -- a cancel names the client job; it is sent once the daemon has accepted the job (a cancel
  -- that arrived before the request would find nothing to cancel and the job would run on)
  local function cancel_when_known(req, force)
    if req.pending and not req.cancel_sent and (req.job_id or force) then
      M.send_cancel(settings, req.client_job, tmp)
      req.cancel_sent = true
    end
  end
  while true do
    for _, msg in ipairs(helper:poll()) do
      local req = by_client[msg.args[1]]
      if req and not is_final(req) then
        local was_sent = req.state == 'sent'
        apply_reply(req, msg)
        if was_sent and req.job_id and ui.on_accepted then ui.on_accepted(req) end
        if not is_final(req) then cancel_when_known(req) end
      end
    end
    local done, total, fraction = 0, #requests, 0
    for _, req in ipairs(requests) do
      if is_final(req) then done = done + 1 end
      fraction = fraction + (is_final(req) and 1 or (req.fraction or 0))
    end
    if done == total then break end
    local stage = ''
    for _, req in ipairs(requests) do
      if not is_final(req) then stage = req.stage or '' break end
    end
    local cancelled = ui.progress(fraction / total,
      string.format('%d of %d done - %s', done, total, cancel_deadline and 'cancelling' or stage))
    local t = now_s()
    if (cancelled or t > deadline or helper.ended) and not cancel_deadline then
      -- stop every unfinished job, so none runs on for a client that stopped listening
      for _, req in ipairs(requests) do
        if not is_final(req) then
          req.pending = cancelled and 'cancelled' or 'timeout'
          cancel_when_known(req)
        end
      end
      cancel_deadline = t + CANCEL_WAIT_S
    end
    if cancel_deadline and (t > cancel_deadline or helper.ended) then
      for _, req in ipairs(requests) do
        if not is_final(req) then
          cancel_when_known(req, true) -- never accepted as far as we know: cancel by name
          req.state, req.code = req.pending, req.pending
          req.message = req.pending == 'cancelled' and 'cancelled in Ardour'
            or ('no final answer within ' .. math.floor(wait_s) .. ' s')
        end
      end
      break
    end
    sleep()
  end
  helper:close()
  return requests
end

--- A one-line account of one finished request, for the summary dialog / log.
function M.describe(req)
  local where = string.format('%s [%s]', req.region_name or '?', M.basename(req.file))
  if req.state == 'done' then
    local summary = req.summary or ''
    local tags = M.json_tags(summary)
    if tags then return where .. ': tags: ' .. (#tags > 0 and table.concat(tags, ', ') or 'none') end
    local op = M.json_field(summary, 'op')
    if op then -- a restore: "changed" says whether any sample differs from the source
      local what = summary:find('"changed"%s*:%s*false') and 'nothing to change' or 'restored'
      return string.format('%s: %s, %s -> %s', where, op, what, M.basename(req.stem or ''))
    end
    local repaired = M.json_field(summary, 'repaired')
    if repaired then
      return string.format('%s: %d span(s) repaired, %d left alone -> %s', where, repaired,
        M.json_field(summary, 'left_alone') or 0, M.basename(req.stem or ''))
    end
    return where .. ': done -> ' .. M.basename(req.stem or '')
  end
  return string.format('%s: %s (%s)', where, req.message or req.state, req.code or req.state)
end

--- Tags for a finished tag request: from its summary, else from its JSON report.
function M.tags_of(req)
  return M.json_tags(req.summary) or (req.report and M.json_tags(M.read_file(req.report))) or {}
end

--- After Session:new_audio_track: Ardour connects a new track's outputs to the master bus
--- from its auto-connect thread, a little later. A session saved before that has the track
--- unconnected (seen headless with ardour7-lua 7.3), so wait a few process cycles for it,
--- and connect the outputs to the master's inputs ourselves if it still has not happened.
function M.settle_new_track(session, route)
  ARDOUR.LuaAPI.wait_for_process_callback(8, 2000)
  local out, master = route:output(), session:master_out()
  if master:isnil() then return end
  local inputs = master:input()
  local n_in = inputs:n_ports():n_audio()
  for n = 0, out:n_ports():n_audio() - 1 do
    local port = out:audio(n)
    if n_in > 0 and not port:connected() then port:connect(inputs:audio(n % n_in):name()) end
  end
end

--- Appends tags to the region's name (one undo step is the caller's business).
function M.name_with_tags(name, tags)
  if #tags == 0 then return name end
  return string.format('%s [%s]', name, table.concat(tags, ', '))
end

return M
