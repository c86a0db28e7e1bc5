-- @description Find items similar to the selected one (select the closest matches)
-- @author maedaw
-- @version 0.1.0
-- @noindex
-- @about
--   Sends the file span the selected item plays and every other audio item of the project to
--   the maedaw daemon (/maedaw/similar), which ranks them by how alike they sound (Audio-MAE
--   clip embeddings, cosine similarity). The selected item and its closest matches end up
--   selected, and a message lists them with their similarity. Nothing else in the project
--   changes. With several items selected, the first one is the query.

local lib = dofile(debug.getinfo(1, 'S').source:match('^@?(.*[/\\])') .. 'maedaw_lib.lua')

local TITLE = 'maedaw: find similar items'
local TOP_K = 5

local function select_matches(request, outcome, notes)
  if request.state ~= 'done' then
    local why = lib.outcome_note(outcome)
    if why == '' then why = string.format(' %s: %s', tostring(request.code), tostring(request.message)) end
    reaper.ShowMessageBox('No ranking came back.' .. why, TITLE, 0)
    return
  end
  local ranked, skipped = lib.parse_similar(request.summary)
  local lines, chosen = {}, {}
  for n, r in ipairs(ranked) do
    local c = request.candidates[r.id]
    if c and reaper.ValidatePtr2(lib.proj, c.item, 'MediaItem*') then
      chosen[#chosen + 1] = c.item
      lines[#lines + 1] = string.format('%d. %s  (%.2f)', n, c.name, r.similarity)
    end
  end
  if not chosen[1] then
    reaper.ShowMessageBox('Nothing to compare with came back.', TITLE, 0)
    return
  end
  -- one undo point: REAPER can undo selection changes when the user's preference says so
  reaper.Undo_BeginBlock2(lib.proj)
  reaper.PreventUIRefresh(1)
  reaper.SelectAllMediaItems(lib.proj, false)
  if reaper.ValidatePtr2(lib.proj, request.item, 'MediaItem*') then
    reaper.SetMediaItemSelected(request.item, true)
  end
  for _, item in ipairs(chosen) do reaper.SetMediaItemSelected(item, true) end
  reaper.PreventUIRefresh(-1)
  reaper.UpdateArrange()
  reaper.Undo_EndBlock2(lib.proj, string.format('maedaw: select %d similar item(s)', #chosen), -1)
  local text = string.format('Most similar to "%s":\n\n%s', request.name, table.concat(lines, '\n'))
  if skipped > 0 then text = text .. string.format('\n\n%d item(s) could not be read.', skipped) end
  if notes[1] then text = text .. '\n\n' .. table.concat(notes, '\n') end
  reaper.ShowMessageBox(text, TITLE, 0)
end

local function main()
  if not lib.need_selected_items(TITLE, 'Select the item to compare first.') then return end
  lib.run_action({
    title = TITLE,
    make = function(settings)
      local request, notes, left_out = lib.similar_request(settings, TOP_K)
      if left_out > 0 then
        notes[#notes + 1] = string.format('%d item(s) not compared (request size limit).', left_out)
      end
      return request and { request } or {}, notes
    end,
    nothing = 'Nothing to compare with',
    done = function(requests, outcome, _, notes) select_matches(requests[1], outcome, notes) end,
  })
end

main()
