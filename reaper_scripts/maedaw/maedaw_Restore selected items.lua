-- @description Restore selected items (declip, declick, bandwidth, denoise, dehum)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Asks for one restoration operation, sends each selected item's sound to the maedaw
--   daemon (/maedaw/restore) and adds each result as a new active take named after the
--   operation. One undo point. A daemon that cannot do the operation yet answers
--   "unsupported": then nothing in the project changes and the message says so.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: restore'

local function finish(op, requests, outcome, detail)
  if outcome == 'no_daemon' or outcome == 'transport' or outcome == 'contract' then
    reaper.ShowMessageBox(tostring(detail), TITLE, 0)
    return
  end
  local lines, added, done, unsupported = {}, 0, {}, false
  for _, r in ipairs(requests) do
    if r.state == 'done' then done[#done + 1] = r end
    if r.code == 'unsupported' then unsupported = true end
  end
  if done[1] then
    reaper.Undo_BeginBlock()
    reaper.PreventUIRefresh(1)
    for _, r in ipairs(done) do
      local take, why = lib.add_stem_take(r, op)
      if take then
        added = added + 1
        lines[#lines + 1] = string.format('"%s": %s', r.name, op)
      else
        lines[#lines + 1] = string.format('"%s": not added (%s); the stem is %s', r.name, why, r.stem)
      end
    end
    reaper.Main_OnCommand(lib.CMD_BUILD_MISSING_PEAKS, 0)
    reaper.PreventUIRefresh(-1)
    reaper.UpdateArrange()
    reaper.Undo_EndBlock(string.format('maedaw: %s (%d item(s))', op, added), -1)
  end
  for _, r in ipairs(requests) do
    if r.state == 'error' then
      lines[#lines + 1] = string.format('"%s": %s: %s', r.name, tostring(r.code), tostring(r.message))
    end
  end
  local head = string.format('%d of %d item(s) restored (%s) as new takes.', added, #requests, op)
  if unsupported then
    head = head .. '\nThis daemon cannot do "' .. op .. '" yet; nothing in the project was changed.'
  end
  if outcome == 'cancelled' then head = head .. ' Cancelled.' end
  if outcome == 'timeout' then head = head .. ' Timed out.' end
  reaper.ShowMessageBox(head .. '\n\n' .. table.concat(lines, '\n'), TITLE, 0)
end

local function main()
  if reaper.CountSelectedMediaItems(0) == 0 then
    reaper.ShowMessageBox('Select one or more items first.', TITLE, 0)
    return
  end
  local settings = lib.get_settings()
  local ok, answer = reaper.GetUserInputs(TITLE, 1,
    'Operation (declip/declick/bandwidth/denoise/dehum),extrawidth=80', settings.restore_op)
  if not ok then return end
  local op = answer:match('^%s*(.-)%s*$'):lower()
  if not lib.RESTORE_OPS[op] then
    reaper.ShowMessageBox('Unknown operation "' .. op ..
      '": choose declip, declick, bandwidth, denoise or dehum.', TITLE, 0)
    return
  end
  lib.set_setting('restore_op', op)
  local skipped = {}
  lib.run_jobs({
    title = TITLE .. ' (' .. op .. ')',
    settings = settings,
    prepare = function()
      local requests
      requests, skipped = lib.repair_requests(settings, op, op)
      return requests, skipped
    end,
    finish = function(reqs, outcome, detail)
      if outcome == 'nothing' then
        reaper.ShowMessageBox('Nothing to send:\n' .. table.concat(skipped, '\n'), TITLE, 0)
        return
      end
      finish(op, reqs, outcome, detail)
    end,
  })
end

main()
