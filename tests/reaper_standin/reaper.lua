-- A stand-in for the part of REAPER's ReaScript API the maedaw scripts call, written to
-- REAPER's documented behaviour (https://www.reaper.fm/sdk/reascript/reascripthelp.html),
-- so the scripts run under plain Lua 5.4 in the tests. It keeps a small project (tracks,
-- items, takes, sources), ExtState, undo points and the dialogs shown, and checks the
-- rules a real script must keep: edits only inside an undo block, no undo block or
-- PreventUIRefresh left open at the end of a defer cycle, no blocking dialog mid-job.
--
-- Usage (tests/reaper_standin/run.lua): local R = dofile('reaper.lua'); R.load(spec)

local R = {}

local state = {
  items = {}, sources = {}, extstate = {}, persisted = {}, undo_points = {},
  violations = {}, messages = {}, console = {}, commands = {}, exec = {}, deferred = {},
  atexit = {}, undo_depth = 0, undo_edits = 0, refresh_depth = 0, gfx_open = false,
  cycle = 0, gfx_cycles = 0, user_inputs = nil, dialogs = {},
}
R.state = state

local function violation(text)
  state.violations[#state.violations + 1] = text
end

local function edit(what)
  if state.undo_depth > 0 then
    state.undo_edits = state.undo_edits + 1
  else
    violation('edit outside an undo block: ' .. what)
  end
end

------------------------------------------------------------------------------------------
-- sources: WAV headers are read for the length (as REAPER does when it opens a file)
------------------------------------------------------------------------------------------

local function wav_info(path)
  local f = io.open(path, 'rb')
  if not f then return nil end
  local data = f:read(1 << 16)
  f:close()
  if not data or data:sub(1, 4) ~= 'RIFF' or data:sub(9, 12) ~= 'WAVE' then return nil end
  local pos, info = 13, {}
  local file_size = 0
  do
    local g = io.open(path, 'rb')
    file_size = g:seek('end')
    g:close()
  end
  while pos + 8 <= #data do
    local id, size = data:sub(pos, pos + 3), string.unpack('<I4', data, pos + 4)
    if id == 'fmt ' then
      info.channels = string.unpack('<I2', data, pos + 10)
      info.rate = string.unpack('<I4', data, pos + 12)
      info.block_align = string.unpack('<I2', data, pos + 20)
    elseif id == 'data' then
      local bytes = math.min(size, file_size - (pos + 7))
      info.frames = bytes // info.block_align
      break
    end
    pos = pos + 8 + size + (size % 2)
  end
  if not info.frames then return nil end
  info.length = info.frames / info.rate
  return info
end
R.wav_info = wav_info

local function new_source(spec)
  local src = { kind = 'source', file = spec.file or '', type = spec.type or 'WAVE',
                parent = spec.parent, length = spec.length }
  if src.type == 'WAVE' and src.file ~= '' then
    local info = wav_info(src.file)
    if info then
      src.length, src.channels, src.rate = info.length, info.channels, info.rate
    end
    -- REAPER keeps an offline source (length 0) for a missing file
    src.length = src.length or 0
  end
  state.sources[#state.sources + 1] = src
  return src
end

local TAKE_DEFAULTS = { D_STARTOFFS = 0, D_PLAYRATE = 1, D_PITCH = 0, D_VOL = 1, D_PAN = 0,
                        I_CHANMODE = 0 }

local function new_take(item, spec)
  local take = { kind = 'take', item = item, name = spec.name or '', fx = spec.fx or 0,
                 midi = spec.midi or false, stretch_markers = spec.stretch_markers, params = {} }
  for k, v in pairs(TAKE_DEFAULTS) do take.params[k] = v end
  for k, v in pairs(spec.params or {}) do take.params[k] = v end
  if spec.source then take.source = new_source(spec.source) end
  return take
end

--- spec: { project_path, resource_path, extstate = {key=value}, items = { {position, length,
--- selected, track, takes = { {name, source = {file, type, parent}, params = {}, fx, midi} },
--- active } }, render_cmd, gfx_close_after, user_inputs = {ok, csv} }
function R.load(spec)
  state.spec = spec
  for key, value in pairs(spec.extstate or {}) do state.extstate['maedaw\0' .. key] = value end
  for n, item_spec in ipairs(spec.items or {}) do
    local item = { kind = 'item', index = n, track = item_spec.track or 1,
                   position = item_spec.position or 0, length = item_spec.length,
                   selected = item_spec.selected ~= false, takes = {}, active = 1,
                   notes = item_spec.notes or '' }
    for _, take_spec in ipairs(item_spec.takes or {}) do
      item.takes[#item.takes + 1] = new_take(item, take_spec)
    end
    item.active = item_spec.active or 1
    state.items[#state.items + 1] = item
  end
  state.user_inputs = spec.user_inputs
  state.tracks = {}
  local ntracks = 0
  for _, item in ipairs(state.items) do ntracks = math.max(ntracks, item.track) end
  for n = 1, math.max(ntracks, #(spec.tracks or {})) do
    local t = (spec.tracks or {})[n] or {}
    state.tracks[n] = { kind = 'track', index = n, selected = t.selected or false }
  end
  state.time_selection = spec.time_selection or { 0, 0 }
  state.markers = {}
  for _, m in ipairs(spec.markers or {}) do
    state.markers[#state.markers + 1] = { isrgn = m.isrgn or false, pos = m.pos,
      rgnend = m.rgnend or m.pos, name = m.name or '', number = m.number, color = m.color or 0 }
  end
end

local function valid(ptr, kind)
  if type(ptr) ~= 'table' or ptr.kind ~= kind or ptr.deleted then
    error(string.format('invalid %s pointer passed to the API', kind), 3)
  end
end

------------------------------------------------------------------------------------------
-- the reaper table
------------------------------------------------------------------------------------------

local reaper = {}
R.reaper = reaper

local function project_items(only_selected)
  -- project order: by track, then position (as REAPER's item indexes)
  local list = {}
  for _, item in ipairs(state.items) do
    if (item.selected or not only_selected) and not item.deleted then list[#list + 1] = item end
  end
  table.sort(list, function(a, b)
    if a.track ~= b.track then return a.track < b.track end
    if a.position ~= b.position then return a.position < b.position end
    return a.index < b.index
  end)
  return list
end

local function selected_items() return project_items(true) end

function reaper.CountSelectedMediaItems(_proj) return #selected_items() end

-- CountMediaItems / GetMediaItem: every item of the project, same order as the selected ones
function reaper.CountMediaItems(_proj) return #project_items(false) end

function reaper.GetMediaItem(_proj, idx) return project_items(false)[idx + 1] end

function reaper.SelectAllMediaItems(_proj, selected)
  for _, item in ipairs(state.items) do item.selected = selected and true or false end
end

function reaper.GetSelectedMediaItem(_proj, idx) return selected_items()[idx + 1] end

function reaper.SetMediaItemSelected(item, selected)
  valid(item, 'item')
  item.selected = selected and true or false
end

function reaper.IsMediaItemSelected(item)
  valid(item, 'item')
  return item.selected
end

function reaper.GetMediaItemTake(item, idx)
  valid(item, 'item')
  return item.takes[idx + 1]
end

function reaper.CountSelectedTracks(_proj)
  local n = 0
  for _, t in ipairs(state.tracks) do if t.selected then n = n + 1 end end
  return n
end

function reaper.CountTracks(_proj) return #state.tracks end

function reaper.GetTrack(_proj, idx) return state.tracks[idx + 1] end

function reaper.GetSelectedTrack(_proj, idx)
  local n = 0
  for _, t in ipairs(state.tracks) do
    if t.selected then
      if n == idx then return t end
      n = n + 1
    end
  end
  return nil
end

local function track_items(track)
  local list = {}
  for _, item in ipairs(state.items) do
    if item.track == track.index and not item.deleted then list[#list + 1] = item end
  end
  table.sort(list, function(a, b) return a.position < b.position end)
  return list
end

function reaper.CountTrackMediaItems(track)
  valid(track, 'track')
  return #track_items(track)
end

function reaper.GetTrackMediaItem(track, idx)
  valid(track, 'track')
  return track_items(track)[idx + 1]
end

-- Markers and regions (documented API): markers and regions are numbered separately
-- ("markrgnindexnumber", the number shown in REAPER); EnumProjectMarkers3 walks both in
-- position order with a 0-based enumeration index and returns 0 past the end.
local function sorted_markers()
  local list = {}
  for _, m in ipairs(state.markers) do list[#list + 1] = m end
  table.sort(list, function(a, b)
    if a.pos ~= b.pos then return a.pos < b.pos end
    return (a.isrgn and 1 or 0) < (b.isrgn and 1 or 0)
  end)
  return list
end

-- AddProjectMarker2(proj, isrgn, pos, rgnend, name, wantidx, color) -> number, or -1
function reaper.AddProjectMarker2(_proj, isrgn, pos, rgnend, name, wantidx, color)
  edit('AddProjectMarker2')
  if isrgn and not (rgnend > pos) then return -1 end
  local number = wantidx
  local used = {}
  for _, m in ipairs(state.markers) do
    if m.isrgn == isrgn then used[m.number] = true end
  end
  if number == nil or number < 0 or used[number] then
    number = 1
    while used[number] do number = number + 1 end
  end
  state.markers[#state.markers + 1] = { isrgn = isrgn, pos = pos,
    rgnend = isrgn and rgnend or pos, name = name or '', number = number, color = color or 0 }
  return number
end

-- EnumProjectMarkers3(proj, idx) -> retval, isrgn, pos, rgnend, name, markrgnindexnumber, color
function reaper.EnumProjectMarkers3(_proj, idx)
  local m = sorted_markers()[idx + 1]
  if not m then return 0, false, 0, 0, '', 0, 0 end
  return idx + 1, m.isrgn, m.pos, m.rgnend, m.name, m.number, m.color
end

-- SetProjectMarker3(proj, markrgnindexnumber, isrgn, pos, rgnend, name, color) -> boolean;
-- an empty name leaves the name as it is (documented for SetProjectMarker)
function reaper.SetProjectMarker3(_proj, number, isrgn, pos, rgnend, name, color)
  edit('SetProjectMarker3')
  for _, m in ipairs(state.markers) do
    if m.number == number and m.isrgn == isrgn then
      m.pos, m.rgnend = pos, isrgn and rgnend or pos
      if name ~= '' then m.name = name end
      m.color = color or m.color
      return true
    end
  end
  return false
end

-- GetSet_LoopTimeRange(isSet, isLoop, start, end, allowautoseek) -> start, end
function reaper.GetSet_LoopTimeRange(is_set, _is_loop, t0, t1, _seek)
  if is_set then state.time_selection = { t0, t1 } end
  return state.time_selection[1], state.time_selection[2]
end

-- SplitMediaItem(item, position): the original item becomes the left-hand part and the
-- right-hand part is returned (nil if position is not inside the item). Every take is kept
-- in both parts; the right part's takes start later in their sources by the cut's distance
-- times the take's playrate.
function reaper.SplitMediaItem(item, position)
  valid(item, 'item')
  local cut = position - item.position
  if cut <= 0 or cut >= item.length then return nil end
  edit('SplitMediaItem')
  local right = { kind = 'item', index = #state.items + 1, track = item.track,
                  position = position, length = item.length - cut, selected = item.selected,
                  takes = {}, active = item.active }
  for n, take in ipairs(item.takes) do
    local copy = { kind = 'take', item = right, name = take.name, fx = take.fx, midi = take.midi,
                   source = take.source, params = {} }
    for k, v in pairs(take.params) do copy.params[k] = v end
    copy.params.D_STARTOFFS = take.params.D_STARTOFFS + cut * take.params.D_PLAYRATE
    right.takes[n] = copy
  end
  item.length = cut
  state.items[#state.items + 1] = right
  return right
end

function reaper.GetActiveTake(item)
  valid(item, 'item')
  return item.takes[item.active]
end

function reaper.GetMediaItemNumTakes(item)
  valid(item, 'item')
  return #item.takes
end

function reaper.GetMediaItemInfo_Value(item, parm)
  valid(item, 'item')
  if parm == 'D_POSITION' then return item.position end
  if parm == 'D_LENGTH' then return item.length end
  if parm == 'B_UISEL' then return item.selected and 1 or 0 end
  if parm == 'I_CURTAKE' then return item.active - 1 end
  return 0 -- documented: unknown parameters read as 0
end

function reaper.GetMediaItemTakeInfo_Value(take, parm)
  valid(take, 'take')
  return take.params[parm] or 0
end

function reaper.SetMediaItemTakeInfo_Value(take, parm, value)
  valid(take, 'take')
  if TAKE_DEFAULTS[parm] == nil then return false end
  edit('SetMediaItemTakeInfo_Value ' .. parm)
  if parm == 'D_PLAYRATE' and value <= 0 then error('playrate must be > 0') end
  take.params[parm] = value
  return true
end

function reaper.GetSetMediaItemTakeInfo_String(take, parm, value, set)
  valid(take, 'take')
  if parm ~= 'P_NAME' then return false, '' end
  if set then
    edit('P_NAME')
    take.name = value
  end
  return true, take.name
end

-- GetSetMediaItemInfo_String(item, parm, value, set): P_NOTES is the item's note text
function reaper.GetSetMediaItemInfo_String(item, parm, value, set)
  valid(item, 'item')
  if parm ~= 'P_NOTES' then return false, '' end
  if set then
    edit('P_NOTES')
    item.notes = value
  end
  return true, item.notes
end

function reaper.GetTakeName(take)
  valid(take, 'take')
  return take.name
end

function reaper.TakeIsMIDI(take)
  valid(take, 'take')
  return take.midi or (take.source and take.source.type == 'MIDI') or false
end

function reaper.TakeFX_GetCount(take)
  valid(take, 'take')
  return take.fx
end

function reaper.GetTakeNumStretchMarkers(take)
  valid(take, 'take')
  return take.stretch_markers or 0
end

function reaper.GetMediaItemTake_Source(take)
  valid(take, 'take')
  return take.source
end

function reaper.GetMediaItemTake_Item(take)
  valid(take, 'take')
  return take.item
end

function reaper.GetMediaSourceFileName(src, _buf)
  valid(src, 'source')
  if src.parent then return src.parent.file or '' end
  return src.file
end

function reaper.GetMediaSourceType(src, _buf)
  valid(src, 'source')
  return src.type
end

function reaper.GetMediaSourceParent(src)
  valid(src, 'source')
  return src.parent
end

function reaper.GetMediaSourceLength(src)
  valid(src, 'source')
  return src.length or 0, false -- lengthIsQN: false for audio
end

function reaper.GetMediaSourceNumChannels(src)
  valid(src, 'source')
  return src.channels or 0
end

function reaper.GetMediaSourceSampleRate(src)
  valid(src, 'source')
  return src.rate or 0
end

function reaper.PCM_Source_CreateFromFile(path)
  return new_source({ file = path, type = 'WAVE' })
end

function reaper.AddTakeToMediaItem(item)
  valid(item, 'item')
  edit('AddTakeToMediaItem')
  local take = new_take(item, { name = '' })
  item.takes[#item.takes + 1] = take
  return take
end

function reaper.SetMediaItemTake_Source(take, src)
  valid(take, 'take')
  valid(src, 'source')
  edit('SetMediaItemTake_Source')
  take.source = src
  return true
end

function reaper.SetActiveTake(take)
  valid(take, 'take')
  edit('SetActiveTake')
  for n, t in ipairs(take.item.takes) do
    if t == take then take.item.active = n end
  end
end

function reaper.ValidatePtr2(_proj, ptr, typename)
  local kinds = { ['MediaItem*'] = 'item', ['MediaItem_Take*'] = 'take', ['PCM_source*'] = 'source',
                  ['MediaTrack*'] = 'track' }
  return type(ptr) == 'table' and ptr.kind == kinds[typename] and not ptr.deleted
end

function reaper.ValidatePtr(ptr, typename) return reaper.ValidatePtr2(0, ptr, typename) end

-- Item: Render items to new take (41999) / Item: Apply track/take FX to items (40209): for each
-- selected item, REAPER renders what the item plays (take FX, playrate, pitch, section) to a
-- new file in the project's media folder, adds it as a new take (start offset 0, playrate 1)
-- and makes it the active take. The test supplies the renderer (render_cmd).
local render_count = 0
local function render_selected(cmd)
  local label = cmd == 41999 and 'Render items to new take' or 'Apply track/take FX to items'
  local outside = state.undo_depth == 0
  if outside then state.undo_depth = 1 end
  for _, item in ipairs(selected_items()) do
    local take = item.takes[item.active]
    if take and (cmd == 40209 or not reaper.TakeIsMIDI(take)) then
      render_count = render_count + 1
      local out = string.format('%s/render-%03d.wav', state.spec.project_path, render_count)
      local src = take.source
      local file = src.parent and src.parent.file or src.file
      local command = state.spec.render_cmd
        :gsub('{src}', file):gsub('{out}', out)
        :gsub('{start}', string.format('%.17g', take.params.D_STARTOFFS))
        :gsub('{len}', string.format('%.17g', item.length))
        :gsub('{rate}', string.format('%.17g', take.params.D_PLAYRATE))
      assert(os.execute(command), 'render failed: ' .. command)
      local new = new_take(item, { name = take.name .. ' render', source = { file = out } })
      edit(label)
      item.takes[#item.takes + 1] = new
      item.active = #item.takes
    end
  end
  if outside then
    state.undo_depth = 0
    state.undo_points[#state.undo_points + 1] = label
  end
end

function reaper.Main_OnCommand(cmd, _flag)
  state.commands[#state.commands + 1] = cmd
  if cmd == 41999 or cmd == 40209 then render_selected(cmd) end
  -- 40047 (build missing peaks) and others: recorded only
end

function reaper.Undo_BeginBlock()
  state.undo_depth = state.undo_depth + 1
  if state.undo_depth == 1 then state.undo_edits = 0 end
end

function reaper.Undo_BeginBlock2(_proj) reaper.Undo_BeginBlock() end

function reaper.Undo_EndBlock(desc, _flags)
  if state.undo_depth == 0 then violation('Undo_EndBlock without Undo_BeginBlock') return end
  state.undo_depth = state.undo_depth - 1
  if state.undo_depth == 0 then
    state.undo_points[#state.undo_points + 1] = desc
  end
end

function reaper.Undo_EndBlock2(_proj, desc, flags) reaper.Undo_EndBlock(desc, flags) end

function reaper.PreventUIRefresh(n) state.refresh_depth = state.refresh_depth + n end

function reaper.UpdateArrange() end

function reaper.UpdateTimeline() end

function reaper.GetExtState(section, key)
  return state.extstate[section .. '\0' .. key] or ''
end

function reaper.HasExtState(section, key)
  return state.extstate[section .. '\0' .. key] ~= nil
end

function reaper.SetExtState(section, key, value, persist)
  state.extstate[section .. '\0' .. key] = value
  state.persisted[section .. '\0' .. key] = persist and true or nil
end

function reaper.DeleteExtState(section, key, _persist)
  state.extstate[section .. '\0' .. key] = nil
end

function reaper.GetProjectPath() return state.spec.project_path end

function reaper.GetResourcePath() return state.spec.resource_path end

-- EnumProjects(-1): the current project and its .rpp path ("" while unsaved)
function reaper.EnumProjects(idx, _buf)
  if idx ~= -1 and idx ~= 0 then return nil, '' end
  return { kind = 'project' }, state.spec.project_file or ''
end

function reaper.RecursiveCreateDirectory(path, _ignored)
  os.execute('mkdir -p "' .. path .. '"')
  return 1
end

-- ExecProcess(cmd, timeoutmsec): -1 starts the process and returns at once.
function reaper.ExecProcess(cmd, timeout)
  state.exec[#state.exec + 1] = cmd
  if timeout == -1 or timeout == -2 then
    local ok = os.execute(cmd .. ' >>"' .. state.spec.project_path .. '/helper.log" 2>&1 &')
    if not ok then return nil end
    return '0\n'
  end
  local pipe = io.popen(cmd .. ' 2>&1')
  if not pipe then return nil end
  local output = pipe:read('a')
  local _, _, code = pipe:close()
  return tostring(code or 0) .. '\n' .. output
end

local function in_job_loop()
  return #state.deferred > 0 or state.running_deferred
end

function reaper.ShowMessageBox(msg, title, kind)
  -- modal: fine at the start or end of an action, wrong while a job loop is polling
  if state.gfx_open then violation('modal message box while the progress window is open') end
  state.messages[#state.messages + 1] = { title = title, text = msg, kind = kind }
  return 1 -- OK
end

reaper.MB = function(msg, title, kind) return reaper.ShowMessageBox(msg, title, kind) end

function reaper.ShowConsoleMsg(msg) state.console[#state.console + 1] = msg end

function reaper.GetUserInputs(title, n, captions, defaults)
  state.dialogs[#state.dialogs + 1] = { title = title, n = n, captions = captions,
                                        defaults = defaults }
  local answer = state.user_inputs or { ok = false, csv = defaults }
  return answer.ok, answer.csv or defaults -- no csv in the spec: the user accepts the defaults
end

function reaper.time_precise() return R.clock() end

function reaper.defer(fn)
  if type(fn) ~= 'function' then error('defer needs a function', 2) end
  state.deferred[#state.deferred + 1] = fn
end

function reaper.atexit(fn) state.atexit[#state.atexit + 1] = fn end

function reaper.get_action_context()
  return false, state.script or '', 0, 0, -1, -1, -1
end

------------------------------------------------------------------------------------------
-- gfx (the progress window): gfx.getchar() returns -1 once the window is closed
------------------------------------------------------------------------------------------

local gfx = { w = 0, h = 0, x = 0, y = 0 }
R.gfx = gfx

function gfx.init(_name, w, h)
  state.gfx_open, gfx.w, gfx.h = true, w, h
  state.gfx_inits = (state.gfx_inits or 0) + 1
  return 1
end

function gfx.quit() state.gfx_open = false end

function gfx.getchar()
  if not state.gfx_open then return -1 end
  state.gfx_cycles = state.gfx_cycles + 1
  local close_after = state.spec.gfx_close_after
  if close_after and state.gfx_cycles >= close_after then
    state.gfx_open = false
    state.gfx_closed_by_user = true
    return -1
  end
  return 0
end

function gfx.setfont() end
function gfx.set() end
function gfx.rect() end
function gfx.drawstr(text) state.last_progress = text end
function gfx.update() end

------------------------------------------------------------------------------------------
-- the defer loop, and the result for the test
------------------------------------------------------------------------------------------

--- Runs deferred functions cycle by cycle until none is left or max_s passes.
function R.run_deferred(max_s, sleep)
  local stop_at = R.clock() + max_s
  while #state.deferred > 0 do
    if R.clock() > stop_at then
      violation('the script was still deferring after ' .. max_s .. ' s')
      break
    end
    local batch = state.deferred
    state.deferred = {}
    state.cycle = state.cycle + 1
    state.running_deferred = true
    for _, fn in ipairs(batch) do fn() end
    state.running_deferred = false
    if state.undo_depth ~= 0 then violation('undo block left open across a defer cycle') end
    if state.refresh_depth ~= 0 then violation('PreventUIRefresh left unbalanced') end
    sleep(0.01)
  end
  for _, fn in ipairs(state.atexit) do fn() end
  local _ = in_job_loop
end

function R.snapshot()
  local items = {}
  for _, item in ipairs(state.items) do
    local takes = {}
    for n, take in ipairs(item.takes) do
      takes[n] = {
        name = take.name, fx = take.fx, params = take.params,
        file = take.source and (take.source.parent and take.source.parent.file or take.source.file) or '',
        source_length = take.source and take.source.length or 0,
        channels = take.source and take.source.channels or 0,
      }
    end
    items[#items + 1] = { position = item.position, length = item.length, selected = item.selected,
                          active = item.active, takes = takes, track = item.track,
                          notes = item.notes }
  end
  local ext = {}
  for key, value in pairs(state.extstate) do
    local section, name = key:match('^(.-)%z(.*)$')
    ext[section .. '/' .. name] = { value = value, persist = state.persisted[key] or false }
  end
  return {
    items = items, undo_points = state.undo_points, violations = state.violations,
    messages = state.messages, console = state.console, commands = state.commands,
    exec = state.exec, extstate = ext, cycles = state.cycle, dialogs = state.dialogs,
    gfx_inits = state.gfx_inits or 0, gfx_open = state.gfx_open,
    gfx_closed_by_user = state.gfx_closed_by_user or false, last_progress = state.last_progress,
    undo_depth = state.undo_depth, refresh_depth = state.refresh_depth,
    markers = sorted_markers(),
  }
end

return R
