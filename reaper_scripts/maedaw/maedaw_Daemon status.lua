-- @description Daemon status (ping and jobs)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Pings the maedaw daemon and shows its contract, version, model and the jobs it knows
--   this run. Says how to start it when it is not running.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: daemon status'

local function main()
  local settings = lib.get_settings()
  lib.run_jobs({
    title = TITLE,
    settings = settings,
    -- "/maedaw/status" with a client id answers for that id; "" asks for every job, and the
    -- reply then carries "" as its id, so match it under that key
    requests = {
      { client_job = '', name = 'status', packet = lib.request('status', { client_job = '' }) },
    },
    finish = function(reqs, outcome, detail)
      if outcome ~= 'ok' then
        reaper.ShowMessageBox(tostring(type(detail) == 'string' and detail or outcome), TITLE, 0)
        return
      end
      local pong = detail or {}
      local text = string.format('maedaw daemon at %s:%d\ncontract %s, version %s, model %s',
        settings.host, settings.port, tostring(pong.contract), tostring(pong.version),
        (pong.model == nil or pong.model == '') and '(none)' or pong.model)
      local json = reqs[1].status_json or ''
      local counts = {}
      for state in json:gmatch('"state"%s*:%s*"(%a+)"') do counts[state] = (counts[state] or 0) + 1 end
      local parts = {}
      for _, state in ipairs({ 'queued', 'running', 'done', 'failed', 'cancelled' }) do
        if counts[state] then parts[#parts + 1] = counts[state] .. ' ' .. state end
      end
      text = text .. '\njobs this run: ' .. (parts[1] and table.concat(parts, ', ') or 'none')
      text = text .. string.format('\ntransport: %s', settings.transport)
      reaper.ShowMessageBox(text, TITLE, 0)
    end,
  })
end

main()
