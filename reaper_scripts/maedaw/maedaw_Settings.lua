-- @description Settings (daemon host, port and token, output folder, defaults)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   One dialog for the settings every maedaw action reads (kept in REAPER's ExtState,
--   section "maedaw", persisted): daemon host, port and token (blank: the token of this
--   machine's daemon; for a studio server, what `maedaw token` prints there), the folder
--   stems go to (blank: the project's media folder), stem format, job timeout, repair sensitivity (low/normal/high:
--   how sure detected damage must be before it is written), transport (auto: LuaSocket when
--   installed, else the `maedaw send` helper) and the command that runs maedaw.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: settings'
local FIELDS = {
  { 'host', 'Daemon host' },
  { 'port', 'Daemon port' },
  { 'out_dir', 'Output folder (blank: project media)' },
  { 'format', 'Stem format (wav/flac)' },
  { 'timeout_s', 'Job timeout (seconds)' },
  { 'transport', 'Transport (auto/socket/helper)' },
  { 'helper', 'maedaw command (helper)' },
  { 'sensitivity', 'Repair sensitivity (low/normal/high)' },
  { 'token', 'Daemon token (blank: this machine)' },
}

local function main()
  local settings = lib.get_settings()
  local captions, values = {}, {}
  for n, field in ipairs(FIELDS) do
    captions[n] = field[2]
    values[n] = tostring(settings[field[1]])
  end
  -- values newline-separated ("separator="), so paths and commands may contain commas
  local ok, csv = reaper.GetUserInputs(TITLE, #FIELDS,
    table.concat(captions, ',') .. ',separator=\n,extrawidth=260', table.concat(values, '\n'))
  if not ok then return end
  local answers = {}
  for value in (csv .. '\n'):gmatch('([^\n]*)\n') do answers[#answers + 1] = value end
  local checked, errors = {}, {}
  for n, field in ipairs(FIELDS) do
    local value, why = lib.check_setting(field[1], answers[n] or '')
    if value then checked[field[1]] = value else errors[#errors + 1] = why end
  end
  if errors[1] then
    reaper.ShowMessageBox('Nothing was saved:\n' .. table.concat(errors, '\n'), TITLE, 0)
    return
  end
  for key, value in pairs(checked) do lib.set_setting(key, value) end
end

main()
