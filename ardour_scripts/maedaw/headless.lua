-- maedaw headless runner for Ardour: the editor actions' request code without the GUI.
--
--   ardour7-lua headless.lua SESSION_DIR SESSION_NAME [key=value ...]
--
-- keys: kind=repair|restore|tag (repair), op=<restore op>, track=<only this track's regions>,
--       host=, port=, helper=, out_dir=, format=, timeout_s=, ping_timeout_s= (as the actions),
--       results=<file> (one JSON object per request), write_back=1 (see below),
--       cancel_after_accepted=1 (cancel every job as soon as it is accepted).
--
-- Every audio region on every track (or on `track`) is sent, as the actions send the selected
-- regions, through the same library (maedaw_lib.lua beside this file). With write_back=1,
-- tags go to the region names, and each track with a finished stem gets a new, empty track
-- "<track> (maedaw <kind>)" beside it; the session is saved. Headless Ardour has no import call,
-- so the caller places the stems on that track (e.g. through the session file); the results
-- say where each stem belongs (position, new_track). The exit status is 0 when every request
-- got a final answer (done or the daemon's error), 1 on a usage or connection problem.

local function script_dir()
  local source = debug and debug.getinfo(1, 'S').source or ''
  return source:match('^@(.*/)') or './'
end

local lib_path = os.getenv('MAEDAW_ARDOUR_LIB') or (script_dir() .. 'maedaw_lib.lua')
local lib = assert(loadfile(lib_path))(lib_path:match('^(.*/)') or './')

local function fail(message)
  error('maedaw: ' .. message, 0) -- ardour7-lua prints it and exits with status 1
end

local session_dir, session_name = arg[1], arg[2]
if not session_dir or not session_name then
  fail('usage: ardour7-lua headless.lua SESSION_DIR SESSION_NAME [key=value ...]')
end
local opts = {}
for k = 3, #arg do
  local key, value = arg[k]:match('^([%w_]+)=(.*)$')
  if not key then fail('not key=value: ' .. arg[k]) end
  opts[key] = value
end
local kind = opts.kind or 'repair'
if kind ~= 'repair' and kind ~= 'restore' and kind ~= 'tag' then fail('unknown kind ' .. kind) end
if kind == 'restore' and not opts.op then fail('kind=restore needs op=<restore operation>') end
local settings, why = lib.settings(opts)
if not settings then fail(why) end

-- No audio hardware and no display: the "None (Dummy)" backend runs the engine on a timer.
AudioEngine:set_backend('None (Dummy)', '', '')
local session = load_session(session_dir, session_name)
if not session then fail('could not load the session ' .. session_dir .. ' / ' .. session_name) end
local rate = session:nominal_sample_rate()
local ok, err = lib.resolve_out_dir(settings, session)
if not ok then close_session() fail(err) end

-- "the selection": every audio region of every (chosen) track, in track order
local requests = {}
for route in session:get_tracks():iter() do
  local track = route:to_track()
  if not opts.track or route:name() == opts.track then
    for region in track:playlist():region_list():iter() do
      local reqs, skip = lib.region_requests(region, rate)
      if not reqs then
        print(string.format('skipping %s: %s', region:name(), skip))
      else
        for _, req in ipairs(reqs) do
          req.track, req.track_channels, req.region = route:name(), route:n_inputs():n_audio(), region
          requests[#requests + 1] = req
        end
      end
    end
  end
end
if #requests == 0 then close_session() fail('no audio regions to send') end

local last_line
local ui = {
  progress = function(fraction, text) -- a line whenever the state changes; never cancels
    local line = string.format('%5.1f%% %s', 100 * fraction, text)
    if line ~= last_line then print(line) last_line = line end
    return false
  end,
}
if opts.cancel_after_accepted == '1' then
  ui.on_accepted = function(req) lib.send_cancel(settings, req.client_job, settings.out_dir) end
end

local finished
finished, why = lib.run(settings, kind, requests, ui, opts.op)
if not finished then
  close_session()
  fail(why)
end

if opts.write_back == '1' then
  local new_tracks = {}
  for _, req in ipairs(finished) do
    if req.state == 'done' and kind == 'tag' then
      req.region:set_name(lib.name_with_tags(req.region:name(), lib.tags_of(req)))
    elseif req.state == 'done' then
      local name = string.format('%s (maedaw %s)', req.track, opts.op or kind)
      if not new_tracks[name] then
        local made = session:new_audio_track(req.track_channels, 2, nil, 1, name,
          ARDOUR.PresentationInfo.max_order, ARDOUR.TrackMode.Normal, true)
        for t in made:iter() do
          lib.settle_new_track(session, t)
          new_tracks[name] = t:name()
        end
      end
      req.new_track = new_tracks[name]
    end
  end
  session:save_state('', false, false, false, false, false)
end

local out = opts.results and assert(io.open(opts.results, 'w'))
for _, req in ipairs(finished) do
  print(lib.describe(req))
  if out then
    out:write(lib.json_object({
      client_job = req.client_job, job_id = req.job_id, state = req.state, code = req.code,
      message = req.message, stem = req.stem, report = req.report, summary = req.summary,
      file = req.file, channels = req.channels, region_channels = req.region_channels,
      region_name = req.region and req.region:name() or req.region_name, track = req.track,
      new_track = req.new_track, position = req.position, start = req.start,
      length = req.length, rate = req.rate, start_s = req.start_s, end_s = req.end_s,
      tags = kind == 'tag' and req.state == 'done' and lib.tags_of(req) or nil,
    }) .. '\n')
  end
end
if out then out:close() end
close_session()
