-- @description Teach a tag from selected items (your own tag, learnt from examples)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Asks for a tag name (proposing the items' common take name, e.g. items you named
--   "door creak") and sends the file span each selected item plays to the maedaw daemon
--   (/maedaw/teach) as an example of that tag. The tag lives in your tag library, beside the
--   bundled ones: from then on "Tag selected items", "Tag time selection" and `maedaw tag`
--   score it too. More examples can be added by running it again with the same name. The
--   project is not changed.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: teach a tag'

--- The take name all selected items share (as a tag name), or ''.
local function common_name()
  local common
  for i = 0, reaper.CountSelectedMediaItems(lib.proj) - 1 do
    local take = reaper.GetActiveTake(reaper.GetSelectedMediaItem(lib.proj, i))
    if not take then return '' end
    local _, name = reaper.GetSetMediaItemTakeInfo_String(take, 'P_NAME', '', false)
    name = lib.tag_name_of(name)
    if common and name ~= common then return '' end
    common = name
  end
  return common or ''
end

local function report(requests, outcome, name, skipped)
  local taught, total, lines = 0, nil, {}
  for _, r in ipairs(requests) do
    if r.state == 'done' then
      taught = taught + 1
      total = lib.json_field(r.summary or '', 'examples') or total
    else
      lines[#lines + 1] = string.format('"%s": %s: %s', r.name, tostring(r.code),
        tostring(r.message))
    end
  end
  for _, line in ipairs(skipped) do lines[#lines + 1] = line end
  local head = string.format('Taught "%s" from %d of %d item(s).', name, taught, #requests)
  if total then head = head .. string.format(' The tag has %d example(s).', total) end
  head = head .. lib.outcome_note(outcome)
  if lines[1] then head = head .. '\n\n' .. table.concat(lines, '\n') end
  reaper.ShowMessageBox(head, TITLE, 0)
end

local function main()
  if not lib.need_selected_items(TITLE, 'Select the example items first.') then return end
  local ok, answer = reaper.GetUserInputs(TITLE, 1, 'Tag name,extrawidth=120', common_name())
  if not ok then return end
  local name = answer:match('^%s*(.-)%s*$')
  if name == '' or #name > 64 or name:find('[%c/\\]') then
    reaper.ShowMessageBox('A tag name is 1-64 characters, without / \\ or control characters.',
      TITLE, 0)
    return
  end
  lib.run_action({
    title = TITLE,
    make = function(settings) return lib.teach_requests(settings, name) end,
    nothing = 'No item to learn from',
    done = function(requests, outcome, _, skipped) report(requests, outcome, name, skipped) end,
  })
end

main()
