"""Streaming multipart uploads: each file goes to a spool file chunk by chunk, hashed as it goes.

Nothing is held whole in memory. The spool files have names the server picks (`part-<n>`) in
a private temporary folder; the name a client gives is kept only as text (`display_name`),
never used as a path. Past `max_file_bytes` for one file, `max_request_bytes` for the body or
`max_files` files, `UploadTooLarge` is raised at once and the spool folder is removed, so a
refused upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from workers.services.uploads import Upload

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")
#: Longest name kept for an uploaded file.
MAX_NAME_CHARS = 255


class UploadTooLarge(Exception):
    """The body, a file, or the number of files is past its limit (HTTP 413)."""


class BadUpload(Exception):
    """The body is not a multipart form this endpoint reads (HTTP 400)."""


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_request_bytes: int
    max_files: int


def readable_bytes(count: int) -> str:
    """`2 GB (2147483648 bytes)`: a limit as people read it, with the exact figure."""
    size = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            break
        size /= 1024
    return f"{count} bytes" if unit == "bytes" else f"{size:.3g} {unit} ({count} bytes)"


def display_name(raw: str, position: int) -> str:
    """The client's file name as text to show: its last path component, printable, bounded."""
    last = re.split(r"[\\/]", raw)[-1]
    cleaned = "".join(ch for ch in last if unicodedata.category(ch)[0] != "C").strip()
    name = cleaned or f"upload-{position}"
    if len(name) <= MAX_NAME_CHARS:
        return name
    # Cut the stem, not the extension the file's type is read from.
    suffix = safe_suffix(name)
    return name[: MAX_NAME_CHARS - len(suffix)] + name[len(name) - len(suffix) :]


def safe_suffix(name: str) -> str:
    """`.mp4` for `clip.MP4`; empty unless the extension is 1 to 8 letters and digits."""
    dot = name.rfind(".")
    suffix = name[dot:] if dot > 0 else ""
    return suffix.lower() if _SUFFIX.fullmatch(suffix) else ""


@dataclass
class ParsedForm:
    """What a multipart body held: the spooled files and the small text fields."""

    folder: Path
    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _FormReader:
    """python-multipart callbacks that spool the `files` parts and collect text fields."""

    MAX_FIELD_BYTES = 4096

    def __init__(self, folder: Path, limits: UploadLimits) -> None:
        self.form = ParsedForm(folder=folder)
        self.limits = limits
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._handle: IO[bytes] | None = None
        self._digest = hashlib.sha256()
        self._size = 0
        self._text = bytearray()
        self.error: Exception | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._header_field = self._header_value = b""

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise BadUpload("each part needs a Content-Disposition: form-data with a name")
        self._name = params[b"name"].decode("utf-8", "replace")
        raw = params.get(b"filename")
        self._filename = None if raw is None else raw.decode("utf-8", "replace")
        self._text = bytearray()
        if self._filename is not None:
            if self._name != "files":
                raise BadUpload(f"files go in the form field 'files', not {self._name!r}")
            if len(self.form.files) >= self.limits.max_files:
                raise UploadTooLarge(
                    f"at most {self.limits.max_files} files per upload; choose fewer"
                )
            path = self.form.folder / f"part-{len(self.form.files)}"
            self._handle = open(path, "wb")  # noqa: SIM115 - closed in _part_end or cleanup
            self._digest = hashlib.sha256()
            self._size = 0

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._handle is None:
            self._text += chunk
            if len(self._text) > self.MAX_FIELD_BYTES:
                raise BadUpload(f"form field {self._name!r} is longer than 4096 bytes")
            return
        self._size += len(chunk)
        if self._size > self.limits.max_file_bytes:
            raise UploadTooLarge(
                f"a file is larger than the {readable_bytes(self.limits.max_file_bytes)} "
                "allowed per file"
            )
        self._digest.update(chunk)
        self._handle.write(chunk)

    def _part_end(self) -> None:
        if self._handle is None:
            self.form.fields[self._name] = self._text.decode("utf-8", "replace")
            return
        self._handle.close()
        position = len(self.form.files)
        name = display_name(self._filename or "", position)
        self.form.files.append(
            Upload(
                path=Path(self._handle.name),
                name=name,
                sha256=self._digest.hexdigest(),
                size=self._size,
                suffix=safe_suffix(name),
            )
        )
        self._handle = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


async def read_upload(
    content_type: str,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    limits: UploadLimits,
    spool_dir: Path | None,
) -> ParsedForm:
    """Parse a multipart body from `stream` into spooled files; raises on any limit or error."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise BadUpload("send the videos as multipart/form-data, one 'files' field per video")
    declared = int(content_length) if content_length and content_length.isdigit() else 0
    if declared > limits.max_request_bytes:
        raise UploadTooLarge(
            f"the upload is larger than the {readable_bytes(limits.max_request_bytes)} allowed"
        )
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=spool_dir))
    reader = _FormReader(folder, limits)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())  # type: ignore[arg-type]
    received = 0
    refused: UploadTooLarge | None = None
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > limits.max_request_bytes:
                raise UploadTooLarge(
                    f"the upload is larger than the {readable_bytes(limits.max_request_bytes)} "
                    "allowed"
                )
            if refused is not None:
                continue  # read to the end within the request limit, so the answer arrives
            try:
                parser.write(chunk)
            except UploadTooLarge as exc:
                refused = exc
                reader.close()
                reader.form.cleanup()
        if refused is not None:
            raise refused
        parser.finalize()
    except MultipartParseError as exc:
        reader.close()
        reader.form.cleanup()
        raise BadUpload(f"the multipart body is malformed: {exc}") from None
    except BaseException:
        reader.close()
        reader.form.cleanup()
        raise
    reader.close()
    return reader.form
