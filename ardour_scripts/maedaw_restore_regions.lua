ardour {
	["type"]    = "EditorAction",
	name        = "maedaw: Restore selected regions",
	license     = "MIT",
	author      = "maedaw",
	description = [[Asks for one restoration operation (declip, declick, bandwidth, denoise, dehum), sends each
selected audio region to the maedaw daemon (/maedaw/restore) and embeds each result on a new
track "<track> (maedaw <op>)" at the region's position; the original is left as it is.
A daemon that cannot do the operation answers with its error, shown as such.]]
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
	}
end

-- The action itself is maedaw/maedaw_gui.lua's run_action ("restore", ...). Ardour keeps a copy of
-- an action's code, not its path, so maedaw/ is looked for where `maedaw install-ardour`
-- puts it (the user script folder), on ARDOUR_LUA_PATH and in $MAEDAW_ARDOUR_SCRIPTS.
function factory (params) return function ()
	local scripts = ARDOUR.LuaAPI.build_filename (ARDOUR.user_config_directory (-1), "scripts")
	local path = (os.getenv ("MAEDAW_ARDOUR_SCRIPTS") or "") .. ":" ..
		(os.getenv ("ARDOUR_LUA_PATH") or "") .. ":" .. scripts
	for dir in path:gmatch ("[^:]+") do
		local here = dir .. "/maedaw/"
		if ARDOUR.LuaAPI.file_test (here .. "maedaw_gui.lua", ARDOUR.LuaAPI.FileTest.Exists) then
			return assert (loadfile (here .. "maedaw_gui.lua")) (here).run_action ("restore", params)
		end
	end
	LuaDialog.Message ("maedaw", "The maedaw script library was not found: run " ..
		"`maedaw install-ardour` (it copies it into " .. scripts .. ")",
		LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run ()
end end
