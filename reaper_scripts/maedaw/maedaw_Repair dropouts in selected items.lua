-- @description maedaw: repair, restore, tag and find similar items (Audio-MAE, all actions)
-- @author maedaw
-- @version 0.2.0
-- @changelog
--   Signed requests: a token setting (blank: the local daemon's token file), a clear message
--   when the daemon refuses it. Repairs put a take marker at every span found: what was done
--   there, or why it was left alone.
-- @about
--   # maedaw for REAPER
--
--   Sends the sound of selected items to the maedaw daemon (`maedaw serve`, OSC; the
--   contract is docs/osc.md of the maedaw repository) and brings the answers back: repaired
--   or restored audio as a new active take on each item, aligned sample-exactly with the
--   original (which is kept, so switching takes A/Bs the repair), tags as take names, item
--   notes and region names, similar items as a selection. One undo point per action.
--
--   Items whose sound is not their file (playrate, pitch, take FX, section/reversed source,
--   MIDI) are first rendered by REAPER to a new take, and that render is sent.
--
--   - Needs the daemon: `pip install maedaw`, then **maedaw: Start daemon**.
--   - Optional: *Mavriq Lua Sockets* (ReaPack) for LuaSocket; without it each request
--     runs the `maedaw send` helper.
-- @provides
--   [nomain] maedaw_lib.lua
--   [nomain] maedaw_osc.lua
--   [main] maedaw_Daemon status.lua
--   [main] maedaw_Find items similar to the selected one.lua
--   [main] maedaw_Repair time selection on selected tracks.lua
--   [main] maedaw_Restore selected items.lua
--   [main] maedaw_Settings.lua
--   [main] maedaw_Start daemon.lua
--   [main] maedaw_Stop daemon.lua
--   [main] maedaw_Tag selected items.lua
--   [main] maedaw_Tag time selection.lua
--   [main] maedaw_Teach a tag from selected items.lua

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: repair dropouts'

local function finish(requests, outcome, detail)
  lib.write_back(requests, outcome, detail, {
    title = TITLE,
    label = function(r) return 'repair: ' .. lib.summary_text(r) end,
    undo = 'maedaw: repair dropouts',
    noun = 'item',
    verb = 'repaired',
    marks = true, -- a take marker at every span found: what was done, or why not
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
