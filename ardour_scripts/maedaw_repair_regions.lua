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

-- The settings Ardour asks for when the action is added (Edit > Lua Scripts > Script Manager).
-- Ardour runs this function in a sandbox without file access, so the table cannot come from the
-- library: it is the same in the three actions, in step with maedaw_lib.lua's DEFAULTS.
function action_params ()
	return {
		["host"]      = { title = "maedaw daemon host", default = "127.0.0.1" },
		["port"]      = { title = "maedaw daemon port", default = "9000" },
		["token"]     = { title = "Daemon token (blank: this machine's; `maedaw token` on a studio server)", default = "", optional = true },
		["helper"]    = { title = "maedaw command (full path if Ardour does not find it)", default = "maedaw" },
		["out_dir"]   = { title = "Output folder (blank: <session folder>/maedaw)", default = "", optional = true },
		["format"]    = { title = "Stem format (wav or flac)", default = "wav" },
		["timeout_s"] = { title = "Job timeout in seconds", default = "600" },
		["sensitivity"] = { title = "Repair sensitivity (low, normal or high)", default = "normal" },
	}
end

-- The action itself is maedaw/maedaw_gui.lua's run_action ("repair", ...). Ardour keeps a copy of
-- an action's code, not its path, so maedaw/ is looked for where `maedaw install-ardour`
-- puts it (the user script folder), on ARDOUR_LUA_PATH and in $MAEDAW_ARDOUR_SCRIPTS.
function factory (params) return function ()
	local scripts = ARDOUR.LuaAPI.build_filename (ARDOUR.user_config_directory (-1), "scripts")
	local path = (os.getenv ("MAEDAW_ARDOUR_SCRIPTS") or "") .. ":" ..
		(os.getenv ("ARDOUR_LUA_PATH") or "") .. ":" .. scripts
	for dir in path:gmatch ("[^:]+") do
		local here = dir .. "/maedaw/"
		if ARDOUR.LuaAPI.file_test (here .. "maedaw_gui.lua", ARDOUR.LuaAPI.FileTest.Exists) then
			return assert (loadfile (here .. "maedaw_gui.lua")) (here).run_action ("repair", params)
		end
	end
	LuaDialog.Message ("maedaw", "The maedaw script library was not found: run " ..
		"`maedaw install-ardour` (it copies it into " .. scripts .. ")",
		LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
end end
