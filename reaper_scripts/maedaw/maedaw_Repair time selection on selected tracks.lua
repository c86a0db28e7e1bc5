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
  if outcome == 'no_daemon' or outcome == 'transport' or outcome == 'contract' then
    reaper.ShowMessageBox(tostring(detail), TITLE, 0)
    return
  end
  local lines, added, done = {}, 0, {}
  for _, r in ipairs(requests) do
    if r.state == 'done' then done[#done + 1] = r end
  end
  if done[1] then
    reaper.Undo_BeginBlock()
    reaper.PreventUIRefresh(1)
    for _, r in ipairs(done) do
      local what = 'repair: ' .. lib.summary_text(r)
      local ok, why = lib.isolate_part(r)
      local take
      if ok then take, why = lib.add_stem_take(r, what) end
      if take then
        added = added + 1
        lines[#lines + 1] = string.format('"%s": %s', r.name, what)
      else
        lines[#lines + 1] = string.format('"%s": not added (%s); the stem is %s', r.name, why, r.stem)
      end
    end
    reaper.Main_OnCommand(lib.CMD_BUILD_MISSING_PEAKS, 0)
    reaper.PreventUIRefresh(-1)
    reaper.UpdateArrange()
    reaper.Undo_EndBlock(string.format('maedaw: repair time selection (%d item(s))', added), -1)
  end
  for _, r in ipairs(requests) do
    if r.state == 'error' then
      lines[#lines + 1] = string.format('"%s": %s: %s', r.name, tostring(r.code), tostring(r.message))
    end
  end
  local head = string.format('%d of %d item part(s) repaired as new takes.', added, #requests)
  if outcome == 'cancelled' then head = head .. ' Cancelled.' end
  if outcome == 'timeout' then head = head .. ' Timed out.' end
  reaper.ShowMessageBox(head .. '\n\n' .. table.concat(lines, '\n'), TITLE, 0)
end

local function main()
  local t0, t1 = lib.time_selection()
  if not t0 then
    reaper.ShowMessageBox('Make a time selection first.', TITLE, 0)
    return
  end
  if reaper.CountSelectedTracks(0) == 0 then
    reaper.ShowMessageBox('Select one or more tracks first.', TITLE, 0)
    return
  end
  local settings = lib.get_settings()
  local skipped = {}
  lib.run_jobs({
    title = TITLE,
    settings = settings,
    prepare = function()
      local requests
      requests, skipped = lib.time_selection_requests(settings, 'repair', t0, t1)
      return requests, skipped
    end,
    finish = function(reqs, outcome, detail)
      if outcome == 'nothing' then
        local why = skipped[1] and (':\n' .. table.concat(skipped, '\n')) or
          ': no item on the selected tracks overlaps the time selection.'
        reaper.ShowMessageBox('Nothing to send' .. why, TITLE, 0)
        return
      end
      finish(reqs, outcome, detail)
      if skipped[1] then reaper.ShowConsoleMsg(TITLE .. ', skipped:\n' .. table.concat(skipped, '\n') .. '\n') end
    end,
  })
end

main()
