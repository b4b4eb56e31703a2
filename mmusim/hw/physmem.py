"""Physical memory: sparse 4 KiB frames of bytes.

Frames are created on first write, so a machine with a 4 GiB physical address space costs only what
it uses. A frame that was never written reads as zeros -- the same answer Unicorn gives for a read
of memory it does not back, which is what the differential tests compare against. (Real hardware
usually reads all-ones from a hole; mmusim deliberately follows the oracle here.)

Entries of page tables are little-endian u32 (32-bit paging) or u64 (PAE, IA-32e); the accessors
below are the walker's hot path, so they use precompiled ``struct`` objects and never allocate a
frame on a read.

An image is a flat file whose byte 0 is physical address 0 (``from_image`` / ``to_image``).
``from_file`` maps an image file instead of reading it (``ImageMem``): a frame is copied out of the
file the first time it is touched, so a walk on a 1 GiB sparse image reads only the frames it
visits.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

FRAME_SHIFT = 12
FRAME_SIZE = 1 << FRAME_SHIFT
FRAME_MASK = FRAME_SIZE - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class PhysMem:
    """Sparse physical memory. ``limit`` (if given) is the size of the installed RAM in bytes.

    Reads and writes outside ``[0, limit)`` raise ``ValueError``: in mmusim that is a bug in the
    caller (the kernel or a tool), never something a guest can do, because the walker only reads
    entries and the CPU checks the final physical address.
    """

    __slots__ = ("_frames", "limit")

    def __init__(self, limit: int | None = None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"PhysMem: negative size {limit}")
        self._frames: dict[int, bytearray] = {}
        self.limit = limit

    # -- images -------------------------------------------------------------------------------

    @classmethod
    def from_image(cls, image: bytes, limit: int | None = None) -> PhysMem:
        """Load a flat image: byte 0 of ``image`` is physical address 0.

        ``limit`` defaults to the image size rounded up to a whole frame. All-zero frames are not
        stored (they read as zeros anyway), which keeps a mostly empty image cheap.
        """
        if limit is None:
            limit = (len(image) + FRAME_MASK) & ~FRAME_MASK
        mem = cls(limit)
        view = memoryview(image)
        for base in range(0, len(image), FRAME_SIZE):
            chunk = view[base : base + FRAME_SIZE]
            if any(chunk):
                frame = bytearray(FRAME_SIZE)
                frame[: len(chunk)] = chunk
                mem._frames[base >> FRAME_SHIFT] = frame
        return mem

    @classmethod
    def from_file(cls, path: str | Path, limit: int | None = None) -> ImageMem:
        """Map the image file ``path`` (byte 0 is physical address 0) without reading it: frames
        are loaded on first use (``ImageMem``). ``limit`` defaults to the file size rounded up to
        a whole frame. Raises ``OSError`` if the file cannot be opened or mapped."""
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            backing: bytes | mmap.mmap = (
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            )
        if limit is None:
            limit = (size + FRAME_MASK) & ~FRAME_MASK
        return ImageMem(backing, limit)

    def to_image(self, size: int | None = None) -> bytes:
        """Dump ``[0, size)`` as a flat image (default: the whole installed RAM)."""
        if size is None:
            if self.limit is None:
                size = (max(self._frames, default=-1) + 1) << FRAME_SHIFT
            else:
                size = self.limit
        out = bytearray(size)
        for pfn, frame in self._frames.items():
            base = pfn << FRAME_SHIFT
            if base < size:
                n = min(FRAME_SIZE, size - base)
                out[base : base + n] = frame[:n]
        return bytes(out)

    # -- bytes ---------------------------------------------------------------------------------

    def _bounds(self, pa: int, size: int) -> None:
        if pa < 0 or size < 0 or (self.limit is not None and pa + size > self.limit):
            raise ValueError(
                f"PhysMem: access [{pa:#x}, {pa + size:#x}) outside physical memory "
                f"[0, {self.limit or 0:#x})"
            )

    def read(self, pa: int, size: int) -> bytes:
        """Read ``size`` bytes at physical address ``pa`` (may span frames)."""
        self._bounds(pa, size)
        out = bytearray()
        while size > 0:
            off = pa & FRAME_MASK
            n = min(size, FRAME_SIZE - off)
            frame = self._frames.get(pa >> FRAME_SHIFT) or self._missing(pa >> FRAME_SHIFT)
            out += frame[off : off + n] if frame is not None else bytes(n)
            pa += n
            size -= n
        return bytes(out)

    def write(self, pa: int, data: bytes) -> None:
        """Write ``data`` at physical address ``pa`` (may span frames)."""
        self._bounds(pa, len(data))
        pos = 0
        while pos < len(data):
            off = pa & FRAME_MASK
            n = min(len(data) - pos, FRAME_SIZE - off)
            self._frame(pa >> FRAME_SHIFT)[off : off + n] = data[pos : pos + n]
            pa += n
            pos += n

    def _frame(self, pfn: int) -> bytearray:
        frame = self._frames.get(pfn) or self._missing(pfn)
        if frame is None:
            frame = self._frames[pfn] = bytearray(FRAME_SIZE)
        return frame

    def _missing(self, pfn: int) -> bytearray | None:
        """The frame ``pfn`` when it is not (yet) in ``_frames``: None here (it reads as zeros);
        ``ImageMem`` loads it from its file."""
        return None

    # -- entries (hot path: aligned, never cross a frame) --------------------------------------

    def read_u32(self, pa: int) -> int:
        frame = self._frames.get(pa >> FRAME_SHIFT)
        if frame is None and (frame := self._missing(pa >> FRAME_SHIFT)) is None:
            return 0
        value: int = _U32.unpack_from(frame, pa & FRAME_MASK)[0]
        return value

    def read_u64(self, pa: int) -> int:
        frame = self._frames.get(pa >> FRAME_SHIFT)
        if frame is None and (frame := self._missing(pa >> FRAME_SHIFT)) is None:
            return 0
        value: int = _U64.unpack_from(frame, pa & FRAME_MASK)[0]
        return value

    def write_u32(self, pa: int, value: int) -> None:
        self._bounds(pa, 4)
        _U32.pack_into(self._frame(pa >> FRAME_SHIFT), pa & FRAME_MASK, value)

    def write_u64(self, pa: int, value: int) -> None:
        self._bounds(pa, 8)
        _U64.pack_into(self._frame(pa >> FRAME_SHIFT), pa & FRAME_MASK, value)

    def zero_frame(self, pfn: int) -> None:
        """Clear one frame (used when a page-table frame is handed out)."""
        self._bounds(pfn << FRAME_SHIFT, FRAME_SIZE)
        self._frames.pop(pfn, None)

    def frames(self) -> Iterator[int]:
        """Frame numbers that hold data (in no particular order)."""
        return iter(self._frames)

    def _check(self) -> None:
        """Every stored frame is a whole frame inside the installed RAM."""
        for pfn, frame in self._frames.items():
            assert len(frame) == FRAME_SIZE, (
                f"PhysMem._check: frame {pfn:#x} has {len(frame)} bytes"
            )
            assert self.limit is None or (pfn + 1) << FRAME_SHIFT <= self.limit, (
                f"PhysMem._check: frame {pfn:#x} beyond limit {self.limit:#x}"
            )

    def __repr__(self) -> str:
        limit = "unbounded" if self.limit is None else f"{self.limit:#x}"
        return f"PhysMem(limit={limit}, frames_in_use={len(self._frames)})"


class ImageMem(PhysMem):
    """``PhysMem`` over an image file mapped read-only (``PhysMem.from_file``).

    A frame is copied from the file into ``_frames`` the first time anything touches it (an
    all-zero one is only remembered as seen); writes go to the copies, never to the file. So the
    cost is the frames a walk visits, not the size of the file.
    """

    __slots__ = ("_backing", "_seen")

    def __init__(self, backing: bytes | mmap.mmap, limit: int | None = None) -> None:
        super().__init__(limit)
        self._backing = backing
        self._seen: set[int] = set()  # frames taken from the file (or zeroed): not to load again

    def _missing(self, pfn: int) -> bytearray | None:
        if pfn in self._seen:
            return None
        self._seen.add(pfn)
        base = pfn << FRAME_SHIFT
        chunk = self._backing[base : base + FRAME_SIZE]
        if chunk.count(0) == len(chunk):  # all zeros (or beyond the file)
            return None
        frame = self._frames[pfn] = bytearray(FRAME_SIZE)
        frame[: len(chunk)] = chunk
        return frame

    def zero_frame(self, pfn: int) -> None:
        super().zero_frame(pfn)
        self._seen.add(pfn)

    def frames(self) -> Iterator[int]:
        for pfn in range((len(self._backing) + FRAME_MASK) >> FRAME_SHIFT):
            self._missing(pfn)  # reads the whole file: only for tools that list every frame
        return super().frames()

    def to_image(self, size: int | None = None) -> bytes:
        if size is None:
            top = (max(self._frames, default=-1) + 1) << FRAME_SHIFT
            size = max(len(self._backing), top) if self.limit is None else self.limit
        out = bytearray(self._backing[:size])
        out += bytes(size - len(out))
        for pfn in self._seen:
            base = pfn << FRAME_SHIFT
            if base < size:
                n = min(FRAME_SIZE, size - base)
                frame = self._frames.get(pfn)
                out[base : base + n] = frame[:n] if frame is not None else bytes(n)
        return bytes(out)
