-- Runs one REAPER action under the stand-in: lua5.4 run.lua SPEC.lua SCRIPT.lua RESULT.json
-- SPEC.lua returns the project table (see reaper.lua R.load); RESULT.json is the project
-- and everything the script did, for the pytest side to check.

local here = arg[0]:match('^(.*[/\\])') or './'
local spec_path, script_path, result_path = arg[1], arg[2], arg[3]

-- the runner's own clock and sleep (LuaSocket when present, else os.clock and a busy wait)
local ok, socket = pcall(require, 'socket')
local clock, sleep
if ok and socket.gettime then
  clock, sleep = socket.gettime, socket.sleep
else
  clock = os.clock
  sleep = function(s) local t = os.clock() + s while os.clock() < t do end end
end

local R = dofile(here .. 'reaper.lua')
R.clock = clock
local spec = dofile(spec_path)
R.load(spec)
R.state.script = script_path
_G.reaper, _G.gfx = R.reaper, R.gfx

if ok and not spec.hide_socket then
  -- the scripts' require('socket') finds the strict model (socket_model.lua)
  package.loaded.socket = dofile(here .. 'socket_model.lua')(socket, spec, R.state.net)
end

if spec.hide_socket then
  -- a stock REAPER: no LuaSocket anywhere on the paths the script searches
  package.loaded.socket, package.loaded['socket.core'] = nil, nil
  package.path, package.cpath = '', ''
  package.preload.socket = function() error('module socket not found') end
end

local function json(v, out)
  local t = type(v)
  if t == 'table' then
    if next(v) == nil then out[#out + 1] = (getmetatable(v) == 'object') and '{}' or '[]' return end
    if #v > 0 then
      out[#out + 1] = '['
      for n, x in ipairs(v) do
        if n > 1 then out[#out + 1] = ',' end
        json(x, out)
      end
      out[#out + 1] = ']'
    else
      out[#out + 1] = '{'
      local first = true
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      for _, k in ipairs(keys) do
        if not first then out[#out + 1] = ',' end
        first = false
        json(k, out)
        out[#out + 1] = ':'
        json(v[k] == nil and v[tonumber(k)] or v[k], out)
      end
      out[#out + 1] = '}'
    end
  elseif t == 'string' then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      return string.format('\\u%04x', c:byte())
    end) .. '"'
  elseif t == 'number' then
    if v ~= v or v == math.huge or v == -math.huge then out[#out + 1] = 'null'
    elseif math.type(v) == 'integer' then out[#out + 1] = tostring(v)
    else out[#out + 1] = string.format('%.17g', v) end
  elseif t == 'boolean' then
    out[#out + 1] = tostring(v)
  else
    out[#out + 1] = 'null'
  end
end

local status, err = xpcall(function() dofile(script_path) end, debug.traceback)
if status then
  status, err = xpcall(function() R.run_deferred(spec.max_s or 30, sleep) end, debug.traceback)
end
local result = R.snapshot()
result.error = (not status) and tostring(err) or false
local out = {}
json(result, out)
local f = assert(io.open(result_path, 'w'))
f:write(table.concat(out))
f:close()
if not status then
  io.stderr:write(tostring(err), '\n')
  os.exit(1)
end
