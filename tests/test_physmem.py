"""Unit tests for ``mmusim.hw.physmem.PhysMem``: sparse 4 KiB frames, little-endian entries, images."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmusim.hw import FRAME_SIZE, ImageMem, PhysMem


def test_frame_size_is_4k() -> None:
    assert FRAME_SIZE == 4096


def test_untouched_memory_reads_zero() -> None:
    mem = PhysMem()
    assert mem.read(0, 16) == bytes(16)
    assert mem.read(0x1234_5678, 3) == b"\0\0\0"
    assert mem.read_u32(0x8000) == 0
    assert mem.read_u64(0xFFFF_F000) == 0
    # A read never allocates a frame.
    assert list(mem.frames()) == []


def test_read_write_within_a_frame() -> None:
    mem = PhysMem()
    mem.write(0x2010, b"hello")
    assert mem.read(0x2010, 5) == b"hello"
    assert mem.read(0x200E, 9) == b"\0\0hello\0\0"
    assert sorted(mem.frames()) == [2]


def test_write_across_frames() -> None:
    mem = PhysMem()
    data = bytes(range(1, 11))  # 10 bytes, 4 in frame 0, 6 in frame 1
    mem.write(0xFFC, data)
    assert sorted(mem.frames()) == [0, 1]
    assert mem.read(0xFFC, 10) == data
    assert mem.read(0xFFC, 4) == b"\x01\x02\x03\x04"
    assert mem.read(0x1000, 6) == b"\x05\x06\x07\x08\x09\x0a"


def test_write_spanning_three_frames_with_a_hole_read() -> None:
    mem = PhysMem()
    data = bytes([0xAB]) * (FRAME_SIZE + 2)
    mem.write(0x1FFF, data)  # last byte of frame 1, all of frame 2, first byte of frame 3
    assert sorted(mem.frames()) == [1, 2, 3]
    assert mem.read(0x1FFE, 1) == b"\0"
    assert mem.read(0x1FFF, 1) == b"\xab"
    assert mem.read(0x3000, 2) == b"\xab\0"
    # A read crossing into an unwritten frame returns zeros for that part.
    assert mem.read(0x3FFF, 3) == b"\0\0\0"


def test_u32_u64_little_endian() -> None:
    mem = PhysMem()
    mem.write_u32(0x100, 0x1122_3344)
    assert mem.read(0x100, 4) == b"\x44\x33\x22\x11"
    mem.write_u64(0x200, 0x0102_0304_0506_0708)
    assert mem.read(0x200, 8) == b"\x08\x07\x06\x05\x04\x03\x02\x01"
    mem.write(0x300, b"\xef\xbe\xad\xde\x0d\xf0\xad\x8b")
    assert mem.read_u32(0x300) == 0xDEAD_BEEF
    assert mem.read_u64(0x300) == 0x8BAD_F00D_DEAD_BEEF
    assert mem.read_u32(0x304) == 0x8BAD_F00D


def test_u64_full_width_values() -> None:
    mem = PhysMem()
    mem.write_u64(0x7F8, (1 << 64) - 1)  # last 8 bytes of frame 0
    assert mem.read_u64(0x7F8) == (1 << 64) - 1
    mem.write_u64(0x7F8, 1 << 63)
    assert mem.read(0x7F8, 8) == bytes(7) + b"\x80"
    assert mem.read_u32(0x7FC) == 0x8000_0000


def test_write_u32_does_not_touch_neighbours() -> None:
    mem = PhysMem()
    mem.write(0x0, bytes([0xFF]) * 16)
    mem.write_u32(0x4, 0)
    assert mem.read(0, 16) == bytes([0xFF]) * 4 + bytes(4) + bytes([0xFF]) * 8


def test_overwrite() -> None:
    mem = PhysMem()
    mem.write(0x5000, b"abcdef")
    mem.write(0x5002, b"XY")
    assert mem.read(0x5000, 6) == b"abXYef"


def test_zero_frame() -> None:
    mem = PhysMem()
    mem.write(0x3000, b"\x01" * 32)
    mem.write(0x4000, b"\x02")
    mem.zero_frame(3)
    assert mem.read(0x3000, 32) == bytes(32)
    assert mem.read(0x4000, 1) == b"\x02"
    assert 3 not in set(mem.frames())


def test_from_image_byte0_is_pa0() -> None:
    image = bytearray(3 * FRAME_SIZE + 100)
    image[0] = 0x11
    image[0x1FFF] = 0x22
    image[3 * FRAME_SIZE + 99] = 0x33  # last byte, in a partial frame
    mem = PhysMem.from_image(bytes(image))
    assert mem.read(0, 1) == b"\x11"
    assert mem.read(0x1FFF, 1) == b"\x22"
    assert mem.read(0x3063, 1) == b"\x33"
    # The limit is the image size rounded up to a whole frame.
    assert mem.limit == 4 * FRAME_SIZE
    # The all-zero frame 2 is not stored.
    assert sorted(mem.frames()) == [0, 1, 3]
    mem._check()


def test_image_round_trip() -> None:
    image = bytearray(5 * FRAME_SIZE)
    for i, pa in enumerate((0x0, 0x1ABC, 0x2FFF, 0x4800)):
        image[pa] = i + 1
    mem = PhysMem.from_image(bytes(image))
    assert mem.to_image() == bytes(image)
    mem.write(0x3000, b"new")
    out = mem.to_image()
    assert len(out) == 5 * FRAME_SIZE
    assert out[0x3000:0x3003] == b"new"
    assert out[0x1ABC] == 2
    # A shorter dump is the prefix.
    assert mem.to_image(0x1ABD) == bytes(image[:0x1ABD])


def test_from_image_explicit_limit_and_round_trip_of_partial_frame() -> None:
    image = b"\x01\x02\x03"
    mem = PhysMem.from_image(image, limit=0x10000)
    assert mem.limit == 0x10000
    assert mem.to_image(3) == image
    assert mem.to_image() == image + bytes(0x10000 - 3)


def test_to_image_unbounded_stops_after_last_frame() -> None:
    mem = PhysMem()
    assert mem.to_image() == b""
    mem.write(0x2001, b"\x7f")
    out = mem.to_image()
    assert len(out) == 3 * FRAME_SIZE
    assert out[0x2001] == 0x7F
    assert out.count(0) == len(out) - 1


def test_negative_limit_raises() -> None:
    with pytest.raises(ValueError):
        PhysMem(-1)


@pytest.mark.parametrize(
    ("pa", "size"),
    [
        (0x10000, 1),  # first byte past the end
        (0xFFFF, 2),  # straddles the end
        (0x20000, 0x10),
        (-1, 1),
    ],
)
def test_limits_raise_value_error(pa: int, size: int) -> None:
    mem = PhysMem(0x10000)
    with pytest.raises(ValueError):
        mem.read(pa, size)
    with pytest.raises(ValueError):
        mem.write(pa, bytes(size))
    assert list(mem.frames()) == []


def test_entry_writes_respect_limit() -> None:
    mem = PhysMem(0x2000)
    mem.write_u64(0x1FF8, 5)  # the last 8 bytes are fine
    mem.write_u32(0x1FFC, 6)
    with pytest.raises(ValueError):
        mem.write_u64(0x1FFC, 1)
    with pytest.raises(ValueError):
        mem.write_u32(0x2000, 1)
    with pytest.raises(ValueError):
        mem.zero_frame(2)
    mem.zero_frame(1)


def test_limit_edges_allowed() -> None:
    mem = PhysMem(0x2000)
    mem.write(0x1FFF, b"\x99")
    assert mem.read(0x1FFF, 1) == b"\x99"
    assert mem.read(0x2000, 0) == b""  # an empty access at the end is inside
    with pytest.raises(ValueError):
        mem.read(-5, 0)
    with pytest.raises(ValueError):
        mem.read(0, -1)


def test_check_passes_and_fails() -> None:
    mem = PhysMem(0x4000)
    mem.write(0x1000, b"x")
    mem.write(0x3FFF, b"y")
    mem._check()
    # A frame beyond the installed RAM.
    bad = PhysMem(0x4000)
    bad.write(0x3000, b"z")
    bad.limit = 0x3000
    with pytest.raises(AssertionError):
        bad._check()
    # A frame that is not a whole 4 KiB.
    short = PhysMem()
    short.write(0, b"a")
    short._frames[0] = bytearray(100)
    with pytest.raises(AssertionError):
        short._check()


def test_repr() -> None:
    mem = PhysMem(0x1000)
    mem.write(0, b"a")
    assert repr(mem) == "PhysMem(limit=0x1000, frames_in_use=1)"
    assert repr(PhysMem()) == "PhysMem(limit=unbounded, frames_in_use=0)"


# -- ImageMem: an image file, mapped and read lazily ----------------------------------------


def test_image_file_reads_like_the_image(tmp_path: Path) -> None:
    image = bytearray(5 * FRAME_SIZE)
    image[0x10:0x18] = b"abcdefgh"
    image[3 * FRAME_SIZE + 8 : 3 * FRAME_SIZE + 16] = (0x1234).to_bytes(8, "little")
    path = tmp_path / "x.img"
    path.write_bytes(image)
    eager, lazy = PhysMem.from_image(bytes(image)), PhysMem.from_file(path)
    assert isinstance(lazy, ImageMem) and lazy.limit == eager.limit == len(image)
    for mem in (eager, lazy):
        assert mem.read(0x10, 8) == b"abcdefgh"
        assert mem.read_u64(3 * FRAME_SIZE + 8) == 0x1234
        assert mem.read_u32(4 * FRAME_SIZE) == 0
        mem.write_u32(4 * FRAME_SIZE + 4, 7)
        mem.write(0x11, b"X")
        mem.zero_frame(3)
        assert mem.read_u64(3 * FRAME_SIZE + 8) == 0
        assert mem.to_image() == eager.to_image()
        assert sorted(mem.frames()) == [0, 4]
    assert path.read_bytes() == image  # writes went to the copies, not to the file


def test_image_file_loads_only_the_frames_touched(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    with path.open("wb") as f:
        f.write(b"\x01" * FRAME_SIZE)
        f.truncate(1 << 30)
    mem = PhysMem.from_file(path)
    assert mem.read_u64(0) == 0x0101010101010101
    assert mem.read_u64(0x3FFF_F000) == 0
    assert mem.read_u64(0x3FFF_F008) == 0
    assert len(mem._frames) == 1 and len(mem._seen) == 2
