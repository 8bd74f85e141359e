#!/usr/bin/env python3
"""mkimage.py - small valid images for the ingest tests, no third-party modules.

usage: mkimage.py jpeg|png|webp WIDTH HEIGHT [SEED [PAD]] > FILE
       mkimage.py -d DIR jpeg|png|webp WIDTH HEIGHT FIRST LAST

Each is a flat grey picture that libjpeg, libpng and libwebp decode; SEED
(an integer) changes the bytes so two fixtures differ; PAD adds about that
many bytes of JPEG comment segments (for benchmarks).
"""
import struct
import sys
import zlib


def jpeg(w, h, seed, pad=0):
    # Baseline greyscale, one Huffman code per table: each 8x8 block is
    # "DC difference 0, end of block", two bits.
    out = bytearray(b"\xff\xd8")
    com = b"dq fixture %d" % seed
    out += b"\xff\xfe" + struct.pack(">H", len(com) + 2) + com
    while pad > 0:
        n = min(pad, 65000)
        filler = bytes((seed + i) % 251 for i in range(n))
        out += b"\xff\xfe" + struct.pack(">H", n + 2) + filler
        pad -= n
    out += b"\xff\xdb" + struct.pack(">HB", 67, 0) + bytes([1] * 64)
    out += b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + bytes([1, 0x11, 0])
    for cls in (0x00, 0x10):  # DC table 0, AC table 0: symbol 0, length 1
        out += b"\xff\xc4" + struct.pack(">HB", 3 + 16 + 1, cls)
        out += bytes([1] + [0] * 15) + b"\x00"
    out += b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0x00, 0, 63, 0])
    blocks = ((w + 7) // 8) * ((h + 7) // 8)
    nbits = 2 * blocks
    data = bytearray(nbits // 8)  # all-zero bits
    if nbits % 8:
        data.append((1 << (8 - nbits % 8)) - 1)  # pad with ones
    out += data + b"\xff\xd9"
    return bytes(out)


def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))


def png(w, h, seed):
    z = zlib.compressobj(9)
    row = b"\x00" + bytes([seed % 256]) * w
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", idat) + chunk(b"IEND", b""))


class Bits:
    def __init__(self):
        self.v, self.n = 0, 0

    def put(self, value, count):  # LSB first, as VP8L reads
        self.v |= value << self.n
        self.n += count

    def bytes(self):
        return self.v.to_bytes((self.n + 7) // 8, "little")


def webp(w, h, seed):
    # Lossless VP8L: no transform, no colour cache, no meta codes, five
    # simple one-symbol prefix codes: every pixel costs zero bits.
    b = Bits()
    b.put(w - 1, 14)
    b.put(h - 1, 14)
    b.put(0, 1)  # alpha unused
    b.put(0, 3)  # version
    b.put(0, 1)  # no transform
    b.put(0, 1)  # no colour cache
    b.put(0, 1)  # no meta prefix codes
    for sym in (seed % 256, 128, 128, 255, 0):  # green, red, blue, alpha, dist
        b.put(1, 1)  # simple code
        b.put(0, 1)  # one symbol
        b.put(1, 1)  # 8-bit symbol
        b.put(sym, 8)
    vp8l = b"\x2f" + b.bytes()
    if len(vp8l) % 2:
        vp8l += b"\x00"
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def main():
    make = {"jpeg": jpeg, "png": png, "webp": webp}
    if len(sys.argv) == 8 and sys.argv[1] == "-d" and sys.argv[3] in make:
        # many at once: DIR/SEED.jpeg for SEED in FIRST..LAST
        d, kind = sys.argv[2], sys.argv[3]
        w, h, first, last = (int(a) for a in sys.argv[4:8])
        for seed in range(first, last + 1):
            with open("%s/%d.%s" % (d, seed, kind), "wb") as f:
                f.write(make[kind](w, h, seed))
        return 0
    if len(sys.argv) not in (4, 5, 6) or sys.argv[1] not in make:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 64
    w, h = int(sys.argv[2]), int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) >= 5 else 0
    if len(sys.argv) == 6:
        if sys.argv[1] != "jpeg":
            sys.stderr.write("mkimage.py: PAD is for jpeg only\n")
            return 64
        sys.stdout.buffer.write(jpeg(w, h, seed, int(sys.argv[5])))
    else:
        sys.stdout.buffer.write(make[sys.argv[1]](w, h, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
