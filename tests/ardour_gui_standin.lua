-- Runs one of maedaw's Ardour editor actions (ardour_scripts/*.lua) under ardour7-lua, with the
-- real Session but stand-ins for the GUI-only objects an EditorAction gets: Editor (selection,
-- do_embed, add_location_mark), LuaDialog (Message, Dialog, ProgressWindow) and the Editing
-- constants. Headless Ardour cannot import, so do_embed records its call and then does what
-- Ardour's embed does to the session's track list (a new track named after the file, for
-- ImportAsTrack), without the region.
--
--   ardour7-lua ardour_gui_standin.lua SESSION_DIR NAME ACTION RESULTS [key=value ...]
--
-- keys: the action's parameters (port=, helper=, ...), plus select=<region name>[,<name>...]
-- (default: every region), op=<answer to the restore dialog> (blank: the user cancels it),
-- cancel=1 (the progress window's Cancel is pressed at once).
-- RESULTS gets one JSON object: embeds, messages, marks, dialogs, progress_done, regions.

local session_dir, session_name, action, results = arg[1], arg[2], arg[3], arg[4]
local params, opts = {}, {}
for k = 5, #arg do
  local key, value = arg[k]:match('^([%w_]+)=(.*)$')
  if key == 'select' or key == 'op' or key == 'cancel' then opts[key] = value else params[key] = value end
end

AudioEngine:set_backend('None (Dummy)', '', '')
Session = assert(load_session(session_dir, session_name), 'could not load the session')

local record = { embeds = {}, messages = {}, marks = {}, dialogs = {}, progress_done = false }

-- the action's header: Ardour reads it when scanning; here it only has to be callable
function ardour(_) end

Editing = { ImportMergeFiles = 'ImportMergeFiles', ImportDistinctFiles = 'ImportDistinctFiles',
  ImportAsTrack = 'ImportAsTrack', ImportToTrack = 'ImportToTrack' }

local selected = nil
if opts.select and opts.select ~= '' then
  selected = {}
  for name in opts.select:gmatch('[^,]+') do selected[name] = true end
end

local function region_list()
  local regions = {}
  for route in Session:get_tracks():iter() do
    for region in route:to_track():playlist():region_list():iter() do
      if not selected or selected[region:name()] then regions[#regions + 1] = region end
    end
  end
  return { iter = function()
    local k = 0
    return function() k = k + 1 return regions[k] end
  end }
end

Editor = {}
function Editor:get_selection()
  return { regions = { regionlist = function(_) return region_list() end } }
end
function Editor:do_embed(files, disposition, mode, pos, _instrument, track)
  local call = { files = {}, disposition = disposition, mode = mode, position = pos:samples(),
    track = (track and not track:isnil()) and track:name() or '' }
  for f in files:iter() do call.files[#call.files + 1] = f end
  record.embeds[#record.embeds + 1] = call
  if mode == 'ImportAsTrack' then -- Ardour names the new track after the (first) file
    local name = call.files[1]:match('([^/]*)$'):gsub('%.%w+$', '')
    Session:new_audio_track(#call.files, 2, nil, 1, name, ARDOUR.PresentationInfo.max_order,
      ARDOUR.TrackMode.Normal, true)
  end
end
function Editor:add_location_mark(pos)
  record.marks[#record.marks + 1] = pos:samples()
end

LuaDialog = {
  MessageType = { Info = 'info', Warning = 'warning', Question = 'question', Error = 'error' },
  ButtonType = { OK = 'ok', Close = 'close', Cancel = 'cancel', Yes_No = 'yes_no' },
}
function LuaDialog.Message(title, text, kind, _buttons)
  return { run = function(_)
    record.messages[#record.messages + 1] = { title = title, text = text, kind = kind }
  end }
end
function LuaDialog.Dialog(title, fields)
  return { run = function(_)
    local keys = {}
    for _, field in ipairs(fields) do keys[#keys + 1] = field.key end
    record.dialogs[#record.dialogs + 1] = { title = title, keys = keys }
    if not opts.op or opts.op == '' then return nil end
    return { op = opts.op }
  end }
end
function LuaDialog.ProgressWindow(_title, _cancellable)
  return {
    progress = function(_, _fraction, _text) return opts.cancel == '1' end,
    done = function(_) record.progress_done = true end,
  }
end

-- the action, as Ardour runs it: its factory with the action's parameters, then the function
local chunk = assert(loadfile(action))
chunk()
factory(params)()

local lib_dir = os.getenv('MAEDAW_ARDOUR_SCRIPTS') .. '/maedaw/'
local lib = assert(loadfile(lib_dir .. 'maedaw_lib.lua'))(lib_dir)
record.regions = {}
for route in Session:get_tracks():iter() do
  record.tracks = record.tracks or {}
  table.insert(record.tracks, route:name())
  for region in route:to_track():playlist():region_list():iter() do
    table.insert(record.regions, region:name())
  end
end

-- JSON out (the library's writer handles flat objects; nest by hand)
local function list_of(items, fn)
  local parts = {}
  for _, item in ipairs(items) do parts[#parts + 1] = fn(item) end
  return '[' .. table.concat(parts, ', ') .. ']'
end
local out = assert(io.open(results, 'w'))
out:write('{"embeds": ', list_of(record.embeds, lib.json_object),
  ', "messages": ', list_of(record.messages, lib.json_object),
  ', "dialogs": ', list_of(record.dialogs, lib.json_object),
  ', "marks": ', list_of(record.marks, tostring),
  ', "regions": ', list_of(record.regions, lib.json_string),
  ', "tracks": ', list_of(record.tracks or {}, lib.json_string),
  ', "progress_done": ', tostring(record.progress_done), '}\n')
out:close()
Session:save_state('', false, false, false, false, false)
close_session()
