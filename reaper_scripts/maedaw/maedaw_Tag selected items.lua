-- @description Tag selected items (what is in them: dialogue, drums, rain, ...)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Sends the file span each selected item plays to the maedaw daemon (/maedaw/tag) and
--   writes the answer back in one undo point: the confident tags (score >= 0.5, else the
--   best one) as a "[tags: ...]" suffix of the active take's name (replacing an earlier
--   maedaw suffix), and every returned tag with its score on a "maedaw tags:" line of the
--   item notes (replacing an earlier such line; other notes are kept). Audio is not touched.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: tag items'
local TOP_K = 5
local CONFIDENT = 0.5

local function name_with_tags(name, tags)
  local chosen = lib.confident_labels(tags, CONFIDENT)
  local bare = name:gsub('%s*%[tags: [^%]]*%]$', '')
  return bare .. ' [tags: ' .. table.concat(chosen, ', ') .. ']'
end

local function notes_with_tags(notes, tags)
  local parts = {}
  for _, t in ipairs(tags) do parts[#parts + 1] = string.format('%s %.2f', t.label, t.score) end
  local line = 'maedaw tags: ' .. table.concat(parts, ', ')
  local kept = {}
  for l in (notes .. '\n'):gmatch('(.-)\r?\n') do
    if not l:match('^maedaw tags:') then kept[#kept + 1] = l end
  end
  while kept[#kept] == '' do kept[#kept] = nil end
  kept[#kept + 1] = line
  return table.concat(kept, '\n')
end

local function write_tags(requests, outcome)
  local lines, tagged = {}, {}
  for _, r in ipairs(requests) do
    local tags = r.state == 'done' and lib.parse_tags(r.summary) or {}
    if r.state ~= 'done' then
      lines[#lines + 1] = string.format('"%s": %s: %s', r.name, tostring(r.code), tostring(r.message))
    elseif not tags[1] then
      lines[#lines + 1] = string.format('"%s": no tags came back', r.name)
    elseif not (lib.project_open() and reaper.ValidatePtr2(lib.proj, r.item, 'MediaItem*')
        and reaper.ValidatePtr2(lib.proj, r.take, 'MediaItem_Take*')) then
      lines[#lines + 1] = string.format('"%s": the item was deleted meanwhile', r.name)
    else
      tagged[#tagged + 1] = { r = r, tags = tags }
      local parts = {}
      for _, t in ipairs(tags) do parts[#parts + 1] = string.format('%s %.2f', t.label, t.score) end
      lines[#lines + 1] = string.format('"%s": %s', r.name, table.concat(parts, ', '))
    end
  end
  if tagged[1] then -- no undo point when nothing changes
    reaper.Undo_BeginBlock2(lib.proj)
    for _, t in ipairs(tagged) do
      local _, name = reaper.GetSetMediaItemTakeInfo_String(t.r.take, 'P_NAME', '', false)
      reaper.GetSetMediaItemTakeInfo_String(t.r.take, 'P_NAME', name_with_tags(name, t.tags), true)
      local _, notes = reaper.GetSetMediaItemInfo_String(t.r.item, 'P_NOTES', '', false)
      reaper.GetSetMediaItemInfo_String(t.r.item, 'P_NOTES', notes_with_tags(notes, t.tags), true)
    end
    reaper.UpdateArrange()
    reaper.Undo_EndBlock2(lib.proj, string.format('maedaw: tag (%d item(s))', #tagged), 4) -- 4: items
  end
  local head = string.format('%d of %d item(s) tagged.', #tagged, #requests)
  head = head .. lib.outcome_note(outcome)
  reaper.ShowMessageBox(head .. '\n\n' .. table.concat(lines, '\n'), TITLE, 0)
end

local function main()
  if not lib.need_selected_items(TITLE) then return end
  lib.run_action({
    title = TITLE,
    make = function(settings) return lib.tag_requests(settings, TOP_K) end,
    nothing = 'Nothing to tag',
    done = write_tags,
  })
end

main()
