"""Service files, so the daemon starts with the user's session.

``maedaw service systemd`` prints a systemd *user* unit; ``maedaw service
launchd`` a launchd agent plist for macOS. Both run the ``maedaw`` executable
that printed them, so a virtual environment keeps working.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from xml.sax.saxutils import escape


def _executable() -> str:
    found = shutil.which("maedaw")
    return found or f"{sys.executable} -m maedaw.bridge.cli"


def systemd_unit(port: int = 9000) -> str:
    return f"""# ~/.config/systemd/user/maedaw.service
# Install: systemctl --user daemon-reload && systemctl --user enable --now maedaw
[Unit]
Description=maedaw: Audio-MAE repair daemon for the DAW (OSC on 127.0.0.1:{port})

[Service]
Type=simple
ExecStart={_executable()} serve --port {port}
# SIGTERM lets the running job finish (up to --grace seconds) before exit.
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=2

[Install]
WantedBy=default.target
"""


def launchd_plist(port: int = 9000) -> str:
    args = [*_executable().split(), "serve", "--port", str(port)]
    program = "\n".join(f"        <string>{escape(a)}</string>" for a in args)
    log = escape(str(Path("~/Library/Logs/maedaw.log").expanduser()))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- ~/Library/LaunchAgents/org.maedaw.serve.plist
     Install: launchctl load ~/Library/LaunchAgents/org.maedaw.serve.plist -->
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN"
  "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>org.maedaw.serve</string>
    <key>ProgramArguments</key>
    <array>
{program}
    </array>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <dict><key>SuccessfulExit</key><false/></dict>
    <key>StandardErrorPath</key>
    <string>{log}</string>
</dict>
</plist>
"""
