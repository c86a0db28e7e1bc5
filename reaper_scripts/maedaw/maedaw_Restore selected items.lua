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
  lib.write_back(requests, outcome, detail, {
    title = TITLE,
    label = function() return op end,
    undo = 'maedaw: ' .. op,
    noun = 'item',
    verb = 'restored (' .. op .. ')',
    unsupported = '\nThis daemon cannot do "' .. op .. '" yet; nothing in the project was changed.',
  })
end

local function main()
  if not lib.need_selected_items(TITLE) then return end
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
  lib.run_action({
    title = TITLE .. ' (' .. op .. ')',
    settings = settings,
    make = function() return lib.repair_requests(settings, op, op) end,
    done = function(reqs, outcome, detail) finish(op, reqs, outcome, detail) end,
  })
end

main()
