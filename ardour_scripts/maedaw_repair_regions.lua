ardour {
	["type"]    = "EditorAction",
	name        = "maedaw: Repair selected regions",
	license     = "MIT",
	author      = "maedaw",
	description = [[Sends each selected audio region to the maedaw daemon (/maedaw/repair): dropouts, level
drops, clicks and clipping are found and repaired. Each result is embedded on a new track
"<track> (maedaw repair)" at the region's position, sample-aligned with the original,
which is left as it is: mute/solo to compare. Needs `maedaw serve` running.]]
}

-- Settings, asked once when the action is added in Edit > Lua Scripts > Script Manager.
-- (Ardour reads this function in a sandbox without file access, so the table is written out
-- here rather than taken from the library; keep it in step with maedaw_lib.lua DEFAULTS.)
function action_params ()
	return {
		["host"]      = { title = "maedaw daemon host", default = "127.0.0.1" },
		["port"]      = { title = "maedaw daemon port", default = "9000" },
		["helper"]    = { title = "maedaw command (full path if Ardour does not find it)", default = "maedaw" },
		["out_dir"]   = { title = "Output folder (blank: <session folder>/maedaw)", default = "", optional = true },
		["format"]    = { title = "Stem format (wav or flac)", default = "wav" },
		["timeout_s"] = { title = "Job timeout in seconds", default = "600" },
	}
end

function factory (params) return function ()
	-- The shared code lives in maedaw/ beside this script (Ardour does not scan subfolders).
	-- Ardour keeps a copy of an action's code, not its path, so the folder is searched for.
	local function find_library ()
		local dirs = { os.getenv ("MAEDAW_ARDOUR_SCRIPTS") }
		for dir in (os.getenv ("ARDOUR_LUA_PATH") or ""):gmatch ("[^:]+") do dirs[#dirs + 1] = dir end
		dirs[#dirs + 1] = ARDOUR.LuaAPI.build_filename (ARDOUR.user_config_directory (-1), "scripts")
		for _, dir in ipairs (dirs) do
			local lib = ARDOUR.LuaAPI.build_filename (dir, "maedaw", "maedaw_lib.lua")
			local gui = ARDOUR.LuaAPI.build_filename (dir, "maedaw", "maedaw_gui.lua")
			if ARDOUR.LuaAPI.file_test (lib, ARDOUR.LuaAPI.FileTest.Exists) then
				return assert (loadfile (lib)) (), assert (loadfile (gui)) ()
			end
		end
		return nil
	end

	local lib, gui = find_library ()
	if not lib then
		LuaDialog.Message ("maedaw", "The maedaw script library was not found: copy the folder " ..
			"ardour_scripts/maedaw into " .. ARDOUR.user_config_directory (-1) .. "/scripts/",
			LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
		return
	end
	gui.run_action (lib, "repair", params)
end end
