#!/usr/bin/env python3
"""corrupt.py - damaged copies of good images, whole in structure, for the
validation tests: each keeps the markers a sniffer checks (SOI/EOI, IHDR and
IEND, the RIFF length) and spoils only the data inside.

usage: corrupt.py KIND IN > OUT

  jpeg-scan  the middle half of the first scan's entropy-coded data
             overwritten with pseudo-random bytes (no 0xFF, so no marker)
  jpeg-cut   the scan cut at half its length, the EOI marker put back
  png-idat   bytes in the middle of the first IDAT overwritten, its CRC
             recomputed (the zlib stream is wrong, the chunk is not)
  png-crc    a tEXt chunk with a wrong CRC put before IEND (the pixels are
             whole; the file is damaged all the same)
  webp-cut   the image chunk cut at half its length, the chunk and RIFF
             lengths rewritten to match
"""
import random
import struct
import sys
import zlib


def jpeg_scan(d):
    """(start, end) of the first scan's entropy-coded data."""
    i = d.index(b"\xff\xda")
    start = i + 2 + struct.unpack(">H", d[i + 2:i + 4])[0]
    end = d.rindex(b"\xff\xd9")
    return start, end


def idat(d):
    """(offset of the chunk's length field, data length) of the first IDAT."""
    i = d.index(b"IDAT") - 4
    return i, struct.unpack(">I", d[i:i + 4])[0]


def main(kind, path):
    d = bytearray(open(path, "rb").read())
    rnd = random.Random(8)
    if kind == "jpeg-scan":
        s, e = jpeg_scan(d)
        n = e - s
        for k in range(s + n // 4, s + 3 * n // 4):
            d[k] = rnd.randrange(0, 0xff)
    elif kind == "jpeg-cut":
        s, e = jpeg_scan(d)
        d = d[:s + (e - s) // 2] + b"\xff\xd9"
    elif kind == "png-idat":
        i, n = idat(d)
        for k in range(i + 8 + n // 4, i + 8 + 3 * n // 4):
            d[k] = rnd.randrange(0, 0x100)
        crc = zlib.crc32(bytes(d[i + 4:i + 8 + n])) & 0xffffffff
        d[i + 8 + n:i + 12 + n] = struct.pack(">I", crc)
    elif kind == "png-crc":
        text = b"tEXtComment\0dq"
        crc = (zlib.crc32(text) ^ 1) & 0xffffffff
        i = d.rindex(b"IEND") - 4
        d[i:i] = struct.pack(">I", len(text) - 4) + text + struct.pack(">I", crc)
    elif kind == "webp-cut":
        n = struct.unpack("<I", d[16:20])[0] // 2
        d = d[:20 + n]
        d[16:20] = struct.pack("<I", n)
        d[4:8] = struct.pack("<I", len(d) - 8)
    else:
        sys.exit(__doc__)
    sys.stdout.buffer.write(bytes(d))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
