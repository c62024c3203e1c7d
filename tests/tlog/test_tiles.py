"""tlog-tiles paths, checked against the spec's examples and against the spec reader's own path rule."""

from __future__ import annotations

import pytest

from authz_ledger.tlog.tiles import entry_bundle_path, tile_path
from tests.support.spec_tiles import spec_index_path


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ((0, 1234067), "tile/0/x001/x234/067"),
        ((0, 5), "tile/0/005"),
        ((1, 1000), "tile/1/x001/000"),
        ((2, 0, 1), "tile/2/000.p/1"),
        ((0, 273, 112), "tile/0/273.p/112"),
    ],
    ids=[
        "the spec's example index 1234067 is x001/x234/067",
        "small indexes are zero padded to three digits",
        "index 1000 needs a second path element",
        "a partial tile ends in .p/width",
        "the 70,000-entry example's partial level-0 tile",
    ],
)
def test_tile_paths_follow_the_spec(args: tuple[int, ...], want: str) -> None:
    assert tile_path(*args) == want
    level, n, *w = args
    assert want == f"tile/{level}/{spec_index_path(n)}" + (f".p/{w[0]}" if w else "")


def test_entry_bundle_paths_follow_the_spec() -> None:
    assert entry_bundle_path(1234067) == "tile/entries/x001/x234/067"
    assert entry_bundle_path(3, 17) == "tile/entries/003.p/17"
