-- @noindex
--
-- maedaw's REAPER library: settings in ExtState, the transport REAPER can open (LuaSocket,
-- else the `maedaw send` helper through reaper.ExecProcess), selected items -> requests, a
-- non-blocking reaper.defer job loop with a progress window, and take write-back.
--
-- The wire (OSC, JSON, the contract's requests, the transports, replies -> jobs) is
-- maedaw_osc.lua beside this file, shared with the Ardour scripts; its functions are
-- reachable through this library too (lib.osc_encode, lib.parse_tags, ...).

local osc = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_osc.lua')
local M = setmetatable({}, { __index = osc })

-- The project tab the action started in (each run loads this library afresh): every call
-- names it, so switching tabs while a job runs changes nothing in the other project.
-- (Outside REAPER, e.g. the codec tests, there is no project: 0, the active one.)
M.proj, M.proj_file = 0, ''
if reaper then M.proj, M.proj_file = reaper.EnumProjects(-1, '') end

M.SECTION = 'maedaw' -- ExtState section
M.DEFAULTS = {
  host = '127.0.0.1',
  port = '9000',
  token = '',            -- blank: the local daemon's token file (a studio server: `maedaw token`)
  out_dir = '',          -- blank: the project's media folder
  format = 'wav',        -- wav | flac
  timeout_s = '600',     -- per job (also sent to the daemon as the job's timeout_s)
  transport = 'auto',    -- auto | socket | helper
  helper = 'maedaw',     -- command that runs `maedaw` (for the helper transport)
  ping_timeout_s = '2',
  restore_op = 'declip', -- last operation chosen in "Restore selected items"
  sensitivity = 'normal', -- repair: low | normal | high (how sure damage must be to be written)
}
M.RESTORE_OPS = { declip = true, declick = true, bandwidth = true, denoise = true, dehum = true }

-- Actions REAPER uses to render a take whose sound is not its file.
M.CMD_RENDER_TO_NEW_TAKE = 41999   -- Item: Render items to new take
M.CMD_APPLY_FX_TO_ITEMS = 40209    -- Item: Apply track/take FX to items (MIDI -> audio; see
                                   -- render_midi: the track FX after the instrument are bypassed)
M.CMD_BUILD_MISSING_PEAKS = 40047  -- Peaks: Build any missing peaks

local READABLE = { wav = true, flac = true, aif = true, aiff = true, ogg = true, mp3 = true }

------------------------------------------------------------------------------------------
-- small helpers
------------------------------------------------------------------------------------------

function M.is_windows()
  return package.config:sub(1, 1) == '\\'
end

function M.join(a, b)
  if a:sub(-1) == '/' or a:sub(-1) == '\\' then return a .. b end
  return a .. (M.is_windows() and '\\' or '/') .. b
end

function M.is_absolute(path)
  return path:sub(1, 1) == '/' or path:match('^%a:[/\\]') ~= nil or path:sub(1, 2) == '\\\\'
end

--- True while the project tab the action started in is open.
function M.project_open()
  return reaper.ValidatePtr2(0, M.proj, 'ReaProject*')
end

function M.file_exists(path)
  local f = io.open(path, 'rb')
  if f then f:close() return true end
  return false
end

local function now()
  return reaper.time_precise()
end

------------------------------------------------------------------------------------------
-- settings (ExtState, persisted)
------------------------------------------------------------------------------------------

function M.get_settings()
  local s = {}
  for key, default in pairs(M.DEFAULTS) do
    local value = reaper.GetExtState(M.SECTION, key)
    s[key] = (value ~= nil and value ~= '') and value or default
  end
  s.port = math.tointeger(tonumber(s.port)) or 9000
  s.timeout_s = tonumber(s.timeout_s) or 600
  s.ping_timeout_s = tonumber(s.ping_timeout_s) or 2
  return s
end

function M.set_setting(key, value)
  assert(M.DEFAULTS[key] ~= nil, 'unknown setting ' .. key)
  reaper.SetExtState(M.SECTION, key, tostring(value), true)
end

--- Checks one setting's text; returns the cleaned value or nil, why.
function M.check_setting(key, value)
  value = tostring(value):match('^%s*(.-)%s*$')
  if key == 'port' then
    local n = math.tointeger(tonumber(value))
    if not n or n < 1 or n > 65535 then return nil, 'port must be 1-65535' end
    return tostring(n)
  elseif key == 'format' then
    if value ~= 'wav' and value ~= 'flac' then return nil, 'format must be wav or flac' end
  elseif key == 'sensitivity' then
    if value == '' then return 'normal' end
    if value ~= 'low' and value ~= 'normal' and value ~= 'high' then
      return nil, 'sensitivity must be low, normal or high'
    end
  elseif key == 'transport' then
    if value ~= 'auto' and value ~= 'socket' and value ~= 'helper' then
      return nil, 'transport must be auto, socket or helper'
    end
  elseif key == 'timeout_s' or key == 'ping_timeout_s' then
    local n = tonumber(value)
    if not n or n <= 0 then return nil, key .. ' must be a number of seconds > 0' end
  elseif key == 'out_dir' then
    if value ~= '' and not M.is_absolute(value) then return nil, 'output folder must be absolute' end
  elseif key == 'token' then
    if value ~= '' and not (#value >= 32 and #value <= 256 and value:match('^[%w_%-]+$')) then
      return nil, 'token must be blank (this machine\'s daemon) or what `maedaw token` prints'
    end
  elseif key == 'host' or key == 'helper' then
    if value == '' then return nil, key .. ' must not be empty' end
  end
  return value
end

--- The folder stems go to: the setting, else the project's media (recording) folder.
function M.output_folder(settings)
  local dir = settings.out_dir
  if dir == '' then dir = reaper.GetProjectPathEx(M.proj, '') end
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

--- The folder of the project file (relative media paths are relative to it), else the
--- project's media folder (an unsaved project); the project the action started in.
function M.project_folder()
  local folder = M.proj_file and M.proj_file:match('^(.*)[/\\][^/\\]*$')
  if folder and folder ~= '' then return folder end
  return reaper.GetProjectPathEx(M.proj, '')
end

function M.daemon_hint(settings)
  return string.format(
    'The maedaw daemon is not answering at %s:%d.\n\nStart it in a terminal with:\n    maedaw serve --port %d\n' ..
    '(or install it as a user service: maedaw service systemd | launchd),\nthen run this action again. ' ..
    'Host and port are in "maedaw: Settings".', settings.host, settings.port, settings.port)
end

------------------------------------------------------------------------------------------
-- transports (maedaw_osc.lua): LuaSocket when REAPER has it, else the helper process
------------------------------------------------------------------------------------------

--- LuaSocket, from the Lua path or from the Mavriq ReaPack package.
function M.load_socket()
  local ok, socket = pcall(require, 'socket')
  if ok and type(socket) == 'table' and socket.udp then return socket end
  local mavriq = reaper.GetResourcePath() ..
    '/Scripts/Mavriq ReaScript Repository/Various/Mavriq-Lua-Sockets/'
  if M.file_exists(mavriq .. 'socket.lua') or M.file_exists(mavriq .. 'socket/core.so')
    or M.file_exists(mavriq .. 'socket/core.dll') then
    package.path = package.path .. ';' .. mavriq .. '?.lua'
    package.cpath = package.cpath .. ';' .. mavriq .. '?.so;' .. mavriq .. '?.dll;' ..
      mavriq .. '?.dylib'
    ok, socket = pcall(require, 'socket.core')
    if ok and type(socket) == 'table' and socket.udp then return socket end
  end
  return nil
end

function M.temp_folder()
  local dir = M.join(reaper.GetResourcePath(), 'Data')
  dir = M.join(M.join(dir, 'maedaw'), 'tmp')
  reaper.RecursiveCreateDirectory(dir, 0)
  return dir
end

local function quote(arg)
  if arg:find('"', 1, true) then error('a path with a double quote cannot be passed: ' .. arg) end
  return '"' .. arg .. '"'
end

--- The `maedaw` command setting as the start of a command line. REAPER splits the line
--- itself (no shell) on spaces outside double quotes, so a path to an existing file is
--- quoted whole ("C:\Program Files\...\maedaw.exe"); anything else is taken as typed (a
--- command with arguments, quoted by the user where needed).
function M.helper_program(helper)
  if M.file_exists(helper) and not helper:find('"', 1, true) then return quote(helper) end
  return helper
end

--- Starts a command line without waiting: ExecProcess -1, or -2 on Windows (minimised: no
--- console window in front of REAPER for each request). True when it started.
function M.spawn(command)
  return reaper.ExecProcess(command, M.is_windows() and -2 or -1) ~= nil
end

-- REAPER's part of the helper transport: temp files under <resource path>/Data/maedaw/tmp, the
-- command started by ExecProcess without waiting (it keeps no output)
local HELPER_DAW = {
  path = function(name) return M.join(M.temp_folder(), name) end,
  quote = quote,
  program = M.helper_program,
  spawn = function(command) return M.spawn(command) end,
}

--- Opens the configured transport: LuaSocket when available, else the helper process.
function M.open_transport(settings, wait_s)
  if settings.transport ~= 'helper' then
    local socket = M.load_socket()
    if socket then return osc.socket_transport(socket, settings) end
    if settings.transport == 'socket' then
      return nil, 'LuaSocket is not available (install "Mavriq Lua Sockets" with ReaPack, ' ..
        'or set transport to "helper" in maedaw: Settings)'
    end
  end
  return osc.helper_transport(settings, wait_s, HELPER_DAW)
end

------------------------------------------------------------------------------------------
-- progress window (gfx): drawn from the defer loop; closing it or Escape cancels
------------------------------------------------------------------------------------------

local Progress = {}
Progress.__index = Progress

function M.progress_window(title)
  gfx.init(title, 420, 90)
  gfx.setfont(1, 'Arial', 16)
  return setmetatable({ title = title }, Progress)
end

--- Draws; returns false when the user closed the window or pressed Escape.
function Progress:draw(fraction, text)
  local char = gfx.getchar()
  if char == -1 or char == 27 then return false end
  gfx.set(0.15, 0.15, 0.15, 1)
  gfx.rect(0, 0, gfx.w, gfx.h, 1)
  gfx.set(0.9, 0.9, 0.9, 1)
  gfx.x, gfx.y = 12, 10
  gfx.drawstr(text)
  gfx.x, gfx.y = 12, 64
  gfx.drawstr('Esc or close this window to cancel')
  gfx.set(0.3, 0.3, 0.3, 1)
  gfx.rect(12, 36, 396, 18, 1)
  gfx.set(0.35, 0.7, 0.4, 1)
  gfx.rect(12, 36, math.floor(396 * math.max(0, math.min(1, fraction))), 18, 1)
  gfx.update()
  return true
end

function Progress:close()
  gfx.quit()
end

------------------------------------------------------------------------------------------
-- daemon up/down: ping from a defer loop until it answers (or stops answering)
------------------------------------------------------------------------------------------

function M.is_loopback(host)
  return host:match('^127%.') ~= nil or host == 'localhost' or host == '::1'
end

--- Runs `stop` when the user stops the script (REAPER's atexit) before `is_done()` says the
--- work ended by itself: cancels what still runs, closes the transport (a helper still
--- waiting finds its stop file).
function M.on_stop(is_done, stop)
  reaper.atexit(function()
    if not is_done() then stop() end
  end)
end

--- Runs `<helper> <args>` in the background for the daemon start/stop actions; shows why
--- not and returns false when the daemon is on another machine or the helper cannot run.
function M.run_maedaw_here(settings, args, title)
  if not M.is_loopback(settings.host) then
    reaper.ShowMessageBox('The daemon is set to ' .. settings.host .. ', another machine; ' ..
      'run "maedaw ' .. args .. '" there.', title, 0)
    return false
  end
  if not M.spawn(M.helper_program(settings.helper) .. ' ' .. args) then
    reaper.ShowMessageBox('Could not run ' .. settings.helper .. '. Set the command that runs ' ..
      'maedaw in "maedaw: Settings" (e.g. the full path of the maedaw executable).', title, 0)
    return false
  end
  return true
end

--- Pings from reaper.defer (one ping in flight, at most one a second) until the daemon
--- answers (want_up) or a ping goes unanswered (not want_up), or timeout_s passes.
--- Unanswered = no pong within 1 s (LuaSocket), or the helper gave up waiting for one (its
--- start-up time under load must not count as silence). done(reached, pong_or_why).
function M.await_daemon(settings, want_up, timeout_s, title, text, done)
  local transport, err = M.open_transport(settings, 1)
  if not transport then done(false, err) return end
  local progress = M.progress_window(title)
  local started, last_sent, ping_id, waiting = now(), -math.huge, nil, false
  local finished = false
  local function finish(reached, detail)
    finished = true
    progress:close()
    transport:close()
    done(reached, detail)
  end
  M.on_stop(function() return finished end, function() transport:close() end)
  local function cycle()
    for _, msg in ipairs(transport:poll()) do
      local pong = ping_id and osc.pong(msg, ping_id)
      if pong then
        if want_up then finish(true, pong) return end
        waiting = false
      end
    end
    local t = now()
    if waiting then
      local unanswered
      if transport.kind == 'helper' then
        unanswered = transport:last_ended() ~= nil
      else
        unanswered = t - last_sent > 1
      end
      if unanswered then
        if not want_up then finish(true) return end
        waiting = false
      end
    end
    if t - started > timeout_s then finish(false, 'timeout') return end
    if not progress:draw((t - started) / timeout_s, text) then finish(false, 'cancelled') return end
    if not waiting and t - last_sent >= 1 then
      ping_id, waiting, last_sent = osc.new_client_job('ping'), true, t
      transport:send({ osc.request('ping', { client_job = ping_id }) }, 1)
    end
    reaper.defer(cycle)
  end
  reaper.defer(cycle)
end

------------------------------------------------------------------------------------------
-- the job loop
------------------------------------------------------------------------------------------

--- Runs requests against the daemon from reaper.defer, never blocking the UI.
--- spec = { title, settings, requests = { {client_job, packet, ...}, ... } or
---          prepare = function() return requests, skipped end (called once the daemon has
---          answered the ping, so nothing is rendered for a daemon that is not there),
---          finish = function(requests, outcome, detail) end }  -- once, in one defer cycle
--- Each request gets .state ('sent'|'accepted'|'done'|'error'|'cancelled'|'timeout': see
--- maedaw_osc.lua), .job_id, .fraction, .stage, .stem, .report, .summary, .code, .message
--- (the daemon's, or 'cancelled'/'timeout' for a job given up on here).
--- outcome: 'ok'|'nothing'|'no_daemon'|'cancelled'|'timeout'|'transport'|'contract'.
function M.run_jobs(spec)
  local settings = spec.settings
  -- the daemon fails a job at timeout_s itself; past this, it is not answering: cancel
  local deadline_s = settings.timeout_s + math.max(2, math.min(15, settings.timeout_s))
  local transport, err = M.open_transport(settings, deadline_s)
  if not transport then
    reaper.ShowMessageBox(err, spec.title, 0)
    return
  end
  local jobs
  local function register(requests)
    spec.requests = requests or {}
    jobs = osc.jobs(spec.requests, 'queued')
  end
  if not spec.prepare then register(spec.requests) end
  local ping_id = osc.new_client_job('ping')
  local phase, phase_start = 'ping', now()
  local progress = M.progress_window(spec.title)
  local pong
  local finished = false

  local function finish(outcome, detail)
    if finished then return end
    finished = true
    progress:close()
    transport:close()
    spec.finish(spec.requests or {}, outcome, detail or pong)
  end

  -- gives up on every unfinished job: state and code `code` ('cancelled' | 'timeout')
  local function cancel_all(code, message)
    local packets = {}
    for _, r in ipairs(jobs:pending()) do
      packets[#packets + 1] = osc.request('cancel', { client_job = r.client_job })
      r.state, r.code, r.message = code, code, message
    end
    if packets[1] then transport:send(packets, 2) end
  end

  -- stopped by the user mid-job: the daemon cancels what is left, helpers are told to stop,
  -- and nothing is written back (no stem lands in a project nobody is watching)
  M.on_stop(function() return finished end, function()
    finished = true
    if jobs then cancel_all('cancelled', 'the script was stopped') end
    transport:close()
  end)

  local ok_send, send_err = transport:send({ osc.request('ping', { client_job = ping_id }) },
    settings.ping_timeout_s + 1)
  if not ok_send then
    finish('transport', send_err)
    return
  end

  local function cycle()
    if finished then return end
    local refused
    for _, msg in ipairs(transport:poll()) do
      pong = pong or osc.pong(msg, ping_id)
      refused = refused or osc.refused(msg, ping_id)
      if jobs then jobs:handle(msg) end
    end
    local elapsed = now() - phase_start
    if phase == 'ping' then
      if refused and not pong then
        finish('contract', refused)
        return
      elseif pong then
        if pong.contract ~= osc.CONTRACT then
          finish('contract', 'the daemon speaks ' .. tostring(pong.contract) .. ', this script ' ..
            osc.CONTRACT .. '; update one of them')
          return
        end
        if spec.prepare then
          local requests, skipped = spec.prepare()
          register(requests)
          if not spec.requests[1] then finish('nothing', skipped) return end
        end
        if not spec.requests[1] then finish('ok') return end
        local packets = {}
        for _, r in ipairs(spec.requests) do packets[#packets + 1] = r.packet end
        local ok, why = transport:send(packets, deadline_s)
        if not ok then finish('transport', why) return end
        phase, phase_start = 'wait', now()
      elseif elapsed > settings.ping_timeout_s then
        finish('no_daemon', M.daemon_hint(settings))
        return
      elseif not progress:draw(0, 'contacting the daemon...') then
        finish('cancelled') -- nothing was sent yet
        return
      end
    elseif phase == 'wait' then
      if not jobs:pending()[1] then finish('ok') return end
      if elapsed > deadline_s then
        cancel_all('timeout', string.format('no answer within %.0f s; the job was cancelled', deadline_s))
        finish('timeout')
        return
      end
      if not progress:draw(jobs:progress()) then
        cancel_all('cancelled', 'cancelled by you')
        finish('cancelled')
        return
      end
    end
    reaper.defer(cycle)
  end
  reaper.defer(cycle)
end

--- The shape every item action shares: settings, the daemon's answer first, then `make`
--- builds the requests (it may render takes or split nothing yet), then `done` gets the
--- outcome. Transport failures and "nothing to send" are reported here, once.
--- spec: {title, make = function(settings) return requests, skipped end,
---        nothing = 'Nothing to send' (the message when no request was made; the skipped
---        reasons follow, or `nothing_why`), done = function(requests, outcome, detail,
---        skipped) end, skipped_to_console = false, settings = optional}
function M.run_action(spec)
  local settings = spec.settings or M.get_settings()
  local skipped = {}
  M.run_jobs({
    title = spec.title,
    settings = settings,
    prepare = function() -- after the daemon answered
      local requests
      requests, skipped = spec.make(settings)
      return requests, skipped
    end,
    finish = function(requests, outcome, detail)
      if outcome == 'no_daemon' or outcome == 'transport' or outcome == 'contract' then
        reaper.ShowMessageBox(tostring(detail), spec.title, 0)
        return
      end
      if outcome == 'nothing' then
        local why = skipped[1] and (':\n' .. table.concat(skipped, '\n')) or (spec.nothing_why or '')
        reaper.ShowMessageBox((spec.nothing or 'Nothing to send') .. why, spec.title, 0)
        return
      end
      spec.done(requests, outcome, detail, skipped)
      if spec.skipped_to_console and skipped[1] then
        reaper.ShowConsoleMsg(spec.title .. ', skipped:\n' .. table.concat(skipped, '\n') .. '\n')
      end
    end,
  })
end

------------------------------------------------------------------------------------------
-- selected items -> requests, and write-back
------------------------------------------------------------------------------------------

local function take_name(take)
  local _, name = reaper.GetSetMediaItemTakeInfo_String(take, 'P_NAME', '', false)
  return name
end

--- Why this take cannot be sent as its file (then REAPER renders it first), or nil.
function M.render_reason(take)
  if reaper.TakeIsMIDI(take) then return 'midi' end
  local rate = reaper.GetMediaItemTakeInfo_Value(take, 'D_PLAYRATE')
  if math.abs(rate - 1) > 1e-12 then return 'playrate' end
  if reaper.GetMediaItemTakeInfo_Value(take, 'D_PITCH') ~= 0 then return 'pitch' end
  if reaper.TakeFX_GetCount(take) > 0 then return 'take FX' end
  if reaper.GetTakeNumStretchMarkers(take) > 0 then return 'stretch markers' end
  local src = reaper.GetMediaItemTake_Source(take)
  if reaper.GetMediaSourceParent(src) then return 'section or reversed source' end
  local file = reaper.GetMediaSourceFileName(src, '')
  local ext = (file:match('%.([%w]+)$') or ''):lower()
  if file == '' or not READABLE[ext] then return 'not a file the daemon reads' end
  return nil
end

local function take_index(item, take)
  for k = 0, reaper.GetMediaItemNumTakes(item) - 1 do
    if reaper.GetMediaItemTake(item, k) == take then return k end
  end
  return nil
end

--- Runs `render` (40209 on the selected MIDI items) with the FX after each track's
--- instrument bypassed, then enables them again: 40209 renders through the track's FX, and
--- the new audio take plays through them again, so only what makes the MIDI sound (MIDI FX,
--- the instrument, take FX) goes into the render. No instrument on the track (a take-FX synth):
--- every track FX is bypassed.
local function render_midi(entries, render)
  local bypassed, seen = {}, {}
  for _, e in ipairs(entries) do
    local track = reaper.GetMediaItem_Track(e.item)
    if track and not seen[track] then
      seen[track] = true
      for fx = reaper.TrackFX_GetInstrument(track) + 1, reaper.TrackFX_GetCount(track) - 1 do
        if reaper.TrackFX_GetEnabled(track, fx) then
          reaper.TrackFX_SetEnabled(track, fx, false)
          bypassed[#bypassed + 1] = { track, fx }
        end
      end
    end
  end
  render()
  for _, b in ipairs(bypassed) do reaper.TrackFX_SetEnabled(b[1], b[2], true) end
end

--- Renders (once, one undo point) the entries whose take's sound is not its file, and
--- points each entry at the take to send.
local function render_where_needed(entries)
  local to_render = {}
  for _, e in ipairs(entries) do
    e.render = M.render_reason(e.take)
    if e.render then to_render[#to_render + 1] = e end
  end
  if not to_render[1] then return end
  -- render only these items: select them alone, run REAPER's action, restore the selection
  local was_selected = {}
  for _, e in ipairs(entries) do
    was_selected[e.item] = reaper.IsMediaItemSelected(e.item)
  end
  reaper.Undo_BeginBlock2(M.proj)
  reaper.PreventUIRefresh(1)
  for _, e in ipairs(entries) do reaper.SetMediaItemSelected(e.item, false) end
  for _, pass in ipairs({ { midi = false, cmd = M.CMD_RENDER_TO_NEW_TAKE },
                          { midi = true, cmd = M.CMD_APPLY_FX_TO_ITEMS } }) do
    local chosen = {}
    for _, e in ipairs(to_render) do
      local is_midi = e.render == 'midi'
      reaper.SetMediaItemSelected(e.item, is_midi == pass.midi)
      if is_midi == pass.midi then chosen[#chosen + 1] = e end
    end
    local function render() reaper.Main_OnCommandEx(pass.cmd, 0, M.proj) end
    if chosen[1] and pass.midi then render_midi(chosen, render) elseif chosen[1] then render() end
  end
  for _, e in ipairs(to_render) do
    e.rendered_from = e.name
    e.take = reaper.GetActiveTake(e.item)
    e.name = take_name(e.take)
  end
  for _, e in ipairs(entries) do reaper.SetMediaItemSelected(e.item, was_selected[e.item]) end
  reaper.PreventUIRefresh(-1)
  reaper.Undo_EndBlock2(M.proj, 'maedaw: render ' .. #to_render .. ' item(s) to send', -1)
end

--- True when `item` loops its source and plays past the source's end (`played_to` source
--- seconds), so its playback wraps to the source's start.
function M.loops_past_end(item, played_to, src_len)
  return reaper.GetMediaItemInfo_Value(item, 'B_LOOPSRC') == 1 and src_len > 0
    and played_to > src_len + 1e-9
end

--- Entries -> requests. An entry is {item, take, name[, from, to]}: from/to are seconds of
--- item time (default: the whole item); the request is the source span they play.
local function build_requests(settings, label, entries, skipped, op)
  render_where_needed(entries)
  local out_dir = M.output_folder(settings)
  local requests = {}
  for _, e in ipairs(entries) do
    if e.render and M.render_reason(e.take) then
      skipped[#skipped + 1] = string.format('"%s": REAPER could not render it (%s)', e.name, e.render)
    else
      local src = reaper.GetMediaItemTake_Source(e.take)
      local file = reaper.GetMediaSourceFileName(src, '')
      if not M.is_absolute(file) then file = M.join(M.project_folder(), file) end
      local offs = reaper.GetMediaItemTakeInfo_Value(e.take, 'D_STARTOFFS')
      local rate = reaper.GetMediaItemTakeInfo_Value(e.take, 'D_PLAYRATE')
      local length = reaper.GetMediaItemInfo_Value(e.item, 'D_LENGTH')
      local from, to = e.from or 0, e.to or length
      local src_len = reaper.GetMediaSourceLength(src)
      local start = math.max(0, offs + from * rate)
      local stop = math.min(src_len, offs + to * rate)
      if M.loops_past_end(e.item, offs + to * rate, src_len) then
        -- later loop passes start again at the file's start: the stem must be the whole file,
        -- or the new take (same item, same loop) would wrap at the stem's length instead
        start, stop = 0, src_len
      end
      if stop <= start then
        skipped[#skipped + 1] = string.format('"%s": the item plays none of its file there', e.name)
      else
        local client_job = osc.new_client_job(op and 'rst' or 'rpr')
        requests[#requests + 1] = {
          client_job = client_job, item = e.item, take = e.take, name = e.name,
          take_index = take_index(e.item, e.take), from = e.from, to = e.to,
          rendered_from = e.rendered_from, source = file, start = start, stop = stop,
          packet = osc.request(op and 'restore' or 'repair', {
            client_job = client_job, op = op, source = file, start = start, ['end'] = stop,
            out_dir = out_dir,
            options = {
              format = settings.format, timeout_s = settings.timeout_s, label = label,
              -- repair only: restore operations take their settings in params
              sensitivity = (not op) and settings.sensitivity or nil,
            },
          }),
        }
      end
    end
  end
  return requests
end

--- {item, take, name} for each selected item, in selection order (take nil: none).
local function selected_item_entries()
  local entries = {}
  for i = 0, reaper.CountSelectedMediaItems(M.proj) - 1 do
    local item = reaper.GetSelectedMediaItem(M.proj, i)
    local take = reaper.GetActiveTake(item)
    entries[#entries + 1] = { item = item, take = take, name = take and take_name(take) }
  end
  return entries
end

--- One repair request (or restore request, with `op`) per selected item, its whole
--- length. Items whose sound is not their file are rendered by REAPER first.
--- Returns requests, skipped (list of strings).
function M.repair_requests(settings, label, op)
  local entries, skipped = {}, {}
  for n, e in ipairs(selected_item_entries()) do
    if e.take then
      entries[#entries + 1] = e
    else
      skipped[#skipped + 1] = string.format('item %d: no take', n)
    end
  end
  return build_requests(settings, label, entries, skipped, op), skipped
end

--- The span of its file an item's active take plays, for requests that describe material
--- (tag, similar): takes with playrate, pitch or FX are described from their file (nothing
--- is rendered); MIDI and section/reversed sources cannot be. `from`/`to` are seconds of
--- item time (default: the whole item). Returns file, start, stop or nil, reason.
function M.material_span(item, take, from, to)
  local reason = take and M.render_reason(take)
  if not take then return nil, 'no take' end
  if reason == 'midi' or (reason and reason:find('section')) then return nil, reason end
  local src = reaper.GetMediaItemTake_Source(take)
  local file = reaper.GetMediaSourceFileName(src, '')
  if not M.is_absolute(file) then file = M.join(M.project_folder(), file) end
  local offs = reaper.GetMediaItemTakeInfo_Value(take, 'D_STARTOFFS')
  local rate = reaper.GetMediaItemTakeInfo_Value(take, 'D_PLAYRATE')
  local length = reaper.GetMediaItemInfo_Value(item, 'D_LENGTH')
  local start = math.max(0, offs + (from or 0) * rate)
  local stop = math.min(reaper.GetMediaSourceLength(src), offs + (to or length) * rate)
  if stop <= start then return nil, 'the item plays none of its file' end
  return file, start, stop
end

--- {item, take, name, from, to} for the part of each item on `tracks` inside [t0, t1]
--- (from/to in item time); items without a take are left out.
local function parts_in(tracks, t0, t1)
  local entries = {}
  for _, track in ipairs(tracks) do
    for j = 0, reaper.CountTrackMediaItems(track) - 1 do
      local item = reaper.GetTrackMediaItem(track, j)
      local pos = reaper.GetMediaItemInfo_Value(item, 'D_POSITION')
      local len = reaper.GetMediaItemInfo_Value(item, 'D_LENGTH')
      local a, b = math.max(t0, pos), math.min(t1, pos + len)
      local take = reaper.GetActiveTake(item)
      if b > a and take then
        entries[#entries + 1] = { item = item, take = take, name = take_name(take),
                                  from = a - pos, to = b - pos }
      end
    end
  end
  return entries
end

local function selected_tracks()
  local tracks = {}
  for i = 0, reaper.CountSelectedTracks(M.proj) - 1 do tracks[#tracks + 1] = reaper.GetSelectedTrack(M.proj, i) end
  return tracks
end

--- One request of the contract's `kind` per entry, for the span of its file it plays (see
--- material_span), with the request's other `fields`; client jobs are named `id_kind`-...
--- An entry that cannot be sent is listed in skipped with `skip_note` appended (MIDI
--- silently when `quiet_midi`). Returns requests, skipped.
local function material_requests(entries, kind, id_kind, fields, skip_note, quiet_midi)
  local requests, skipped = {}, {}
  for n, e in ipairs(entries) do
    local file, start, stop = M.material_span(e.item, e.take, e.from, e.to)
    if not e.take then
      skipped[#skipped + 1] = string.format('item %d: no take', n)
    elseif not file then
      if not (quiet_midi and start == 'midi') then
        skipped[#skipped + 1] = string.format('"%s": %s%s', e.name, start, skip_note)
      end
    else
      local client_job = osc.new_client_job(id_kind)
      fields.client_job, fields.source, fields.start, fields['end'] = client_job, file, start, stop
      requests[#requests + 1] = {
        client_job = client_job, item = e.item, take = e.take, name = e.name,
        source = file, start = start, stop = stop, packet = osc.request(kind, fields),
      }
    end
  end
  return requests, skipped
end

local function tag_fields(settings, top_k)
  return { options = { timeout_s = settings.timeout_s, top_k = top_k } }
end

--- One /maedaw/tag request per selected item.
function M.tag_requests(settings, top_k)
  return material_requests(selected_item_entries(), 'tag', 'tag', tag_fields(settings, top_k),
    ', not tagged')
end

--- One /maedaw/teach request per selected item: its material as an example of `name`.
function M.teach_requests(settings, name)
  return material_requests(selected_item_entries(), 'teach', 'tch',
    { name = name, options = { timeout_s = settings.timeout_s } }, '')
end

--- " Cancelled." / " Timed out." for those outcomes, else "".
function M.outcome_note(outcome)
  local note = ({ cancelled = 'Cancelled.', timeout = 'Timed out.' })[outcome]
  return note and (' ' .. note) or ''
end

--- The labels worth naming something after: those at or above `confident`, else the best.
function M.confident_labels(tags, confident)
  local chosen = {}
  for _, t in ipairs(tags) do
    if t.score >= confident then chosen[#chosen + 1] = t.label end
  end
  if not chosen[1] and tags[1] then chosen[1] = tags[1].label end
  return chosen
end

--- Several parts' tags as one list: each label at its best score, best first (a tag
--- applies to a stretch of the session where it is heard anywhere in it).
function M.merge_tags(lists)
  local best, order = {}, {}
  for _, list in ipairs(lists) do
    for _, t in ipairs(list) do
      if not best[t.label] then order[#order + 1] = t.label end
      best[t.label] = math.max(best[t.label] or -1, t.score)
    end
  end
  local merged = {}
  for _, label in ipairs(order) do merged[#merged + 1] = { label = label, score = best[label] } end
  table.sort(merged, function(a, b) return a.score > b.score end)
  return merged
end

--- One /maedaw/tag request per item part inside [t0, t1] on the selected tracks (every
--- track when none is selected). Returns requests, skipped.
function M.time_selection_tag_requests(settings, top_k, t0, t1)
  local tracks = selected_tracks()
  if not tracks[1] then
    for i = 0, reaper.CountTracks(M.proj) - 1 do tracks[#tracks + 1] = reaper.GetTrack(M.proj, i) end
  end
  return material_requests(parts_in(tracks, t0, t1), 'tag', 'tag', tag_fields(settings, top_k),
    '', true)
end

--- A take name as a tag name: without a file extension or an earlier maedaw suffix.
function M.tag_name_of(name)
  local bare = name:gsub('%s*%[[^%]]*%]$', ''):gsub('%.%w%w?%w?%w?$', '')
  return (bare:match('^%s*(.-)%s*$'))
end

M.MAX_CANDIDATES_BYTES = 60000 -- the contract's limit for the candidates JSON

--- One /maedaw/similar request: the first selected item's material against every other
--- audio item of the project (as many as fit the contract's limit; the rest are counted).
--- Returns the request (or nil), skipped (list of strings), left_out (count).
function M.similar_request(settings, top_k)
  local query = reaper.GetSelectedMediaItem(M.proj, 0)
  local qtake = query and reaper.GetActiveTake(query)
  local qfile, qstart, qstop = M.material_span(query, qtake)
  if not qfile then
    return nil, { string.format('the selected item cannot be compared: %s', qstart) }, 0
  end
  local parts, by_id, skipped, size, left_out = {}, {}, {}, 2, 0
  for i = 0, reaper.CountMediaItems(M.proj) - 1 do
    local item = reaper.GetMediaItem(M.proj, i)
    local take = reaper.GetActiveTake(item)
    if item ~= query then
      local file, start, stop = M.material_span(item, take)
      if file then
        local id = 'i' .. i
        local part = string.format('{"id":"%s","source":%s,"start":%.6f,"end":%.6f}',
          id, osc.json_string(file), start, stop)
        if size + #part + 1 > M.MAX_CANDIDATES_BYTES then
          left_out = left_out + 1
        else
          parts[#parts + 1], size = part, size + #part + 1
          by_id[id] = { item = item, name = take_name(take) }
        end
      elseif take and start ~= 'midi' then -- MIDI is not audio: not a candidate, no remark
        skipped[#skipped + 1] = string.format('"%s": %s', take_name(take), start)
      end
    end
  end
  if not parts[1] then return nil, skipped, left_out end
  local client_job = osc.new_client_job('sim')
  return {
    client_job = client_job, item = query, take = qtake, name = take_name(qtake),
    source = qfile, start = qstart, stop = qstop, candidates = by_id,
    packet = osc.request('similar', {
      client_job = client_job, source = qfile, start = qstart, ['end'] = qstop,
      candidates = '[' .. table.concat(parts, ',') .. ']',
      options = { timeout_s = settings.timeout_s, top_k = top_k },
    }),
  }, skipped, left_out
end

--- The time selection, or nil when there is none.
function M.time_selection()
  local t0, t1 = reaper.GetSet_LoopTimeRange2(M.proj, false, false, 0, 0, false)
  if t1 > t0 then return t0, t1 end
  return nil
end

--- The time selection, or nil after telling the user to make one.
function M.need_time_selection(title)
  local t0, t1 = M.time_selection()
  if not t0 then reaper.ShowMessageBox('Make a time selection first.', title, 0) end
  return t0, t1
end

--- True when items are selected; else tells the user (`text`, or the usual sentence).
function M.need_selected_items(title, text)
  if reaper.CountSelectedMediaItems(M.proj) > 0 then return true end
  reaper.ShowMessageBox(text or 'Select one or more items first.', title, 0)
  return false
end

--- One request per item on a selected track that overlaps the time selection, for the part
--- of the item inside it. Returns requests, skipped.
function M.time_selection_requests(settings, label, t0, t1)
  local skipped = {}
  return build_requests(settings, label, parts_in(selected_tracks(), t0, t1), skipped), skipped
end

--- For a request on part of an item (from/to), splits the item so that part is an item of
--- its own (REAPER's SplitMediaItem: the original keeps the left part, the right part is
--- returned), and points the request at that item and its copy of the sent take.
function M.isolate_part(r)
  if not r.from then return true end
  local pos = reaper.GetMediaItemInfo_Value(r.item, 'D_POSITION')
  local len = reaper.GetMediaItemInfo_Value(r.item, 'D_LENGTH')
  local eps = 1e-9
  local item = r.item
  if r.to < len - eps then reaper.SplitMediaItem(item, pos + r.to) end
  if r.from > eps then
    item = reaper.SplitMediaItem(item, pos + r.from)
    if not item then return nil, 'REAPER could not split the item' end
  end
  r.item = item
  -- the part's copy of the sent take: its offset is now the request's start (REAPER moves
  -- the offset by the cut's distance x playrate), so the stem lands at offset ~0
  r.take = reaper.GetMediaItemTake(item, r.take_index)
  return true
end

--- Adds the stem as a new active take on the request's item, aligned sample-exactly with
--- the take that was sent. Returns the new take, or nil, why.
function M.add_stem_take(r, what)
  if not M.project_open() then return nil, 'its project tab was closed' end
  if not reaper.ValidatePtr2(M.proj, r.item, 'MediaItem*') then return nil, 'the item was deleted' end
  if not reaper.ValidatePtr2(M.proj, r.take, 'MediaItem_Take*') then return nil, 'the take was deleted' end
  local src = reaper.PCM_Source_CreateFromFile(r.stem)
  if not src then return nil, 'REAPER could not open ' .. r.stem end
  local take = reaper.AddTakeToMediaItem(r.item)
  reaper.SetMediaItemTake_Source(take, src)
  -- the stem starts at source second r.start; read the sent take's offset now, so a trim made
  -- while the job ran still lines up
  local offs = reaper.GetMediaItemTakeInfo_Value(r.take, 'D_STARTOFFS')
  reaper.SetMediaItemTakeInfo_Value(take, 'D_STARTOFFS', offs - r.start)
  for _, key in ipairs({ 'D_PLAYRATE', 'D_VOL', 'D_PAN', 'I_CHANMODE' }) do
    reaper.SetMediaItemTakeInfo_Value(take, key, reaper.GetMediaItemTakeInfo_Value(r.take, key))
  end
  reaper.GetSetMediaItemTakeInfo_String(take, 'P_NAME', r.name .. ' [maedaw ' .. what .. ']', true)
  reaper.SetActiveTake(take)
  return take
end

--- Take markers on the stem's take, one per span of the repair report the done summary
--- carries: green where it was repaired, amber where it was left alone (the label says why).
--- Positions are seconds into the stem, which is the take's source. Returns the count.
function M.add_marks(take, r)
  local marks = osc.parse_marks(r.summary)
  local repaired = reaper.ColorToNative(64, 192, 96) | 0x1000000
  local left = reaper.ColorToNative(232, 160, 32) | 0x1000000
  for _, m in ipairs(marks) do
    local color = m.label:find(': left alone', 1, true) and left or repaired
    reaper.SetTakeMarker(take, -1, 'maedaw ' .. m.label, m.at, color)
  end
  return #marks
end

function M.summary_text(r)
  local repaired = r.summary and osc.json_field(r.summary, 'repaired')
  local left = r.summary and osc.json_field(r.summary, 'left_alone')
  if not repaired then return 'repaired' end
  local text = string.format('%d fixed', repaired)
  if left and left > 0 then text = text .. string.format(', %d left', left) end
  return text
end

--- The end of an action's run_jobs: writes the finished requests back and reports.
--- no_daemon/transport/contract: shows `detail` and changes nothing. Otherwise, in one undo
--- block "<opts.undo> (N item(s))", each done request's stem becomes a new active take
--- (add_stem_take), then missing peaks are built; then one message: the headline
--- "A of B <noun>(s) <verb> as new takes." (+ opts.unsupported when a request was answered
--- `unsupported`, + " Cancelled." / " Timed out."), a line per request added or not, and
--- the errors.
---   opts = { title = 'maedaw: ...',                   -- message box title
---            label = function(r) return 'repair: ...' end, -- take label "[maedaw <label>]"
---            undo = 'maedaw: ...',                    -- undo text, " (N item(s))" appended
---            noun = 'item',                           -- or 'item part'
---            verb = 'repaired',                       -- or 'restored (declip)'
---            prepare = function(r) return ok, why end, -- optional, before the take is added
---            unsupported = '\n...',                   -- optional, appended to the headline
---            marks = true }                            -- optional: take markers (add_marks)
--- Returns the number of takes added.
function M.write_back(requests, outcome, detail, opts)
  if outcome == 'no_daemon' or outcome == 'transport' or outcome == 'contract' then
    reaper.ShowMessageBox(tostring(detail), opts.title, 0)
    return 0
  end
  local lines, added, done, unsupported = {}, 0, {}, false
  for _, r in ipairs(requests) do
    if r.state == 'done' then done[#done + 1] = r end
    if r.code == 'unsupported' then unsupported = true end
  end
  if done[1] and not M.project_open() then
    for _, r in ipairs(done) do
      lines[#lines + 1] = string.format('"%s": not added (its project tab was closed); the stem is %s',
        r.name, r.stem)
    end
  elseif done[1] then
    reaper.Undo_BeginBlock2(M.proj)
    reaper.PreventUIRefresh(1)
    for _, r in ipairs(done) do
      local what = opts.label(r)
      local ok, why, take = true, nil, nil
      if opts.prepare then ok, why = opts.prepare(r) end
      if ok then take, why = M.add_stem_take(r, what) end
      if take then
        added = added + 1
        local marked = opts.marks and M.add_marks(take, r) or 0
        local note = marked > 0 and string.format(' (%d take marker(s))', marked) or ''
        lines[#lines + 1] = string.format('"%s": %s%s', r.name, what, note)
      else
        lines[#lines + 1] = string.format('"%s": not added (%s); the stem is %s', r.name, why, r.stem)
      end
    end
    reaper.Main_OnCommandEx(M.CMD_BUILD_MISSING_PEAKS, 0, M.proj)
    reaper.PreventUIRefresh(-1)
    reaper.UpdateArrange()
    reaper.Undo_EndBlock2(M.proj, string.format('%s (%d item(s))', opts.undo, added), -1)
  end
  for _, r in ipairs(requests) do
    if osc.FAILED[r.state] then
      lines[#lines + 1] = string.format('"%s": %s: %s', r.name, tostring(r.code), tostring(r.message))
    end
  end
  local head = string.format('%d of %d %s(s) %s as new takes.', added, #requests,
    opts.noun or 'item', opts.verb or 'repaired')
  if unsupported and opts.unsupported then head = head .. opts.unsupported end
  head = head .. M.outcome_note(outcome)
  reaper.ShowMessageBox(head .. '\n\n' .. table.concat(lines, '\n'), opts.title, 0)
  return added
end

return M
