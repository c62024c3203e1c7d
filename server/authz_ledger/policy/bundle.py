"""Load a policy source: a directory in OPA bundle layout, a bundle ``.tar.gz``, or one ``.rego`` file.

The result is a ``PolicySource``: every Rego module as text, the merged base document (``data``), a version.

Layout (OPA's bundle format, https://www.openpolicyagent.org/docs/latest/management-bundles/):

- every ``*.rego`` file is a module, keyed by its path relative to the bundle root;
- a data file ``data.json``, ``data.yaml`` or ``data.yml`` in directory ``a/b/`` is placed at ``data.a.b``
  (one at the root must hold an object, since it *is* ``data``);
- ``.manifest`` (JSON) at the root may name a ``revision``: that string becomes the policy version. Its
  ``roots`` are not enforced: they only arbitrate between several bundles sharing one OPA, and a source here
  is always the only one. Other files (``plan.json``, ``.signatures.json``, READMEs) are ignored.

Invariants:

- Nothing is silently dropped or overwritten: two data files that set the same path (or one under another's
  leaf) are a ``PolicyLoadError`` naming both files, because otherwise a merge order would decide the policy.
- A source without a single ``.rego`` file is an error, not an empty policy that decides nothing.
- Tar members are read in memory, never extracted. A member whose path contains ``..`` (after stripping the
  leading ``/`` that ``opa build`` writes), or that is a link or device, rejects the whole bundle: such a
  member is a mistake or an attack, and guessing which would be unsafe. The uncompressed size is capped.
- ``digest`` is SHA-256 over every loaded file (modules, data, manifest) in path order, each framed with its
  path and length, so renaming a file or moving bytes between files changes it. ``version`` is the manifest
  revision when there is one, else ``sha256:<digest>``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import posixpath
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz_ledger.errors import PolicyLoadError

DATA_FILE_NAMES = frozenset({"data.json", "data.yaml", "data.yml"})
MANIFEST_NAME = ".manifest"
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
"""Cap on a bundle's uncompressed size, so a gzip bomb fails loudly instead of exhausting memory."""


@dataclass(frozen=True, slots=True)
class PolicySource:
    """A loaded policy. Treat the containers as read-only: the dataclass is frozen, its dicts are not."""

    origin: str
    """The path this was loaded from, for messages."""
    modules: dict[str, str]
    """Rego module text by path relative to the bundle root (``/`` separated)."""
    data: dict[str, Any]
    """The merged base document."""
    revision: str | None
    """``revision`` from ``.manifest``, when present and non-empty."""
    digest: str
    """Hex SHA-256 over every loaded file (see the module docstring)."""

    @property
    def version(self) -> str:
        """The revision when the bundle names one, else ``sha256:<digest>``."""
        return self.revision if self.revision else f"sha256:{self.digest}"

    @property
    def data_json(self) -> str:
        """``data`` serialised as JSON text (what the engines load)."""
        return json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))


def load_source(path: str | os.PathLike[str]) -> PolicySource:
    """Load a directory, a ``.tar.gz``/``.tgz`` bundle or a single ``.rego`` file. Raises PolicyLoadError."""
    p = Path(path)
    try:
        if p.is_dir():
            files = _read_directory(p)
        elif p.is_file() and (p.name.endswith((".tar.gz", ".tgz"))):
            files = _read_tarball(p)
        elif p.is_file() and p.suffix == ".rego":
            files = {p.name: _read_file(p)}
        elif p.exists():
            raise PolicyLoadError(f"{p}: not a directory, .tar.gz bundle or .rego file")
        else:
            raise PolicyLoadError(f"{p}: policy source does not exist")
    except OSError as exc:
        raise PolicyLoadError(f"{p}: cannot read policy source: {exc.strerror or exc}") from exc
    return build_source(str(p), files)


def build_source(origin: str, files: dict[str, bytes]) -> PolicySource:
    """Turn the files of a bundle (relative ``/``-separated path → bytes) into a PolicySource."""
    modules: dict[str, str] = {}
    merger = _DataMerger(origin)
    revision: str | None = None
    loaded: list[tuple[str, bytes]] = []

    for rel in sorted(files):
        raw = files[rel]
        where = f"{origin}: {rel}"
        name = posixpath.basename(rel)
        if rel.endswith(".rego"):
            try:
                modules[rel] = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PolicyLoadError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        elif name in DATA_FILE_NAMES:
            value = _parse_data(where, name, raw)
            if value is None:
                value = {}  # an empty YAML file: contributes nothing
            prefix = tuple(part for part in posixpath.dirname(rel).split("/") if part)
            if not prefix and not isinstance(value, dict):
                raise PolicyLoadError(f"{where}: a data file at the bundle root must hold an object")
            merger.place(prefix, value, rel)
        elif rel == MANIFEST_NAME:
            revision = _parse_manifest(where, raw)
        else:
            continue
        loaded.append((rel, raw))

    if not modules:
        raise PolicyLoadError(f"{origin}: no .rego files found (a policy source needs at least one module)")

    digest = hashlib.sha256()
    for rel, raw in loaded:  # already in path order
        encoded = rel.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big") + encoded + len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return PolicySource(origin=origin, modules=modules, data=merger.data, revision=revision, digest=digest.hexdigest())


def with_data_files(source: PolicySource, paths: Sequence[str | os.PathLike[str]]) -> PolicySource:
    """``source`` with more data files merged at the root of ``data`` (``opa eval --data``): JSON or YAML objects;
    a path set by two files is a PolicyLoadError, as within a bundle. The digest covers the extra files too."""
    if not paths:
        return source
    merger = _DataMerger(source.origin)
    merger.place((), copy.deepcopy(source.data), "the policy's data")
    digest = hashlib.sha256(source.digest.encode())
    for path in paths:
        p = Path(path)
        try:
            raw = _read_file(p)
        except OSError as exc:
            raise PolicyLoadError(f"{p}: cannot read data file: {exc.strerror or exc}") from exc
        value = _parse_data(str(p), "data.json" if p.suffix == ".json" else "data.yaml", raw)
        if not isinstance(value, dict):
            raise PolicyLoadError(f"{p}: a data file must hold an object")
        merger.place((), value, str(p))
        digest.update(len(raw).to_bytes(8, "big") + raw)
    return dataclasses.replace(source, data=merger.data, digest=digest.hexdigest())


def _read_file(p: Path) -> bytes:
    with p.open("rb") as f:
        return f.read()


def _read_directory(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):  # symlinked directories are not followed
        # Hidden directories are skipped: a Kubernetes ConfigMap volume keeps a "..<timestamp>/" copy of every
        # file next to the visible symlinks, which would otherwise load each module twice (OPA users pass
        # --ignore=.* for the same reason).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if not (filename.endswith(".rego") or filename in DATA_FILE_NAMES or filename == MANIFEST_NAME):
                continue
            full = Path(dirpath) / filename
            rel = full.relative_to(root).as_posix()
            if filename == MANIFEST_NAME and rel != MANIFEST_NAME:
                continue  # only the root manifest counts, as in OPA
            raw = _read_file(full)
            total += len(raw)
            if total > MAX_BUNDLE_BYTES:
                raise PolicyLoadError(f"{root}: policy files exceed {MAX_BUNDLE_BYTES} bytes")
            files[rel] = raw
    return files


def _read_tarball(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                rel = _member_path(path, member)
                if rel is None:
                    continue
                if member.isdir():
                    continue
                if not member.isfile():
                    kind = "link" if (member.issym() or member.islnk()) else "special file"
                    raise PolicyLoadError(f"{path}: member {member.name!r} is a {kind}; bundles hold regular files")
                total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise PolicyLoadError(f"{path}: bundle expands to more than {MAX_BUNDLE_BYTES} bytes")
                if rel in files:
                    raise PolicyLoadError(f"{path}: member {rel!r} appears twice")
                extracted = tar.extractfile(member)
                if extracted is None:  # pragma: no cover - isfile() members always extract
                    raise PolicyLoadError(f"{path}: member {member.name!r} cannot be read")
                with extracted:
                    files[rel] = extracted.read()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise PolicyLoadError(f"{path}: unreadable bundle archive: {exc}") from exc
    return files


def _member_path(archive: Path, member: tarfile.TarInfo) -> str | None:
    """The member's bundle-relative path, or None for the root itself. Rejects traversal."""
    name = member.name.replace("\\", "/")
    # `opa build` writes members as "/data.json", "/policy.rego": the leading slash means the bundle root.
    stripped = name.lstrip("/")
    while stripped.startswith("./"):
        stripped = stripped[2:]
    parts = [part for part in stripped.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts) or (parts and ":" in parts[0]):
        raise PolicyLoadError(f"{archive}: member {member.name!r} escapes the bundle root (path traversal)")
    return "/".join(parts) if parts else None


def _parse_data(where: str, name: str, raw: bytes) -> Any:
    if name == "data.json":
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            raise PolicyLoadError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        except ValueError as exc:
            raise PolicyLoadError(f"{where}: invalid JSON: {exc}") from exc
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyLoadError(f"{where}: invalid YAML{at}: {problem}") from exc


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def _parse_manifest(where: str, raw: bytes) -> str | None:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PolicyLoadError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise PolicyLoadError(f"{where}: the manifest must be a JSON object")
    revision = manifest.get("revision")
    if revision is None or revision == "":
        return None
    if not isinstance(revision, str):
        raise PolicyLoadError(f"{where}: 'revision' must be a string, not {type(revision).__name__}")
    return revision


class _DataMerger:
    """Builds ``data`` from data files; every leaf remembers which file set it, for conflict messages."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.data: dict[str, Any] = {}
        self.owners: dict[tuple[str, ...], str] = {}

    def place(self, prefix: tuple[str, ...], value: Any, rel: str) -> None:
        """Merge ``value`` into ``data`` at ``prefix``."""
        if isinstance(value, dict) and value:
            for key, child in value.items():
                self.place((*prefix, str(key)), child, rel)
            return
        if isinstance(value, dict):  # an empty object still claims its path as an object
            self._descend(prefix, rel)
            self.owners.setdefault(prefix, rel)
            return
        *parents, leaf = prefix
        node = self._descend(tuple(parents), rel)
        if leaf in node:
            other = self.owners.get(prefix) or _any_owner_under(self.owners, prefix) or "another data file"
            dotted = ".".join(("data", *prefix))
            raise PolicyLoadError(f"{self.origin}: {rel} and {other} both set {dotted} (conflicting data paths)")
        node[leaf] = value
        self.owners[prefix] = rel

    def _descend(self, path: tuple[str, ...], rel: str) -> dict[str, Any]:
        node = self.data
        for depth, key in enumerate(path):
            if key not in node:
                node[key] = {}
            child = node[key]
            if not isinstance(child, dict):
                here = path[: depth + 1]
                dotted = ".".join(("data", *here))
                other = self.owners.get(here, "another data file")
                raise PolicyLoadError(
                    f"{self.origin}: {rel} puts data under {dotted}, which {other} sets to a non-object"
                    " (conflicting data paths)"
                )
            node = child
        return node


def _any_owner_under(owners: dict[tuple[str, ...], str], prefix: tuple[str, ...]) -> str | None:
    n = len(prefix)
    for path, rel in owners.items():
        if path[:n] == prefix:
            return rel
    return None
