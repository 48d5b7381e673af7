"""Optional API keys: ASGI middleware that lets a request in only with `Authorization: Bearer <key>`.

Keys come from an environment variable or a file (see `ApiKeysSource`); a file is re-read when its
modification time or size changes, so a rotated Kubernetes Secret takes effect without a restart. The
liveness probe (/health) stays open. Keys are compared in constant time, each against every key.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any, Optional

from .args import ApiKeysSource
from .body_limit import Receive, Scope, Send
from .errors import error_json

OPEN_PATHS = frozenset({"/health"})
RECHECK_S = 1.0  # how often a key file's stat is looked at, at most


def _parse(text: str) -> list[bytes]:
    keys = []
    for line in text.replace(",", "\n").splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.append(key.encode())
    return keys


class KeySet:
    """The current keys; raises at start when the source holds none (a typo must not mean 'open')."""

    def __init__(self, source: ApiKeysSource):
        self.source = source
        self._stamp: Optional[tuple[float, int]] = None
        self._checked = 0.0
        self._keys = self._load()
        if not self._keys:
            where = f"environment variable {source.env}" if source.env else f"file {source.file}"
            raise ValueError(f"ingress.api_keys: no keys in {where}")

    def _load(self) -> list[bytes]:
        if self.source.env is not None:
            return _parse(os.environ.get(self.source.env, ""))
        assert self.source.file is not None
        st = os.stat(self.source.file)
        self._stamp = (st.st_mtime, st.st_size)
        with open(self.source.file, encoding="utf-8") as f:
            return _parse(f.read())

    def current(self) -> list[bytes]:
        now = time.monotonic()
        if self.source.file is not None and now - self._checked >= RECHECK_S:
            self._checked = now
            try:
                st = os.stat(self.source.file)
                if (st.st_mtime, st.st_size) != self._stamp:
                    self._keys = self._load() or self._keys  # an empty rewrite mid-rotation keeps the old keys
            except OSError:
                pass  # a Secret volume swaps its symlink: keep the keys until the new file is there
        return self._keys

    def allows(self, presented: bytes) -> bool:
        ok = False
        for key in self.current():  # no early exit: the time taken does not say which key matched
            ok |= hmac.compare_digest(presented, key)
        return ok


class ApiKeyAuth:
    def __init__(self, app: Any, keys: KeySet):
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # under a route prefix the path comes with it
            path = path[len(root):]
        if scope["type"] != "http" or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip() and self.keys.allows(token.strip()):
            await self.app(scope, receive, send)
            return
        message = "missing API key: send Authorization: Bearer <key>" if not header else "invalid API key"
        response = error_json(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
