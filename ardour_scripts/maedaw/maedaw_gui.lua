-- maedaw for Ardour, the GUI half: the editor actions' work around maedaw_lib.lua.
-- Selected regions -> lib.region_requests -> lib.run (progress in Ardour's ProgressWindow,
-- Cancel stops every job) -> write-back:
--   repair / restore: each stem is embedded (not copied: its samples play as written) on a new
--     track "<track> (maedaw <op>)" at the region's position, named "<region> (maedaw <op>)";
--     all stems from one track share that new track; the original is never touched.
--   tag: the region's name gets " [tag, tag]" and a marker with the tags is added at its start
--     (one undo step for the names).
-- Needs Ardour's editor (Editor, LuaDialog): only the actions load this file, with its folder
-- as the argument (ending in '/'), as they load it:
--   assert(loadfile(dir .. 'maedaw_gui.lua'))(dir).run_action('repair', params)

local here = assert(..., 'maedaw_gui.lua: load it with its folder as the argument')
local lib = assert(loadfile(here .. 'maedaw_lib.lua'))(here)

local G = {}

local function message(title, text, kind)
  LuaDialog.Message(title, text, kind or LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run()
end

--- A track's or region's id as a string (a table key).
local function id_of(object)
  return object:to_stateful():id():to_s()
end

--- The track whose playlist holds `region` (Ardour has no direct way; its examples do this).
local function track_of(region)
  local id = region:to_stateful():id()
  for route in Session:get_tracks():iter() do
    local track = route:to_track()
    if not track:isnil() and not track:playlist():region_by_id(id):isnil() then return track end
  end
  return nil
end

local function selected_regions()
  local regions = {}
  for region in Editor:get_selection().regions:regionlist():iter() do
    regions[#regions + 1] = region
  end
  return regions
end

--- Asks for the restoration operation; nil when the user cancels.
local function ask_op()
  local values = {}
  for _, op in ipairs(lib.RESTORE_OPS) do values[op] = op end
  local answer = LuaDialog.Dialog('maedaw: restore', {
    { type = 'dropdown', key = 'op', title = 'Operation', values = values, default = 'declip' },
  }):run()
  return answer and answer.op or nil
end

--- Embeds the stems of one region (one per source file, in channel order) on `target`
--- (a new track when nil); returns the track that received them.
local function embed(stems, position, target)
  local files = C.StringVector()
  for _, stem in ipairs(stems) do files:push_back(stem) end
  local before = {}
  for route in Session:get_tracks():iter() do before[id_of(route)] = true end
  -- ImportMergeFiles: several mono stems make one multichannel region, and it is the one
  -- disposition that honours the `track` argument for ImportToTrack (ImportDistinctFiles
  -- would use the editor's selected tracks instead)
  local pos = Temporal.timepos_t(position)
  Editor:do_embed(files, Editing.ImportMergeFiles,
    target and Editing.ImportToTrack or Editing.ImportAsTrack, pos, ARDOUR.PluginInfo(),
    target or ARDOUR.Track())
  if target then return target end
  for route in Session:get_tracks():iter() do
    if not before[id_of(route)] then return route:to_track() end
  end
  return nil
end

--- The region `track` got for `stem` at `position` (to name it).
local function embedded_region(track, stem, position)
  for region in track:playlist():region_list():iter() do
    local source = region:source(0):to_filesource()
    if region:position():samples() == position and not source:isnil()
        and source:path() == stem then
      return region
    end
  end
  return nil
end

local function write_back_stems(requests, label)
  -- stems per region (a region read from several files has several stems)
  local per_region, order = {}, {}
  for _, req in ipairs(requests) do
    if req.state == 'done' then
      local key = id_of(req.region)
      if not per_region[key] then
        per_region[key] = { req = req, stems = {} }
        order[#order + 1] = key
      end
      table.insert(per_region[key].stems, req.stem)
    end
  end
  local new_tracks, failed = {}, {}
  for _, key in ipairs(order) do
    local entry = per_region[key]
    local req = entry.req
    local origin = req.track and id_of(req.track) or key
    local track = embed(entry.stems, req.position, new_tracks[origin])
    if not track then
      failed[#failed + 1] = req.region_name .. ': Ardour did not add the stem (see its log)'
    else
      if not new_tracks[origin] then
        new_tracks[origin] = track
        track:set_name(string.format('%s (maedaw %s)', req.track and req.track:name() or 'maedaw', label))
      end
      local region = embedded_region(track, entry.stems[1], req.position)
      if region then region:set_name(string.format('%s (maedaw %s)', req.region_name, label)) end
    end
  end
  return failed
end

local function write_back_tags(requests)
  local locations = Session:locations()
  Session:begin_reversible_command('maedaw: tag regions')
  for _, req in ipairs(requests) do
    if req.state == 'done' then
      local tags = req.tags or {}
      local region = req.region
      region:to_stateful():clear_changes()
      region:set_name(lib.name_with_tags(region:name(), tags))
      Session:add_stateful_diff_command(region:to_statefuldestructible())
      if #tags > 0 then
        local before = {}
        for loc in locations:list():iter() do before[loc:id():to_s()] = true end
        Editor:add_location_mark(region:position())
        for loc in locations:list():iter() do
          if not before[loc:id():to_s()] then loc:set_name(table.concat(tags, ', ')) end
        end
      end
    end
  end
  if not Session:abort_empty_reversible_command() then Session:commit_reversible_command(nil) end
end

--- One editor action: kind is repair | restore | tag; params are the action's settings.
function G.run_action(kind, params)
  local title = 'maedaw: ' .. kind
  local settings, why = lib.settings(params)
  if not settings then return message(title, 'Settings: ' .. why, LuaDialog.MessageType.Error) end
  local regions = selected_regions()
  if #regions == 0 then return message(title, 'Select one or more audio regions first.') end
  local op
  if kind == 'restore' then
    op = ask_op()
    if not op then return end
  end
  local ok
  ok, why = lib.resolve_out_dir(settings, Session)
  if not ok then return message(title, why, LuaDialog.MessageType.Error) end

  local requests, skipped = {}, {}
  local rate = Session:nominal_sample_rate()
  for _, region in ipairs(regions) do
    local reqs, skip = lib.region_requests(region, rate)
    if not reqs then
      skipped[#skipped + 1] = region:name() .. ': ' .. skip
    else
      for _, req in ipairs(reqs) do
        req.region, req.track = region, track_of(region)
        requests[#requests + 1] = req
      end
    end
  end
  if #requests == 0 then return message(title, 'Nothing to send:\n' .. table.concat(skipped, '\n')) end

  local progress = LuaDialog.ProgressWindow(title .. (op and (' (' .. op .. ')') or ''), true)
  local finished
  finished, why = lib.run(settings, kind, requests, {
    progress = function(fraction, text) return progress:progress(fraction, text) end,
  }, op)
  progress:done()
  if not finished then return message(title, why, LuaDialog.MessageType.Error) end

  local lines, failed = {}, {}
  if kind == 'tag' then
    for _, req in ipairs(finished) do
      if req.state == 'done' then req.tags = lib.tags_of(req) end
    end
    write_back_tags(finished)
  else
    failed = write_back_stems(finished, op or kind)
  end
  for _, req in ipairs(finished) do lines[#lines + 1] = lib.describe(req) end
  for _, line in ipairs(skipped) do lines[#lines + 1] = 'skipped ' .. line end
  for _, line in ipairs(failed) do lines[#lines + 1] = line end
  message(title, table.concat(lines, '\n'))
end

return G
