-- @description Start the daemon (in the background)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Starts `maedaw serve --detach` on the port set in "maedaw: Settings" (nothing happens
--   if it is already running), then waits until it answers and shows its model. The daemon
--   keeps running when REAPER closes; "maedaw: Stop daemon" stops it. Its log is
--   serve.log in the daemon's state folder (`maedaw serve --help`).

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: start daemon'
local WAIT_S = 40 -- a first start loads torch and validates the model

local function main()
  local settings = lib.get_settings()
  if not lib.run_maedaw_here(settings, 'serve --detach --port ' .. settings.port, TITLE) then
    return
  end
  lib.await_daemon(settings, true, WAIT_S, TITLE, 'starting the maedaw daemon...',
    function(up, detail)
      if up then
        -- the daemon answers before its model is validated (a second or two)
        local model = (detail.model == nil or detail.model == '') and
          '(still loading, or none installed: see "maedaw: Daemon status")' or detail.model
        reaper.ShowMessageBox(string.format('maedaw daemon running on %s:%d\nversion %s, model %s',
          settings.host, settings.port, tostring(detail.version), model), TITLE, 0)
      elseif detail ~= 'cancelled' then
        reaper.ShowMessageBox(string.format('The daemon did not answer within %d s.\n\n' ..
          'Run this in a terminal to see why:\n    %s serve --port %d', WAIT_S, settings.helper,
          settings.port), TITLE, 0)
      end
    end)
end

main()
