"""Loading policy sources: directories, single files and bundle tarballs, and every way they can be wrong."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from authz_ledger.errors import PolicyLoadError
from authz_ledger.policy.bundle import build_source, load_source

from .conftest import EXAMPLE_POLICY

REGO = b"package t\nimport rego.v1\nallow := true\n"


def make_tar(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        if symlink is not None:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    ("files", "want_data"),
    [
        pytest.param({"p.rego": REGO}, {}, id="a module alone gives empty data"),
        pytest.param(
            {"p.rego": REGO, "data.json": b'{"a": {"b": 1}}'},
            {"a": {"b": 1}},
            id="root data.json is data itself",
        ),
        pytest.param(
            {"p.rego": REGO, "x/y/data.json": b"[1, 2]"},
            {"x": {"y": [1, 2]}},
            id="a nested data file is placed at its directory",
        ),
        pytest.param(
            {
                "p.rego": REGO,
                "x/data.yaml": b"k: v\n",
                "x/data.json": b'{"n": 1}',
                "data.yml": b"top: true\n",
            },
            {"x": {"k": "v", "n": 1}, "top": True},
            id="json and yaml files merge when they do not overlap",
        ),
        pytest.param({"p.rego": REGO, "x/data.yaml": b""}, {"x": {}}, id="an empty yaml file adds an empty object"),
        pytest.param({"p.rego": REGO, "README.md": b"hi", "plan.json": b"{"}, {}, id="other files are ignored"),
    ],
)
def test_data_layout(files, want_data):
    source = build_source("mem", files)
    assert source.data == want_data
    assert set(source.modules) == {"p.rego"}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({"data.json": b"{}"}, "no .rego files", id="a source without modules is rejected"),
        pytest.param({"p.rego": REGO, "data.json": b"{"}, "data.json: invalid JSON", id="broken JSON names the file"),
        pytest.param(
            {"p.rego": REGO, "a/data.yaml": b"k: [1,\n"},
            "a/data.yaml: invalid YAML at line",
            id="broken YAML names file and line",
        ),
        pytest.param({"p.rego": REGO, "data.json": b"[1]"}, "must hold an object", id="root data must be an object"),
        pytest.param(
            {"p.rego": REGO, "data.json": b'{"a": {"b": 1}}', "a/data.json": b'{"b": 2}'},
            "both set data.a.b",
            id="two files setting the same leaf conflict",
        ),
        pytest.param(
            {"p.rego": REGO, "data.json": b'{"a": 1}', "a/b/data.json": b"{}"},
            r"a/b/data\.json.*conflicting data paths",
            id="data under another file's leaf conflicts",
        ),
        pytest.param({"p.rego": REGO, "data.json": b'{"a": NaN}'}, "invalid JSON", id="NaN is not JSON"),
        pytest.param({"p.rego": b"\xff\xfe"}, "not UTF-8", id="a module that is not UTF-8 is rejected"),
        pytest.param(
            {"p.rego": REGO, ".manifest": b"{"},
            ".manifest: invalid JSON",
            id="a broken manifest names itself",
        ),
        pytest.param(
            {"p.rego": REGO, ".manifest": b'{"revision": 7}'},
            "'revision' must be a string",
            id="a numeric revision is rejected",
        ),
    ],
)
def test_bad_sources(files, message):
    with pytest.raises(PolicyLoadError, match=message):
        build_source("mem", files)


def test_version_is_revision_when_the_manifest_has_one():
    source = build_source("mem", {"p.rego": REGO, ".manifest": b'{"revision": "v42", "roots": ["t"]}'})
    assert source.version == "v42"
    assert source.revision == "v42"


def test_version_is_the_digest_otherwise_and_it_covers_every_file():
    a = build_source("mem", {"p.rego": REGO, "data.json": b'{"x": 1}'})
    b = build_source("mem", {"p.rego": REGO, "data.json": b'{"x": 2}'})
    renamed = build_source("mem", {"q.rego": REGO, "data.json": b'{"x": 1}'})
    assert a.version == f"sha256:{a.digest}"
    assert len({a.digest, b.digest, renamed.digest}) == 3
    assert build_source("other", {"p.rego": REGO, "data.json": b'{"x": 1}'}).digest == a.digest


def test_directory_and_tarball_of_the_same_files_agree(tmp_path):
    members = {"/.manifest": b'{"revision": "r1"}', "/policy.rego": REGO, "/sub/data.json": b'{"k": 1}'}
    tar = make_tar(tmp_path / "bundle.tar.gz", members)  # `opa build` writes leading slashes
    root = tmp_path / "dir"
    for name, raw in members.items():
        (root / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / name.lstrip("/")).write_bytes(raw)
    from_tar, from_dir = load_source(tar), load_source(root)
    assert from_tar.digest == from_dir.digest
    assert from_tar.data == {"sub": {"k": 1}}
    assert from_tar.version == "r1"


@pytest.mark.parametrize(
    ("members", "symlink", "message"),
    [
        pytest.param({"../evil.rego": REGO}, None, "path traversal", id="a parent-directory member is rejected"),
        pytest.param({"a/../../evil.rego": REGO}, None, "path traversal", id="a traversal in the middle is rejected"),
        pytest.param({"p.rego": REGO}, "link.rego", "is a link", id="a symlink member is rejected"),
        pytest.param({"p.rego": REGO, "./p.rego": REGO}, None, "appears twice", id="a duplicate member is rejected"),
    ],
)
def test_hostile_tarballs(tmp_path, members, symlink, message):
    tar = make_tar(tmp_path / "b.tar.gz", members, symlink=symlink)
    with pytest.raises(PolicyLoadError, match=message):
        load_source(tar)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"not a tarball at all", "unreadable bundle archive", id="garbage is an unreadable archive"),
        pytest.param(b"\x1f\x8b\x08\x00" + b"\x00" * 20, "unreadable bundle archive", id="a truncated gzip stream"),
    ],
)
def test_unreadable_tarballs(tmp_path, content, message):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(content)
    with pytest.raises(PolicyLoadError, match=message):
        load_source(path)


def test_missing_path_and_wrong_file_type(tmp_path):
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(PolicyLoadError, match="not a directory"):
        load_source(tmp_path / "x.txt")


def test_single_rego_file(tmp_path):
    (tmp_path / "one.rego").write_bytes(REGO)
    assert set(load_source(tmp_path / "one.rego").modules) == {"one.rego"}


def test_example_policy_loads():
    source = load_source(EXAMPLE_POLICY)
    assert set(source.modules) == {"policy.rego"}
    assert "alice" in source.data["rbac"]["users"]
    assert json.loads(source.data_json) == source.data
