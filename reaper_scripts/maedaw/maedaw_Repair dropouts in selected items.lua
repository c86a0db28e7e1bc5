-- @description Repair dropouts in selected items
-- @author maedaw
-- @version 0.1.0
-- @about
--   Sends the sound of each selected item to the maedaw daemon (OSC, see docs/osc.md),
--   which finds and repairs dropouts, level drops, clicks and clipping. Each repaired stem
--   comes back as a new active take on its item, aligned sample-exactly with the original;
--   the original take is kept, so switching takes A/Bs the repair. One undo point.
--
--   Items whose sound is not their file (playrate, pitch, take FX, section/reversed source,
--   MIDI) are first rendered by REAPER to a new take, and that render is repaired.
-- @provides
--   [nomain] maedaw_lib.lua
--   [nomain] maedaw_osc.lua
--   [main] maedaw_Daemon status.lua
--   [main] maedaw_Repair time selection on selected tracks.lua
--   [main] maedaw_Restore selected items.lua
--   [main] maedaw_Settings.lua
--   [main] maedaw_Start daemon.lua
--   [main] maedaw_Stop daemon.lua
--   [main] maedaw_Tag selected items.lua

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: repair dropouts'

local function finish(requests, outcome, detail)
  lib.write_back(requests, outcome, detail, {
    title = TITLE,
    label = function(r) return 'repair: ' .. lib.summary_text(r) end,
    undo = 'maedaw: repair dropouts',
    noun = 'item',
    verb = 'repaired',
  })
end

local function main()
  if not lib.need_selected_items(TITLE) then return end
  lib.run_action({
    title = TITLE,
    make = function(settings) return lib.repair_requests(settings, 'repair') end,
    done = finish,
    skipped_to_console = true,
  })
end

main()
