"""The preview's encoding (providers/preview_frames.py): x264 settings that keep clips
deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_preview_render import H, W, _render


@pytest.mark.parametrize(("width", "mbtree"), [(W, b"mbtree=0"), (256, b"mbtree=1")])
def test_mbtree_is_off_where_x264_would_make_it_nondeterministic(
    tmp_path: Path, width: int, mbtree: bytes
) -> None:
    # x264's AVX-512 mbtree step handles 8 macroblocks at a time, so on a width that is not a
    # multiple of 128 pixels it can mix memory left over from earlier into the result
    # (preview_frames._x264_options). x264 writes its settings into the stream, so they can be read back.
    clip = _render(tmp_path / "w.mp4", width=width, height=H)
    assert mbtree in clip.read_bytes()
