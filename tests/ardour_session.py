"""A real Ardour 7 session driven from tests: create, add tracks, place audio, mute, export.

Uses Debian's ``ardour`` command-line tools (``ardour7-new_session``, ``ardour7-lua``,
``ardour7-export``). Headless Ardour has no call that imports a file, so audio is placed the
way Ardour itself stores it: in the session file, one ``<Source>`` per channel (the file and
the channel it reads), a whole-file ``<Region>`` under ``<Regions>`` and a ``<Region>`` in the
track's playlist. Ardour 7 stores times as superclock ticks (282 240 000 per second) with an
``a`` prefix (audio time); a length is ``a<length>@a<position>``.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from maedaw.dsp.audio_io import probe

SUPERCLOCK_PER_SECOND = 282_240_000
NEW_SESSION, LUA, EXPORT = "ardour7-new_session", "ardour7-lua", "ardour7-export"


def have_ardour() -> bool:
    return all(shutil.which(tool) for tool in (NEW_SESSION, LUA, EXPORT))


def run_tool(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs an Ardour tool; raises with its output if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"{command[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


ADD_TRACKS_LUA = """
AudioEngine:set_backend("None (Dummy)", "", "")
local s = assert(load_session(arg[1], arg[2]), "could not load the session")
for k = 3, #arg, 2 do
  s:new_audio_track(tonumber(arg[k + 1]), 2, nil, 1, arg[k], ARDOUR.PresentationInfo.max_order,
    ARDOUR.TrackMode.Normal, true)
end
-- Ardour connects new tracks to the master bus from another thread, a few cycles later:
-- saving before that would store them unconnected (and the export would not hear them)
ARDOUR.LuaAPI.wait_for_process_callback(8, 2000)
for k = 3, #arg, 2 do
  local track = s:route_by_name(arg[k])
  for n = 0, track:output():n_ports():n_audio() - 1 do
    assert(track:output():audio(n):connected(), arg[k] .. ": outputs not connected")
  end
end
s:save_state("", false, false, false, false, false)
close_session()
"""


class ArdourSession:
    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.file = folder / f"{name}.ardour"

    @classmethod
    def create(cls, folder: Path, name: str, rate: int, master_channels: int = 2):
        run_tool(NEW_SESSION, "-s", str(rate), "-m", str(master_channels), str(folder), name)
        return cls(folder, name)

    @property
    def rate(self) -> int:
        return int(ET.parse(self.file).getroot().get("sample-rate"))

    def lua(self, script: Path | str, *args: str, timeout: float = 120):
        """Runs ``ardour7-lua script SESSION_DIR SESSION_NAME args...``."""
        return run_tool(LUA, str(script), str(self.folder), self.name, *args, timeout=timeout)

    def add_tracks(self, *tracks: tuple[str, int]) -> None:
        """New audio tracks (name, channel count), outputs to the master bus."""
        script = self.folder.parent / f"{self.name}-add-tracks.lua"
        script.write_text(ADD_TRACKS_LUA)
        self.lua(script, *(str(x) for track in tracks for x in track))

    # --- the session file ----------------------------------------------------------------

    def _ticks(self, samples: int) -> int:
        # exact: 282 240 000 is a multiple of every common sample rate
        ticks, rest = divmod(samples * SUPERCLOCK_PER_SECOND, self.rate)
        assert rest == 0, f"{samples} samples at {self.rate} Hz are not whole superclock ticks"
        return ticks

    def place(
        self,
        track: str,
        files: list[tuple[Path, int]],
        start: int,
        length: int,
        position: int,
        name: str,
    ) -> None:
        """Puts a region on ``track``'s playlist: region channel k reads ``files[k]`` =
        (file, channel in that file), from sample ``start`` of the file, ``length`` samples
        long, at session sample ``position``. Extends the session range to cover it."""
        tree = ET.parse(self.file)
        root = tree.getroot()
        next_id = int(root.get("id-counter"))

        def new_id() -> str:
            nonlocal next_id
            next_id += 1
            return str(next_id)

        sources = []
        for path, channel in files:
            source_id = new_id()
            ET.SubElement(
                root.find("Sources"),
                "Source",
                {
                    "name": str(Path(path).resolve()),
                    "type": "audio",
                    "flags": "",
                    "id": source_id,
                    "channel": str(channel),
                    "origin": "",
                    "take-id": "",
                },
            )
            sources.append(source_id)
        whole_length = min(probe(path).frames for path, _ in files)

        def region(parent: ET.Element, whole: bool, first: int, count: int, at: int) -> None:
            attrs = {
                "name": name if not whole else f"{name}-whole",
                "whole-file": "1" if whole else "0",
                "start": f"a{self._ticks(first)}",
                "length": f"a{self._ticks(count)}@a{self._ticks(at)}",
                "id": new_id(),
                "type": "audio",
                "first-edit": "nothing",
                "channels": str(len(files)),
                "opaque": "1",
                "muted": "0",
            }
            for k, source_id in enumerate(sources):
                attrs[f"source-{k}"] = attrs[f"master-source-{k}"] = source_id
            ET.SubElement(parent, "Region", attrs)

        region(root.find("Regions"), True, 0, whole_length, 0)
        route = self._route(root, track)
        playlist = next(
            p for p in root.find("Playlists") if p.get("id") == route.get("audio-playlist")
        )
        region(playlist, False, start, length, position)
        self._cover(root, position + length, new_id)
        root.set("id-counter", str(next_id + 1))
        tree.write(self.file, xml_declaration=True, encoding="UTF-8")

    def _cover(self, root: ET.Element, end: int, new_id) -> None:
        """Session range from 0 to at least ``end`` (export renders the session range)."""
        locations = root.find("Locations")
        session_range = next(
            (loc for loc in locations if "IsSessionRange" in loc.get("flags", "")), None
        )
        if session_range is None:
            session_range = ET.SubElement(
                locations,
                "Location",
                {
                    "id": new_id(),
                    "name": "session",
                    "start": "a0",
                    "end": "a0",
                    "flags": "IsSessionRange",
                    "locked": "0",
                    "timestamp": "0",
                    "cue": "0",
                },
            )
        current = int(session_range.get("end").lstrip("a"))
        session_range.set("end", f"a{max(current, self._ticks(end))}")

    @staticmethod
    def _route(root: ET.Element, name: str) -> ET.Element:
        for route in root.find("Routes"):
            if route.get("name") == name:
                return route
        raise KeyError(f"no track named {name!r}")

    def mute(self, track: str) -> None:
        tree = ET.parse(self.file)
        route = self._route(tree.getroot(), track)
        route.find("MuteMaster").set("muted", "1")
        next(c for c in route.findall("Controllable") if c.get("name") == "mute").set("value", "1")
        tree.write(self.file, xml_declaration=True, encoding="UTF-8")

    def tracks(self) -> list[str]:
        routes = ET.parse(self.file).getroot().find("Routes")
        return [
            r.get("name")
            for r in routes
            if "AudioTrack" in r.find("PresentationInfo").get("flags", "")
        ]

    def export(self, output: Path, attempts: int = 4) -> Path:
        """The session range through the master bus, as 32-bit float WAV.

        Debian's ardour7-export 7.3 sometimes aborts as it tears the export down ("double
        free or corruption" in PortExportChannel::~PortExportChannel, about 1 run in 10 here):
        a run killed by a signal is repeated; any other failure is raised at once."""
        command = [EXPORT, "-b", "float", "-o", str(output), str(self.folder), self.name]
        for _ in range(attempts):
            output.unlink(missing_ok=True)
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            if done.returncode == 0 and "Done." in done.stdout:
                return output
            if done.returncode not in (-6, -11, 134, 139):  # SIGABRT / SIGSEGV
                break
        raise RuntimeError(f"{EXPORT} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
