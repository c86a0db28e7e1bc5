-- @description Tag time selection (name a region after what is heard in it)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Sends the part of each item inside the time selection, on the selected tracks (every
--   track when none is selected), to the maedaw daemon (/maedaw/tag). The tags of all parts
--   are merged (each at its best score) and a region over the time selection is named
--   "maedaw tags: ..." after the confident ones (score >= 0.5, else the best). Running it
--   again on the same time selection renames that region instead of adding another; other
--   regions and markers are not touched, nor is any audio. One undo point.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: tag time selection'
local TOP_K = 5
local CONFIDENT = 0.5
local PREFIX = 'maedaw tags: '

--- The number and colour of a region exactly over [t0, t1] that an earlier run named, or nil.
local function own_region(t0, t1)
  local idx = 0
  while true do
    local ok, isrgn, pos, rgnend, name, number, color = reaper.EnumProjectMarkers3(lib.proj, idx)
    if ok == 0 then return nil end
    if isrgn and math.abs(pos - t0) < 1e-6 and math.abs(rgnend - t1) < 1e-6
        and name:sub(1, #PREFIX) == PREFIX then
      return number, color
    end
    idx = idx + 1
  end
end

local function name_region(requests, outcome, t0, t1, skipped)
  local lists, problems = {}, {}
  for _, r in ipairs(requests) do
    if r.state == 'done' then
      lists[#lists + 1] = lib.parse_tags(r.summary)
    else
      problems[#problems + 1] = string.format('"%s": %s: %s', r.name, tostring(r.code),
        tostring(r.message))
    end
  end
  local tags = lib.merge_tags(lists)
  local foot = {}
  for _, line in ipairs(problems) do foot[#foot + 1] = line end
  for _, line in ipairs(skipped) do foot[#foot + 1] = line end
  local note = lib.outcome_note(outcome)
  if note ~= '' then foot[#foot + 1] = note:sub(2) end
  if not tags[1] then
    reaper.ShowMessageBox('No tags came back; no region named.\n\n' .. table.concat(foot, '\n'),
      TITLE, 0)
    return
  end
  local name = PREFIX .. table.concat(lib.confident_labels(tags, CONFIDENT), ', ')
  if not lib.project_open() then
    reaper.ShowMessageBox('The project tab was closed; no region named.', TITLE, 0)
    return
  end
  reaper.Undo_BeginBlock2(lib.proj)
  local number, color = own_region(t0, t1)
  if number then
    -- the colour read back, not 0: 0 would reset a colour the user gave the region
    reaper.SetProjectMarker3(lib.proj, number, true, t0, t1, name, color)
  else
    number = reaper.AddProjectMarker2(lib.proj, true, t0, t1, name, -1, 0) -- 0: default colour
  end
  reaper.UpdateArrange()
  reaper.Undo_EndBlock2(lib.proj, 'maedaw: tag time selection', 8) -- 8: markers/regions
  if number < 0 then
    reaper.ShowMessageBox(string.format('REAPER could not add a region over %.3f-%.3f s ' ..
      '(name: "%s").', t0, t1, name), TITLE, 0)
    return
  end
  local parts = {}
  for _, t in ipairs(tags) do parts[#parts + 1] = string.format('%s %.2f', t.label, t.score) end
  local text = string.format('Region %d: "%s"\n(%d part(s) of items)\n\n%s', number, name,
    #lists, table.concat(parts, ', '))
  if foot[1] then text = text .. '\n\n' .. table.concat(foot, '\n') end
  reaper.ShowMessageBox(text, TITLE, 0)
end

local function main()
  local t0, t1 = lib.need_time_selection(TITLE)
  if not t0 then return end
  lib.run_action({
    title = TITLE,
    make = function(settings) return lib.time_selection_tag_requests(settings, TOP_K, t0, t1) end,
    nothing = 'No audio in the time selection to tag',
    done = function(requests, outcome, _, skipped) name_region(requests, outcome, t0, t1, skipped) end,
  })
end

main()
