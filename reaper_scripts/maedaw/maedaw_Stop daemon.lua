-- @description Stop the daemon
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Runs `maedaw stop`: the daemon lets a running job finish (or fails it cleanly, never
--   leaving half a stem), then exits. Waits until it no longer answers.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: stop daemon'
local WAIT_S = 30

local function main()
  local settings = lib.get_settings()
  if not lib.run_maedaw_here(settings, 'stop', TITLE) then return end
  lib.await_daemon(settings, false, WAIT_S, TITLE, 'stopping the maedaw daemon...',
    function(down, detail)
      if down then
        reaper.ShowMessageBox('The maedaw daemon has stopped.', TITLE, 0)
      elseif detail ~= 'cancelled' then
        reaper.ShowMessageBox(string.format('The daemon still answers after %d s (a long job ' ..
          'may be finishing). Check with "maedaw: Daemon status".', WAIT_S), TITLE, 0)
      end
    end)
end

main()
