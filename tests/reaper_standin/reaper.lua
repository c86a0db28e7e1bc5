-- A stand-in for the part of REAPER's ReaScript API the maedaw scripts call, written to
-- REAPER's documented behaviour (https://www.reaper.fm/sdk/reascript/reascripthelp.html),
-- so the scripts run under plain Lua 5.4 in the tests. It keeps a small project (tracks,
-- items, takes, sources), ExtState, undo points and the dialogs shown, and checks the
-- rules a real script must keep: edits only inside an undo block, no undo block or
-- PreventUIRefresh left open at the end of a defer cycle, no blocking dialog mid-job.
--
-- Usage (tests/reaper_standin/run.lua): local R = dofile('reaper.lua'); R.load(spec)

local R = {}

-- Project tabs: state.projects[1] is the project the spec describes, [2] an empty second tab;
-- state.current is the active tab (what `0` means in a proj argument). state.items etc. are
-- the first tab's tables (the tests look at those).
local state = {
  sources = {}, extstate = {}, persisted = {},
  violations = {}, messages = {}, console = {}, commands = {}, exec = {}, exec_timeouts = {},
  deferred = {}, atexit = {}, undo_depth = 0, undo_edits = 0, refresh_depth = 0,
  gfx_open = false, cycle = 0, gfx_cycles = 0, user_inputs = nil, dialogs = {},
  net = { udp_datagrams = 0, tcp_connections = 0 },
}
R.state = state

local function violation(text)
  state.violations[#state.violations + 1] = text
end

local function new_project(n, file)
  return { kind = 'project', number = n, items = {}, tracks = {}, markers = {},
           time_selection = { 0, 0 }, undo_points = {}, file = file or '' }
end

--- The project a `proj` argument names: 0 (or nil) is the active tab; a closed tab is an error.
local function P(proj)
  if proj == nil or proj == 0 then return state.current end
  if type(proj) ~= 'table' or proj.kind ~= 'project' or proj.closed then
    error('invalid ReaProject* passed to the API', 3)
  end
  return proj
end

-- An edit of `project` (default: the active tab) needs an open undo block for that project.
local function edit(what, project)
  project = project or state.current
  if state.undo_depth == 0 then
    violation('edit outside an undo block: ' .. what)
  elseif state.undo_project ~= project then
    violation('edit of another project tab than the open undo block: ' .. what)
  else
    state.undo_edits = state.undo_edits + 1
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

--- spec: { project_path, resource_path, project_file, extstate = {key=value}, items = {
--- {position, length, selected, track, loop, takes = { {name, source = {file, type, parent},
--- params = {}, fx, midi} }, active } }, tracks = { {selected, fx = { {name, instrument} }} },
--- markers, time_selection, render_cmd, gfx_close_after, user_inputs = {ok, csv},
--- switch_tab_at_cycle, stop_at_cycle, stop_when_drawn (a Lua pattern), add_marker_fails, hosts = {name = ip}, max_datagram }
function R.load(spec)
  state.spec = spec
  state.projects = { new_project(1, spec.project_file), new_project(2) }
  state.current = state.projects[1]
  local project = state.projects[1]
  state.items, state.undo_points = project.items, project.undo_points
  for key, value in pairs(spec.extstate or {}) do state.extstate['maedaw\0' .. key] = value end
  for n, item_spec in ipairs(spec.items or {}) do
    local item = { kind = 'item', project = project, index = n, track = item_spec.track or 1,
                   position = item_spec.position or 0, length = item_spec.length,
                   selected = item_spec.selected ~= false, takes = {}, active = 1,
                   notes = item_spec.notes or '', loop = item_spec.loop or false }
    for _, take_spec in ipairs(item_spec.takes or {}) do
      item.takes[#item.takes + 1] = new_take(item, take_spec)
    end
    item.active = item_spec.active or 1
    project.items[#project.items + 1] = item
  end
  state.user_inputs = spec.user_inputs
  local ntracks = 0
  for _, item in ipairs(project.items) do ntracks = math.max(ntracks, item.track) end
  for n = 1, math.max(ntracks, #(spec.tracks or {})) do
    local t = (spec.tracks or {})[n] or {}
    local fx = {}
    for k, f in ipairs(t.fx or {}) do
      fx[k] = { name = f.name, instrument = f.instrument or false, enabled = f.enabled ~= false }
    end
    project.tracks[n] = { kind = 'track', project = project, index = n,
                          selected = t.selected or false, fx = fx }
  end
  project.time_selection = spec.time_selection or { 0, 0 }
  for _, m in ipairs(spec.markers or {}) do
    project.markers[#project.markers + 1] = { isrgn = m.isrgn or false, pos = m.pos,
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

local function project_items(only_selected, proj)
  -- project order: by track, then position (as REAPER's item indexes)
  local list = {}
  for _, item in ipairs(P(proj).items) do
    if (item.selected or not only_selected) and not item.deleted then list[#list + 1] = item end
  end
  table.sort(list, function(a, b)
    if a.track ~= b.track then return a.track < b.track end
    if a.position ~= b.position then return a.position < b.position end
    return a.index < b.index
  end)
  return list
end

local function selected_items(proj) return project_items(true, proj) end

function reaper.CountSelectedMediaItems(proj) return #selected_items(proj) end

-- CountMediaItems / GetMediaItem: every item of the project, same order as the selected ones
function reaper.CountMediaItems(proj) return #project_items(false, proj) end

function reaper.GetMediaItem(proj, idx) return project_items(false, proj)[idx + 1] end

function reaper.SelectAllMediaItems(proj, selected)
  for _, item in ipairs(P(proj).items) do item.selected = selected and true or false end
end

function reaper.GetSelectedMediaItem(proj, idx) return selected_items(proj)[idx + 1] end

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

function reaper.CountSelectedTracks(proj)
  local n = 0
  for _, t in ipairs(P(proj).tracks) do if t.selected then n = n + 1 end end
  return n
end

function reaper.CountTracks(proj) return #P(proj).tracks end

function reaper.GetTrack(proj, idx) return P(proj).tracks[idx + 1] end

function reaper.GetSelectedTrack(proj, idx)
  local n = 0
  for _, t in ipairs(P(proj).tracks) do
    if t.selected then
      if n == idx then return t end
      n = n + 1
    end
  end
  return nil
end

local function track_items(track)
  local list = {}
  for _, item in ipairs(track.project.items) do
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
local function sorted_markers(proj)
  local list = {}
  for _, m in ipairs(P(proj).markers) do list[#list + 1] = m end
  table.sort(list, function(a, b)
    if a.pos ~= b.pos then return a.pos < b.pos end
    return (a.isrgn and 1 or 0) < (b.isrgn and 1 or 0)
  end)
  return list
end

-- AddProjectMarker2(proj, isrgn, pos, rgnend, name, wantidx, color) -> number, or -1 (also
-- when the spec says REAPER fails: add_marker_fails)
function reaper.AddProjectMarker2(proj, isrgn, pos, rgnend, name, wantidx, color)
  local project = P(proj)
  edit('AddProjectMarker2', project)
  if (isrgn and not (rgnend > pos)) or state.spec.add_marker_fails then return -1 end
  local number = wantidx
  local used = {}
  for _, m in ipairs(project.markers) do
    if m.isrgn == isrgn then used[m.number] = true end
  end
  if number == nil or number < 0 or used[number] then
    number = 1
    while used[number] do number = number + 1 end
  end
  project.markers[#project.markers + 1] = { isrgn = isrgn, pos = pos,
    rgnend = isrgn and rgnend or pos, name = name or '', number = number, color = color or 0 }
  return number
end

-- EnumProjectMarkers3(proj, idx) -> retval, isrgn, pos, rgnend, name, markrgnindexnumber, color
function reaper.EnumProjectMarkers3(proj, idx)
  local m = sorted_markers(proj)[idx + 1]
  if not m then return 0, false, 0, 0, '', 0, 0 end
  return idx + 1, m.isrgn, m.pos, m.rgnend, m.name, m.number, m.color
end

-- SetProjectMarker3(proj, markrgnindexnumber, isrgn, pos, rgnend, name, color) -> boolean;
-- an empty name leaves the name as it is (documented for SetProjectMarker)
function reaper.SetProjectMarker3(proj, number, isrgn, pos, rgnend, name, color)
  local project = P(proj)
  edit('SetProjectMarker3', project)
  for _, m in ipairs(project.markers) do
    if m.number == number and m.isrgn == isrgn then
      m.pos, m.rgnend = pos, isrgn and rgnend or pos
      if name ~= '' then m.name = name end
      m.color = color or m.color
      return true
    end
  end
  return false
end

-- GetSet_LoopTimeRange2(proj, isSet, isLoop, start, end, allowautoseek) -> start, end
function reaper.GetSet_LoopTimeRange2(proj, is_set, _is_loop, t0, t1, _seek)
  local project = P(proj)
  if is_set then project.time_selection = { t0, t1 } end
  return project.time_selection[1], project.time_selection[2]
end

function reaper.GetSet_LoopTimeRange(is_set, is_loop, t0, t1, seek)
  return reaper.GetSet_LoopTimeRange2(0, is_set, is_loop, t0, t1, seek)
end

-- SplitMediaItem(item, position): the original item becomes the left-hand part and the
-- right-hand part is returned (nil if position is not inside the item). Every take is kept
-- in both parts; the right part's takes start later in their sources by the cut's distance
-- times the take's playrate.
function reaper.SplitMediaItem(item, position)
  valid(item, 'item')
  local cut = position - item.position
  if cut <= 0 or cut >= item.length then return nil end
  local project = item.project
  edit('SplitMediaItem', project)
  local right = { kind = 'item', project = project, index = #project.items + 1,
                  track = item.track, position = position, length = item.length - cut,
                  selected = item.selected, takes = {}, active = item.active, loop = item.loop,
                  notes = '' }
  for n, take in ipairs(item.takes) do
    local copy = { kind = 'take', item = right, name = take.name, fx = take.fx, midi = take.midi,
                   source = take.source, params = {} }
    for k, v in pairs(take.params) do copy.params[k] = v end
    copy.params.D_STARTOFFS = take.params.D_STARTOFFS + cut * take.params.D_PLAYRATE
    right.takes[n] = copy
  end
  item.length = cut
  project.items[#project.items + 1] = right
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
  if parm == 'B_LOOPSRC' then return item.loop and 1 or 0 end
  return 0 -- documented: unknown parameters read as 0
end

function reaper.GetMediaItemTakeInfo_Value(take, parm)
  valid(take, 'take')
  return take.params[parm] or 0
end

function reaper.SetMediaItemTakeInfo_Value(take, parm, value)
  valid(take, 'take')
  if TAKE_DEFAULTS[parm] == nil then return false end
  edit('SetMediaItemTakeInfo_Value ' .. parm, take.item.project)
  if parm == 'D_PLAYRATE' and value <= 0 then error('playrate must be > 0') end
  take.params[parm] = value
  return true
end

function reaper.GetSetMediaItemTakeInfo_String(take, parm, value, set)
  valid(take, 'take')
  if parm ~= 'P_NAME' then return false, '' end
  if set then
    edit('P_NAME', take.item.project)
    take.name = value
  end
  return true, take.name
end

-- GetSetMediaItemInfo_String(item, parm, value, set): P_NOTES is the item's note text
function reaper.GetSetMediaItemInfo_String(item, parm, value, set)
  valid(item, 'item')
  if parm ~= 'P_NOTES' then return false, '' end
  if set then
    edit('P_NOTES', item.project)
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
  edit('AddTakeToMediaItem', item.project)
  local take = new_take(item, { name = '' })
  item.takes[#item.takes + 1] = take
  return take
end

function reaper.SetMediaItemTake_Source(take, src)
  valid(take, 'take')
  valid(src, 'source')
  edit('SetMediaItemTake_Source', take.item.project)
  take.source = src
  return true
end

-- ColorToNative: the Windows (0x00BBGGRR) layout; REAPER's own differs per platform, which
-- is why scripts must call it rather than build the integer themselves.
function reaper.ColorToNative(r, g, b)
  for _, c in ipairs({ r, g, b }) do
    if math.type(c) ~= 'integer' or c < 0 or c > 255 then violation('ColorToNative: bad component') end
  end
  return r | (g << 8) | (b << 16)
end

-- SetTakeMarker(take, idx, name, srcpos, color): idx < 0 adds one (srcpos then required,
-- seconds of the take's source); returns its index among the take's markers (by position).
function reaper.SetTakeMarker(take, idx, name, srcpos, color)
  valid(take, 'take')
  edit('SetTakeMarker', take.item.project)
  take.markers = take.markers or {}
  if idx >= 0 then violation('SetTakeMarker: the stand-in only adds markers') return -1 end
  if type(srcpos) ~= 'number' or srcpos < 0 then
    violation('SetTakeMarker: a new marker needs its source position')
    return -1
  end
  if take.source and take.source.length and srcpos > take.source.length then
    violation('SetTakeMarker: position past the end of the take\'s source')
  end
  take.markers[#take.markers + 1] = { name = name, position = srcpos, color = color or 0 }
  table.sort(take.markers, function(a, b) return a.position < b.position end)
  for n, m in ipairs(take.markers) do
    if m.position == srcpos and m.name == name then return n - 1 end
  end
end

function reaper.GetNumTakeMarkers(take)
  valid(take, 'take')
  return take.markers and #take.markers or 0
end

function reaper.SetActiveTake(take)
  valid(take, 'take')
  edit('SetActiveTake', take.item.project)
  for n, t in ipairs(take.item.takes) do
    if t == take then take.item.active = n end
  end
end

-- ValidatePtr2(proj, ptr, type): true when ptr is a live object of that type in that project
-- (items, takes and tracks belong to one project tab; a ReaProject* is valid while its tab is
-- open; sources are not checked against a project)
local PTR_KINDS = { ['MediaItem*'] = 'item', ['MediaItem_Take*'] = 'take',
                    ['PCM_source*'] = 'source', ['MediaTrack*'] = 'track',
                    ['ReaProject*'] = 'project' }

local function owner(ptr)
  if ptr.kind == 'take' then return ptr.item.project end
  return ptr.project
end

function reaper.ValidatePtr2(proj, ptr, typename)
  local kind = PTR_KINDS[typename]
  if type(ptr) ~= 'table' or ptr.kind ~= kind or ptr.deleted then return false end
  if kind == 'project' then return not ptr.closed end
  if kind == 'source' then return true end
  if ptr.kind == 'take' and ptr.item.deleted then return false end
  return owner(ptr) == P(proj)
end

function reaper.ValidatePtr(ptr, typename) return reaper.ValidatePtr2(0, ptr, typename) end

function reaper.GetMediaItem_Track(item)
  valid(item, 'item')
  return item.project.tracks[item.track]
end

function reaper.TrackFX_GetCount(track)
  valid(track, 'track')
  return #track.fx
end

-- TrackFX_GetInstrument(track): index of the first instrument, or -1
function reaper.TrackFX_GetInstrument(track)
  valid(track, 'track')
  for k, f in ipairs(track.fx) do if f.instrument then return k - 1 end end
  return -1
end

function reaper.TrackFX_GetEnabled(track, fx)
  valid(track, 'track')
  return track.fx[fx + 1] ~= nil and track.fx[fx + 1].enabled
end

function reaper.TrackFX_SetEnabled(track, fx, enabled)
  valid(track, 'track')
  edit('TrackFX_SetEnabled', track.project)
  if track.fx[fx + 1] then track.fx[fx + 1].enabled = enabled and true or false end
end

-- Item: Render items to new take (41999) and Item: Apply track/take FX to items (40209): for
-- each selected item, REAPER renders the item's sound to a new file in the project's media
-- folder and adds it as a new active take (start offset 0, playrate 1). 41999 bakes in what
-- the take does (take FX, playrate, pitch, section; MIDI only through take FX); 40209 also
-- the enabled FX of the item's track, so that take plays through those FX a second time. The
-- new take's `baked` records what went in. The test supplies the renderer (render_cmd).
local render_count = 0
local function render_selected(cmd, project)
  local label = cmd == 41999 and 'Render items to new take' or 'Apply track/take FX to items'
  local outside = state.undo_depth == 0
  if outside then state.undo_depth, state.undo_project = 1, project end
  for _, item in ipairs(selected_items(project)) do
    local take = item.takes[item.active]
    if take then
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
      local baked = { take_fx = take.fx, track_fx = {} }
      local track = project.tracks[item.track]
      if cmd == 40209 and track then
        for _, f in ipairs(track.fx) do
          if f.enabled then baked.track_fx[#baked.track_fx + 1] = f.name end
        end
      end
      local new = new_take(item, { name = take.name .. ' render', source = { file = out } })
      new.baked = baked
      edit(label, project)
      item.takes[#item.takes + 1] = new
      item.active = #item.takes
    end
  end
  if outside then
    state.undo_depth, state.undo_project = 0, nil
    project.undo_points[#project.undo_points + 1] = label
  end
end

function reaper.Main_OnCommandEx(cmd, _flag, proj)
  state.commands[#state.commands + 1] = cmd
  if cmd == 41999 or cmd == 40209 then render_selected(cmd, P(proj)) end
  -- 40047 (build missing peaks) and others: recorded only
end

function reaper.Main_OnCommand(cmd, flag) reaper.Main_OnCommandEx(cmd, flag, 0) end

-- Undo blocks belong to a project: Undo_BeginBlock() to the active tab, ..2(proj) to proj;
-- the undo point lands in that project's history
function reaper.Undo_BeginBlock2(proj)
  local project = P(proj)
  if state.undo_depth > 0 and state.undo_project ~= project then
    violation('undo block opened for a second project')
  end
  state.undo_depth = state.undo_depth + 1
  if state.undo_depth == 1 then state.undo_edits, state.undo_project = 0, project end
end

function reaper.Undo_BeginBlock() reaper.Undo_BeginBlock2(0) end

function reaper.Undo_EndBlock2(proj, desc, _flags)
  local project = P(proj)
  if state.undo_depth == 0 then violation('Undo_EndBlock without Undo_BeginBlock') return end
  if project ~= state.undo_project then violation('Undo_EndBlock for another project') end
  state.undo_depth = state.undo_depth - 1
  if state.undo_depth == 0 then
    state.undo_project.undo_points[#state.undo_project.undo_points + 1] = desc
    state.undo_project = nil
  end
end

function reaper.Undo_EndBlock(desc, flags) reaper.Undo_EndBlock2(0, desc, flags) end

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

function reaper.GetProjectPathEx(proj)
  P(proj)
  return state.spec.project_path
end

function reaper.GetResourcePath() return state.spec.resource_path end

-- EnumProjects(idx): idx -1 is the active tab, 0.. the open tabs in order; the project and its
-- .rpp path ("" while unsaved); nil past the last tab
function reaper.EnumProjects(idx, _buf)
  local project = idx == -1 and state.current or state.projects[idx + 1]
  if not project then return nil, '' end
  return project, project.file
end

--- The user clicks another project tab (the spec's second, empty project).
function R.switch_tab(n) state.current = state.projects[n] end

function reaper.RecursiveCreateDirectory(path, _ignored)
  os.execute('mkdir -p "' .. path .. '"')
  return 1
end

--- A command line split as REAPER does before starting the program (no shell): on spaces,
--- except inside double quotes, which are removed.
function R.split_command(cmd)
  local args, current, quoted, any = {}, {}, false, false
  for c in cmd:gmatch('.') do
    if c == '"' then
      quoted, any = not quoted, true
    elseif c:match('%s') and not quoted then
      if any then args[#args + 1] = table.concat(current) end
      current, any = {}, false
    else
      current[#current + 1], any = c, true
    end
  end
  if any then args[#args + 1] = table.concat(current) end
  return args
end

local function sh_quote(arg) return "'" .. arg:gsub("'", "'\\''") .. "'" end

local function executable(program)
  if program:find('/', 1, true) then
    local f = io.open(program, 'rb')
    if f then f:close() return true end
    return false
  end
  for dir in (os.getenv('PATH') or ''):gmatch('[^:]+') do
    local f = io.open(dir .. '/' .. program, 'rb')
    if f then f:close() return true end
  end
  return false
end

-- ExecProcess(cmd, timeoutmsec): the program named first is started with the other arguments
-- (split as R.split_command: no shell, so no quoting, globbing or redirection but REAPER's);
-- nil when it cannot be started. 0 waits for it and returns "exitcode\noutput"; -1 starts it and
-- returns at once; -2 the same, minimised (Windows).
function reaper.ExecProcess(cmd, timeout)
  state.exec[#state.exec + 1] = cmd
  state.exec_timeouts[#state.exec_timeouts + 1] = timeout
  local args = R.split_command(cmd)
  if not args[1] or not executable(args[1]) then return nil end
  local quoted = {}
  for n, arg in ipairs(args) do quoted[n] = sh_quote(arg) end
  local line = table.concat(quoted, ' ')
  if timeout == -1 or timeout == -2 then
    os.execute(line .. ' >>' .. sh_quote(state.spec.project_path .. '/helper.log') .. ' 2>&1 &')
    return '0\n'
  end
  local pipe = io.popen(line .. ' 2>&1')
  if not pipe then return nil end
  local output = pipe:read('a')
  local _, _, code = pipe:close()
  return tostring(code or 0) .. '\n' .. output
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
function gfx.drawstr(text)
  state.last_progress = text
  state.drawn = state.drawn or {}
  state.drawn[#state.drawn + 1] = text
  if #state.drawn > 8 then table.remove(state.drawn, 1) end
end
function gfx.update() end

------------------------------------------------------------------------------------------
-- the defer loop, and the result for the test
------------------------------------------------------------------------------------------

--- Runs deferred functions cycle by cycle until none is left or max_s passes.
function R.run_deferred(max_s, sleep)
  local stop_at = R.clock() + max_s
  local spec = state.spec
  while #state.deferred > 0 do
    if R.clock() > stop_at then
      violation('the script was still deferring after ' .. max_s .. ' s')
      break
    end
    local stop_now = spec.stop_at_cycle and state.cycle >= spec.stop_at_cycle
    for _, text in ipairs(spec.stop_when_drawn and state.drawn or {}) do
      if text:find(spec.stop_when_drawn) then stop_now = true end
    end
    if stop_now then
      -- the user stops the script (toolbar toggle / "terminate instances"): REAPER drops its
      -- deferred functions, closes its gfx window and runs its atexit functions
      state.deferred, state.stopped_by_user, state.gfx_open = {}, true, false
      break
    end
    if spec.switch_tab_at_cycle and state.cycle == spec.switch_tab_at_cycle then R.switch_tab(2) end
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
  if state.undo_depth ~= 0 then violation('undo block left open at exit') end
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
        baked = take.baked or false,
        markers = take.markers or {},
      }
    end
    items[#items + 1] = { position = item.position, length = item.length, selected = item.selected,
                          active = item.active, takes = takes, track = item.track,
                          notes = item.notes }
  end
  local tracks = {}
  for n, track in ipairs(state.projects[1].tracks) do
    local fx = {}
    for k, f in ipairs(track.fx) do fx[k] = { name = f.name, enabled = f.enabled } end
    tracks[n] = { fx = fx }
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
    markers = sorted_markers(state.projects[1]),
    other_tab_undo_points = state.projects[2].undo_points,
    exec_timeouts = state.exec_timeouts, net = state.net,
    stopped_by_user = state.stopped_by_user or false, tracks = tracks,
  }
end

return R
