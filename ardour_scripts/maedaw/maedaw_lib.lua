-- maedaw library for Ardour (7.x, Lua 5.3): shared by the editor actions (GUI) and the
-- headless runner (ardour7-lua). It turns regions into requests of the maedaw OSC contract
-- (docs/osc.md, "maedaw-osc/1"), sends them, polls the replies and reports per region.
--
-- The wire (OSC, JSON, the contract's requests, the helper transport, replies -> jobs) is
-- maedaw_osc.lua, the file the REAPER scripts use too; its functions are reachable through
-- this library (lib.json_object, ...). Load this file with its folder as the argument:
--   local lib = assert(loadfile(dir .. 'maedaw_lib.lua'))(dir)   -- dir ends with '/'
-- (Ardour's actions have no `debug` to find it themselves, nor `require` or `dofile`; where
-- `debug` is there, as in ardour7-lua, the argument may be left out.)
--
-- Transport. Ardour's Lua can send OSC (ARDOUR.LuaOSC.Address) but has no way to receive a
-- datagram, and cannot load C modules such as LuaSocket. So requests that need a reply go
-- through `maedaw send` (the same helper the REAPER scripts use without LuaSocket): the
-- packets are encoded here, the helper is started in the background, sends them from its own
-- UDP socket and appends every reply as a hex line to a file that we poll. /maedaw/cancel goes
-- that way too: every request is signed with the token (docs/security.md), which
-- ARDOUR.LuaOSC's messages cannot be.
--
-- Nothing here touches the GUI: `ui` objects passed in by the caller show progress.
-- This file has no `ardour {}` header on purpose: it is a library, not a script.

local here = ... or (debug and debug.getinfo(1, 'S').source:match('^@?(.*/)')) or './'

--- maedaw_osc.lua: beside this file once installed (`maedaw install-ardour` copies it there),
--- else where the repository and the Python package keep it (reaper_scripts/maedaw/).
local function load_wire()
  local installed, repository = here, here .. '../../reaper_scripts/maedaw/'
  for _, path in ipairs({ installed .. 'maedaw_osc.lua', repository .. 'maedaw_osc.lua' }) do
    local f = io.open(path, 'rb')
    if f then
      f:close()
      return assert(loadfile(path))()
    end
  end
  error('maedaw_osc.lua is missing from ' .. here .. ' (maedaw install-ardour puts it there)')
end

local osc = load_wire()
local M = setmetatable({}, { __index = osc })

M.RESTORE_OPS = { 'declip', 'declick', 'bandwidth', 'denoise', 'dehum' }
M.DEFAULTS = {
  host = '127.0.0.1',
  port = '9000',
  token = '',            -- blank: the local daemon's token file (a studio server: `maedaw token`)
  helper = 'maedaw',     -- command that runs `maedaw` (its `send` subcommand is the helper)
  out_dir = '',          -- blank: <session folder>/maedaw
  format = 'wav',        -- wav | flac
  timeout_s = '600',     -- per job; also sent to the daemon as the job's timeout_s
  ping_timeout_s = '3',
  sensitivity = 'normal', -- repair: low | normal | high (how sure damage must be to be written)
}
local GRACE_S = 15       -- after a job's own timeout, how long we still wait for its answer
local CANCEL_WAIT_S = 5  -- after a cancel, how long we wait for the daemon's "cancelled"
local POLL_US = 50000

------------------------------------------------------------------------------------------
-- small helpers: paths, shell, time
------------------------------------------------------------------------------------------

--- Tag names from a JSON text with the contract's "tags" (a tag summary); nil when it has none.
function M.json_tags(text)
  local tags = osc.parse_tags(text)
  if not tags then return nil end
  local names = {}
  for _, t in ipairs(tags) do names[#names + 1] = t.label end
  return names
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

--- A client job id: "ardour-<kind>-...", so the daemon's log tells where a job came from.
local function new_client_job(kind)
  return osc.new_client_job('ardour-' .. kind)
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
  if s.sensitivity ~= 'low' and s.sensitivity ~= 'normal' and s.sensitivity ~= 'high' then
    return nil, 'sensitivity must be low, normal or high'
  end
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
  local client_job = new_client_job(kind)
  local options = { timeout_s = settings.timeout_s, format = settings.format }
  if kind == 'tag' then options.format = nil end
  if kind == 'repair' then options.sensitivity = settings.sensitivity end
  return client_job, osc.request(kind, {
    client_job = client_job, op = op, source = req.file, start = req.start_s, ['end'] = req.end_s,
    out_dir = settings.out_dir, options = options,
  })
end

------------------------------------------------------------------------------------------
-- transport: `maedaw send` for requests (it receives the replies), LuaOSC for cancel
------------------------------------------------------------------------------------------

--- The helper transport (maedaw_osc.lua) with Ardour's part: temp files in `tmp_dir`, the
--- command run by the POSIX shell, its output kept in a log for the error messages.
function M.helper(settings, wait_s, tmp_dir)
  if is_windows() then return nil, 'maedaw for Ardour runs on Linux and macOS only' end
  return osc.helper_transport(settings, wait_s, {
    path = function(name) return M.join(tmp_dir, name) end,
    quote = M.shell_quote,
    spawn = function(command, log)
      -- `helper` is a command line the user set (it may be "python3 -m maedaw.bridge.cli"),
      -- so it is not quoted; everything else is. `&`: the shell returns at once.
      os.execute(command .. ' </dev/null >' .. M.shell_quote(log) .. ' 2>&1 &')
      return true
    end,
  })
end

--- Sends /maedaw/cancel through the helper: it must be signed like every request
--- (docs/security.md), which ARDOUR.LuaOSC's messages cannot be.
function M.send_cancel(settings, client_job, tmp_dir)
  local helper = M.helper(settings, 1, tmp_dir)
  if helper and helper:send({ osc.request('cancel', { client_job = client_job }) }) then
    helper:close()
  end
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
  local client_job = new_client_job('ping')
  local helper, why = M.helper(settings, settings.ping_timeout_s, tmp_dir)
  local sent
  if helper then sent, why = helper:send({ osc.request('ping', { client_job = client_job }) }) end
  if not sent then return nil, why end
  local deadline = now_s() + settings.ping_timeout_s + 2 -- + the helper's start-up
  local pong, refused
  while not pong and not refused and not helper:last_ended() and now_s() < deadline do
    for _, msg in ipairs(helper:poll()) do
      pong = pong or osc.pong(msg, client_job)
      refused = refused or osc.refused(msg, client_job)
    end
    if not pong and not refused then sleep() end
  end
  local log = helper:log_text()
  helper:close()
  if refused and not pong then return nil, refused end
  if not pong then
    local msg = string.format('The maedaw daemon is not answering at %s:%d.\n' ..
      'Start it with `maedaw serve` (or check host and port in the action\'s settings).',
      settings.host, settings.port)
    if log ~= '' then msg = msg .. '\nThe helper (' .. settings.helper .. ' send) said: ' .. log end
    return nil, msg
  end
  if pong.contract ~= osc.CONTRACT then
    return nil, string.format('The daemon speaks %s; these scripts speak %s. Update one of them.',
      tostring(pong.contract), osc.CONTRACT)
  end
  return pong
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

  local packets = {}
  for _, req in ipairs(requests) do
    req.client_job, packets[#packets + 1] = M.request_packet(kind, req, settings, op)
  end
  local jobs = osc.jobs(requests, 'sent')
  local wait_s = settings.timeout_s + GRACE_S
  local helper, sent
  helper, why = M.helper(settings, wait_s, tmp)
  if helper then sent, why = helper:send(packets) end
  if not sent then return nil, why end

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
      local req = jobs:waiting_for(msg)
      if req then
        local was_sent = req.state == 'sent'
        osc.apply_reply(req, msg)
        if was_sent and req.job_id and ui.on_accepted then ui.on_accepted(req) end
        if not osc.is_final(req) then cancel_when_known(req) end
      end
    end
    if not jobs:pending()[1] then break end
    local cancelled = ui.progress(jobs:progress(cancel_deadline and 'cancelling' or nil))
    local t = now_s()
    local ended = helper:last_ended()
    if (cancelled or t > deadline or ended) and not cancel_deadline then
      -- stop every unfinished job, so none runs on for a client that stopped listening
      for _, req in ipairs(jobs:pending()) do
        req.pending = cancelled and 'cancelled' or 'timeout'
        cancel_when_known(req)
      end
      cancel_deadline = t + CANCEL_WAIT_S
    end
    if cancel_deadline and (t > cancel_deadline or ended) then
      for _, req in ipairs(jobs:pending()) do
        cancel_when_known(req, true) -- never accepted as far as we know: cancel by name
        req.state, req.code = req.pending, req.pending
        req.message = req.pending == 'cancelled' and 'cancelled in Ardour'
          or ('no final answer within ' .. math.floor(wait_s) .. ' s')
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
    local op = osc.json_field(summary, 'op')
    if op then -- a restore: "changed" says whether any sample differs from the source
      local what = summary:find('"changed"%s*:%s*false') and 'nothing to change' or 'restored'
      return string.format('%s: %s, %s -> %s', where, op, what, M.basename(req.stem or ''))
    end
    local repaired = osc.json_field(summary, 'repaired')
    if repaired then
      return string.format('%s: %d span(s) repaired, %d left alone -> %s', where, repaired,
        osc.json_field(summary, 'left_alone') or 0, M.basename(req.stem or ''))
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
