"""Glyphs: the tutorial's bitmaps, the ASCII format and its errors, noisy variants."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.glyph_files import read_glyph
from pipeline.glyphs import clean_glyphs, noisy_copies, parse_glyph, placements, render, shift_glyph, shifted_copies

# Copied from the tutorial's lists, row-major, independent of how glyphs.py draws them.
TUTORIAL = [
    [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1],
    [0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0],
    [0, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0],
]


def test_clean_glyphs_are_the_tutorials_bitmaps():
    glyphs = clean_glyphs()
    assert glyphs.dtype == np.uint8 and glyphs.shape == (3, 30)
    np.testing.assert_array_equal(glyphs, TUTORIAL)


def test_parse_accepts_both_alphabets_trailing_space_and_surrounding_blank_lines():
    text = "\n\n  \n0011..  \n.#..1.\n######\t\n#....#\n1....1\n\n"
    np.testing.assert_array_equal(parse_glyph(text, "x"), TUTORIAL[0])


def test_render_is_the_inverse_of_parse():
    for glyph in clean_glyphs():
        np.testing.assert_array_equal(parse_glyph("\n".join(render(glyph)), "x"), glyph)


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "x: expected 5 rows of 6 pixels, found 0 rows"),
        ("......\n" * 4, "x: expected 5 rows of 6 pixels, found 4 rows"),
        ("......\n" * 6, "x: expected 5 rows of 6 pixels, found 6 rows"),
        (
            "......\n" * 2 + "\n" + "......\n" * 2,
            "x: line 3: expected 6 pixels ('#' or '1' for ink, '.' or '0' for blank), found 0 characters",
        ),
        (
            "......\n.....\n" + "......\n" * 3,
            "x: line 2: expected 6 pixels ('#' or '1' for ink, '.' or '0' for blank), found 5 characters",
        ),
        (
            "......\n" * 3 + "...x..\n......",
            "x: line 4: expected only '#' or '1' for ink, '.' or '0' for blank, found 'x'",
        ),
        ("\n\n" + "......\n" * 2 + "..2...\n" + "......\n" * 2, "x: line 5: expected only"),
    ],
)
def test_parse_errors_name_the_line_and_what_was_found(text, message):
    with pytest.raises(PipelineError) as err:
        parse_glyph(text, "x")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_glyph_drawn_with_spaces_for_blanks_gets_the_allowed_characters_and_the_fix():
    drawn_with_spaces = "  ##  \n #  # \n######\n#    #\n#    #\n"  # the tutorial's A, spaces for '.'
    with pytest.raises(PipelineError) as err:
        parse_glyph(drawn_with_spaces, "a.txt")
    assert str(err.value) == (
        "a.txt: line 1: expected 6 pixels ('#' or '1' for ink, '.' or '0' for blank), found 4 characters '  ##'; "
        "a space is not a pixel: use '.' for blank"
    )
    with pytest.raises(PipelineError, match=r"line 2: expected only .* found ' '; a space is not a pixel"):
        parse_glyph("......\n.#  #.\n" + "......\n" * 3, "b.txt")


def test_read_glyph_reports_unreadable_files_by_name(tmp_path):
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" * 3)
    (tmp_path / "huge.txt").write_bytes(b"......\n" * 100_000)
    (tmp_path / "dir.txt").mkdir()
    cases = {
        "binary.txt": "expected ASCII text, found byte 0x89 at offset 0",
        "huge.txt": "expected a glyph of about 40 bytes, found more than 4096 bytes",
        "dir.txt": "expected a glyph file, found a directory",
        "missing.txt": "no such file",
    }
    for name, message in cases.items():
        with pytest.raises(PipelineError, match="^" + str(tmp_path / name) + ": " + message):
            read_glyph(tmp_path / name)


def test_noisy_copies_are_interleaved_uint8_and_flip_at_the_given_rate():
    clean = clean_glyphs()
    x, y = noisy_copies(clean, 20_000, 0.1, np.random.default_rng(0), block=4096)
    assert x.dtype == np.uint8 and x.shape == (60_000, 30) and y.dtype == np.uint8
    np.testing.assert_array_equal(y[:6], [0, 1, 2, 0, 1, 2])
    flipped = x != clean[y]
    assert abs(flipped.mean() - 0.1) < 0.003  # 1.8 million pixels: the standard error is 0.0002


def test_noise_zero_copies_and_noise_one_inverts():
    clean = clean_glyphs()
    same, _ = noisy_copies(clean, 4, 0.0, np.random.default_rng(0))
    inverted, _ = noisy_copies(clean, 4, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(same, np.tile(clean, (4, 1)))
    np.testing.assert_array_equal(inverted, 1 - np.tile(clean, (4, 1)))


def test_noisy_copies_do_not_depend_on_the_block_size():
    a, _ = noisy_copies(clean_glyphs(), 1000, 0.2, np.random.default_rng(5), block=1 << 16)
    b, _ = noisy_copies(clean_glyphs(), 1001, 0.2, np.random.default_rng(5), block=7)
    b = b[:3000]
    np.testing.assert_array_equal(a, b)


def test_a_million_copies_per_class_are_made_without_float_copies_of_the_data():
    import tracemalloc

    tracemalloc.start()
    try:
        x, y = noisy_copies(clean_glyphs(), 1_000_000, 0.1, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == (3_000_000, 30) and x.dtype == np.uint8
    assert y.shape == (3_000_000,) and y.dtype == np.uint8
    assert peak < 1.5 * (x.nbytes + y.nbytes), f"peak {peak / 2**20:.0f} MiB for {x.nbytes / 2**20:.0f} MiB of pixels"


def test_a_byte_order_mark_is_not_a_pixel(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(render(clean_glyphs()[2])).encode())
    np.testing.assert_array_equal(read_glyph(path), TUTORIAL[2])


def test_moving_a_glyph_keeps_its_shape_and_refuses_to_push_ink_out_of_the_frame():
    dot = np.zeros(30, np.uint8)
    dot[2 * 6 + 3] = 1  # row 2, column 3
    moved = shift_glyph(dot, -1, 2)
    assert moved is not None and np.flatnonzero(moved).tolist() == [1 * 6 + 5]
    assert shift_glyph(dot, 0, 3) is None and shift_glyph(dot, 3, 0) is None and shift_glyph(dot, 5, 0) is None
    assert [(d, r) for d, r, _ in placements(dot, 1)] == [
        (-1, -1),
        (-1, 0),
        (-1, 1),
        (0, -1),
        (0, 1),
        (1, -1),
        (1, 0),
        (1, 1),
    ]
    assert len(placements(dot, 2)) == 5 * 5 - 1  # row 2 of 0-4 and column 3 of 0-5: two steps either way fit
    assert len(placements(dot, 3)) == 5 * 6 - 1  # three rows up or down leave the frame; three columns left fit


def test_the_tutorials_a_cannot_move_and_b_and_c_move_one_column():
    a, b, c = clean_glyphs()
    assert placements(a, 3) == []
    assert [(d, r) for d, r, _ in placements(b, 2)] == [(0, -1), (0, 1)] == [(d, r) for d, r, _ in placements(c, 1)]
    x, y = shifted_copies(clean_glyphs(), 1)
    assert y.tolist() == [1, 1, 2, 2]
    assert render(x[0]) == ["####..", "#..#..", "####..", "#..#..", "####.."]
    assert shifted_copies(clean_glyphs(), 0)[0].shape == (0, 30)


def test_noisy_copies_cycle_through_each_letters_placements():
    a, b, c = clean_glyphs()
    sources = [a[None], np.vstack([b, 1 - b]), np.vstack([c, 1 - c, c ^ 1])]
    x, y = noisy_copies(sources, 4, 0.0, np.random.default_rng(0))
    assert y.tolist() == [0, 1, 2] * 4
    expected = [sources[k][i % len(sources[k])] for i in range(4) for k in range(3)]
    np.testing.assert_array_equal(x, expected)
    one_each = noisy_copies(clean_glyphs(), 50, 0.2, np.random.default_rng(1))  # the same stream either way
    as_lists = noisy_copies([g[None] for g in clean_glyphs()], 50, 0.2, np.random.default_rng(1))
    np.testing.assert_array_equal(one_each[0], as_lists[0])
