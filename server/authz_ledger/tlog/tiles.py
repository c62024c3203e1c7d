"""C2SP tlog-tiles paths (https://c2sp.org/tlog-tiles): which tiles a tree has, and where each one lives.

A tlog-tiles *prefix* holds::

    checkpoint                    the signed checkpoint note ("Checkpoints")
    tile/<L>/<N>[.p/<W>]          hash tiles: 256 hashes of 32 bytes, or W < 256 when partial ("Merkle Tree",
                                  "Partial Tiles"); level 0 holds leaf hashes, level L the MTH of the full
                                  level L-1 tiles
    tile/entries/<N>[.p/<W>]      entry bundles: each entry as u16 big-endian length || entry bytes ("Log entries")

``<N>`` is written in zero-padded 3-digit path elements, all but the last prefixed with ``x`` (1234067 ->
``x001/x234/067``), so files never collide with directories.
"""

from __future__ import annotations

from collections.abc import Iterator

TILE_HEIGHT = 8
"""tlog-tiles tiles are subtrees of height 8."""
TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile; entries in a full bundle."""
MAX_BUNDLED_ENTRY = 0xFFFF
"""An entry bundle frames entries with a u16 length (tlog-tiles "Log entries")."""


def _index_path(n: int) -> str:
    """``n`` as zero-padded 3-digit path elements, all but the last prefixed with ``x``: 1234067 -> x001/x234/067."""
    if n < 0:
        raise ValueError(f"tile index must be non-negative, got {n}")
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(parts))


def _width_suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width must be 1..{TILE_WIDTH}, got {width}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, n: int, width: int = TILE_WIDTH) -> str:
    """Relative path of hash tile ``n`` at ``level`` (``width`` < 256 for a partial tile): ``tile/L/N[.p/W]``."""
    if not 0 <= level <= 63:
        raise ValueError(f"tile level must be 0..63, got {level}")
    return f"tile/{level}/{_index_path(n)}{_width_suffix(width)}"


def entry_bundle_path(n: int, width: int = TILE_WIDTH) -> str:
    """Relative path of entry bundle ``n`` (``width`` < 256 for a partial bundle): ``tile/entries/N[.p/W]``."""
    return f"tile/entries/{_index_path(n)}{_width_suffix(width)}"


def tiles_for_size(size: int) -> Iterator[tuple[int, int, int]]:
    """``(level, index, width)`` of every hash tile of the tree of ``size`` leaves, level 0 first.

    tlog-tiles "Partial Tiles": level L holds ``floor(size / 256**L)`` hashes: that many // 256 full tiles, then
    one partial tile of the remainder when it is not 0 (empty tiles do not exist). Entry bundles follow level 0.
    """
    if size < 0:
        raise ValueError(f"tree size must be non-negative, got {size}")
    level, count = 0, size
    while count:
        full, partial = divmod(count, TILE_WIDTH)
        for n in range(full):
            yield level, n, TILE_WIDTH
        if partial:
            yield level, full, partial
        level += 1
        count >>= TILE_HEIGHT
