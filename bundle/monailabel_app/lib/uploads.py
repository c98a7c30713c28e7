"""Uploads to the MONAI Label server: a size limit, a private folder, and a copy removed on every outcome.

MONAI Label 0.8 copies every uploaded file to ``tempfile.NamedTemporaryFile(...).name`` in the system
temporary folder and removes it in a background task that only runs after a successful response:
a refused upload (400, 404, 500) stays on disk forever, the whole body is received before any check,
and the app could not tell the request's own upload from any other ``tmp*`` file there. This module

- puts each upload in a private folder (mode 0700) and records it as *this request's* upload
  (a context variable: the endpoints run the copy and the inference in one task), so
  :func:`is_own_upload` accepts exactly that file (:func:`lib.guards.inferable_image`);
- answers a request whose body is over the limit with 413 before reading it (an ASGI wrapper
  around the running server; chunked bodies are counted as they arrive);
- lets the app remove the copy whatever happens (:func:`discard`).
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

__all__ = ["UploadFolder", "install", "is_own_upload", "discard", "current_uploads", "redact", "DEFAULT_LIMIT_MB"]

DEFAULT_LIMIT_MB = 64.0  # an ultrasound frame is a few MB even as uncompressed DICOM
_current: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("fetal_nt_uploads", default=())
SAFE_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,8}){1,2}")


class UploadFolder:
    """A stand-in for the ``tempfile`` module of MONAI Label's endpoints: uploads land in one private folder.

    Args:
        root: the private folder (created with mode 0700 when missing).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def NamedTemporaryFile(self, suffix: str = "", **_) -> SimpleNamespace:  # noqa: N802 - the function it replaces
        """A fresh path in the folder (only ``.name`` is used by the endpoints); recorded as this request's upload."""
        suffix = suffix if SAFE_SUFFIX.fullmatch(suffix or "") else ".upload"
        path = self.root / f"upload_{secrets.token_hex(8)}{suffix}"
        _current.set((*_current.get(), str(path)))
        return SimpleNamespace(name=str(path))

    def __getattr__(self, name: str):
        return getattr(tempfile, name)  # everything else as the real module

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is a file directly in the folder."""
        candidate = Path(path)
        return candidate.parent.resolve() == self.root.resolve() and candidate.is_file()


_folder: UploadFolder | None = None


def current_uploads() -> tuple[str, ...]:
    """The paths of the files uploaded with the request being handled."""
    return _current.get()


def is_own_upload(path: object) -> bool:
    """Whether ``path`` is an upload of the request being handled (and nothing else: not another request's)."""
    return _folder is not None and isinstance(path, str) and path in _current.get() and _folder.contains(path)


def discard(*paths: object) -> None:
    """Remove this request's uploads and the given paths (only files of the private folder)."""
    for path in (*_current.get(), *paths):
        if _folder is not None and isinstance(path, str) and _folder.contains(path):
            Path(path).unlink(missing_ok=True)
    _current.set(())


def redact(text: str) -> str:
    """``text`` without server paths: the upload folder and the system temporary folder become ``<upload>``."""
    for folder in filter(None, (str(_folder.root) if _folder else "", tempfile.gettempdir())):
        text = re.sub(re.escape(folder) + r"[^\s:;,'\"]*", "<upload>", text)
    return text


class _SizeLimit:
    """ASGI wrapper: 413 for a request body over ``limit`` bytes, before (or while) it is received."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.limit:
            await self._refuse(send, declared)
            return
        received, started = 0, False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLargeError(received)
            return message

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLargeError as error:
            if not started:
                await self._refuse(send, error.size)

    async def _refuse(self, send, size: int) -> None:
        limit_mb = self.limit / 2**20
        detail = (
            f"the upload is over the server's limit of {limit_mb:g} MB ({size / 2**20:.1f} MB received or declared); "
            "send one ultrasound frame (PNG, JPEG, BMP, TIFF, DICOM or NIfTI), or start the server with a larger "
            "--conf upload_limit_mb"
        )
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLargeError(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def install(limit_mb: float = DEFAULT_LIMIT_MB) -> UploadFolder:
    """Route the endpoints' uploads to a private folder and wrap the running server with the size limit.

    Args:
        limit_mb: largest request body accepted, in MB (``--conf upload_limit_mb``).

    Returns:
        the upload folder (removed with its content at interpreter exit).
    """
    import atexit

    global _folder
    if _folder is None:
        _folder = UploadFolder(tempfile.mkdtemp(prefix="fetal_nt_uploads_"))
        atexit.register(shutil.rmtree, _folder.root, True)
    from monailabel.endpoints import datastore as datastore_endpoints
    from monailabel.endpoints import infer as infer_endpoints

    infer_endpoints.tempfile = _folder
    datastore_endpoints.tempfile = _folder
    try:
        from monailabel.app import app as server
    except Exception:  # noqa: BLE001 - outside a running server (tests of the app object) there is nothing to wrap
        return _folder
    if server.middleware_stack is None:
        server.middleware_stack = server.build_middleware_stack()
    if not isinstance(server.middleware_stack, _SizeLimit):
        server.middleware_stack = _SizeLimit(server.middleware_stack, int(float(limit_mb) * 2**20))
    return _folder
