-- @description Repair time selection on selected tracks
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Repairs the part of every item on the selected tracks that lies inside the time
--   selection. When the repairs come back, each such item is split at the time selection's
--   edges (nothing is deleted) and the repaired stem becomes a new active take on the middle
--   piece, aligned sample-exactly. One undo point.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: repair time selection'

local function finish(requests, outcome, detail)
  lib.write_back(requests, outcome, detail, {
    title = TITLE,
    label = function(r) return 'repair: ' .. lib.summary_text(r) end,
    prepare = lib.isolate_part, -- split the item at the time selection's edges first
    undo = 'maedaw: repair time selection',
    noun = 'item part',
    verb = 'repaired',
    marks = true, -- a take marker at every span found: what was done, or why not
  })
end

local function main()
  local t0, t1 = lib.need_time_selection(TITLE)
  if not t0 then return end
  if reaper.CountSelectedTracks(lib.proj) == 0 then
    reaper.ShowMessageBox('Select one or more tracks first.', TITLE, 0)
    return
  end
  lib.run_action({
    title = TITLE,
    make = function(settings) return lib.time_selection_requests(settings, 'repair', t0, t1) end,
    nothing_why = ': no item on the selected tracks overlaps the time selection.',
    done = finish,
    skipped_to_console = true,
  })
end

main()
