"""Who may talk to the daemon: a per-user secret token, and signed, replay-checked requests.

The daemon creates a random token on its first start (``<state dir>/token``, mode 0600);
every request then travels inside an ``/maedaw/auth`` envelope that carries a nonce, the
sender's clock and an HMAC-SHA256 of all three plus the request under that token. The token
itself never crosses the wire. Local clients read the token file, so one machine stays
zero-config; a studio client is given the token once (docs/security.md). The daemon checks
the HMAC in constant time, refuses a clock outside the window and a nonce it has already
seen inside it, and only then parses the request.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections import OrderedDict
from pathlib import Path

from pythonosc.osc_message import OscMessage, ParseError
from pythonosc.osc_message_builder import build_msg

from maedaw.core.errors import MaedawError

from .contract import Address

AUTH_ADDRESS = str(Address.AUTH)
TOKEN_NAME = "token"
MAC_CONTEXT = b"maedaw-auth/1\n"  # what is signed starts with this, so a MAC means one thing
WINDOW_S = 120.0  # a request signed further than this from the daemon's clock is refused
MAX_NONCES = 65_536  # seen nonces remembered (more than WINDOW_S of any studio's traffic)
NONCE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
TOKEN = re.compile(r"[A-Za-z0-9_\-]{32,256}")


class AuthError(MaedawError):
    """A request without a valid signature; the message says why (never the token)."""


# --- the token file ----------------------------------------------------------------------


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_NAME


def read_token(path: Path) -> str:
    """The token in ``path``; AuthError when it is missing, malformed, or readable by others
    (a token another user can read authenticates that user as you)."""
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"cannot read the token file {path}: {exc}") from exc
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthError(f"the token file {path} is readable by other users; chmod 600 it")
    if not TOKEN.fullmatch(text):
        raise AuthError(f"the token file {path} does not hold a token (32+ letters and digits)")
    return text


def ensure_token(state_dir: Path) -> str:
    """The daemon's token, created (0600, never readable by anyone else, not even for an
    instant) on the first start."""
    path = token_path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # a new one: the user's alone
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return read_token(path)


def client_token(token_file: Path | None = None, state_dir: Path | None = None) -> str | None:
    """The token a local client signs with: ``token_file`` when given (an error if it is not
    usable), else ``$MAEDAW_TOKEN``, else the token of the daemon of ``state_dir`` (default:
    the user's), else None (the request then goes unsigned, and a daemon that needs a token
    says ``forbidden``)."""
    if token_file is not None:
        return read_token(token_file)
    if text := os.environ.get("MAEDAW_TOKEN", "").strip():
        if not TOKEN.fullmatch(text):
            raise AuthError("MAEDAW_TOKEN does not hold a token (32+ letters and digits)")
        return text
    from .paths import default_state_dir

    with contextlib.suppress(AuthError):
        return read_token(token_path(state_dir or default_state_dir()))
    return None


# --- signing and checking ----------------------------------------------------------------


def mac(token: str, nonce: str, when: str, packet: bytes) -> str:
    message = MAC_CONTEXT + nonce.encode() + b"\n" + when.encode() + b"\n" + packet
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def seal(packet: bytes, token: str, now: float | None = None, nonce: str | None = None) -> bytes:
    """``packet`` (one OSC message or bundle) inside a signed ``/maedaw/auth`` envelope."""
    nonce = nonce or secrets.token_hex(12)
    when = str(int(time.time() if now is None else now))
    return build_msg(AUTH_ADDRESS, [nonce, when, mac(token, nonce, when, packet), packet]).dgram


def is_sealed(packet: bytes) -> bool:
    return packet.startswith(AUTH_ADDRESS.encode() + b"\0")


def inner(packet: bytes) -> bytes:
    """The request inside an envelope (unchecked: for clients routing their own packets),
    or ``packet`` itself when it is not one."""
    if is_sealed(packet):
        with contextlib.suppress(ParseError, ValueError, IndexError):
            body = OscMessage(packet).params[3]
            if isinstance(body, bytes):
                return body
    return packet


class Verifier:
    """Opens envelopes: HMAC compared in constant time, clock within ``window_s`` of ours,
    nonce not seen before. Seen nonces are kept while their time is in the window; when more
    than ``max_nonces`` are, the oldest are forgotten and nothing signed at or before their
    time is accepted any more (a forgotten nonce can never be replayed)."""

    def __init__(
        self, token: str, window_s: float = WINDOW_S, max_nonces: int = MAX_NONCES
    ) -> None:
        self.token = token
        self.window_s, self.max_nonces = window_s, max_nonces
        self._seen: OrderedDict[str, int] = OrderedDict()  # nonce -> its time, oldest first
        self._floor = -1  # requests signed at or before this time are refused

    def open(self, packet: bytes, now: float | None = None) -> bytes:
        """The request inside ``packet``, or AuthError saying why it is refused."""
        if not is_sealed(packet):
            raise AuthError("this daemon needs a token: the request is not signed")
        try:
            params = OscMessage(packet).params
        except (ParseError, ValueError, IndexError) as exc:
            raise AuthError(f"the signed envelope is malformed: {exc}") from exc
        if len(params) != 4 or not all(isinstance(p, str) for p in params[:3]):
            raise AuthError("the signed envelope must be: s nonce, s time, s mac, b request")
        nonce, when, given, body = params
        if not isinstance(body, bytes) or not NONCE.fullmatch(nonce) or not when.isdigit():
            raise AuthError("the signed envelope must be: s nonce, s time, s mac, b request")
        if not hmac.compare_digest(given.encode(), mac(self.token, nonce, when, body).encode()):
            raise AuthError("wrong token: the request's signature does not match")
        now = time.time() if now is None else now
        signed = int(when)
        if abs(now - signed) > self.window_s:
            raise AuthError(
                f"the request was signed {now - signed:+.0f} s from the daemon's clock "
                f"(more than {self.window_s:.0f} s): a replay, or clocks out of step"
            )
        self._forget(now)
        if nonce in self._seen or signed <= self._floor:
            raise AuthError("a replayed request: this nonce was already used")
        self._seen[nonce] = signed
        while len(self._seen) > self.max_nonces:
            _, dropped = self._seen.popitem(last=False)
            self._floor = max(self._floor, dropped)
        return body

    def _forget(self, now: float) -> None:
        """Drop nonces whose time has left the window: the clock check refuses them now."""
        while self._seen:
            nonce, signed = next(iter(self._seen.items()))
            if now - signed <= self.window_s:
                return
            del self._seen[nonce]
