#!/usr/bin/env python3
"""Converts binary PPM (P6, what ldmtrain and ldmtool write) to PNG.

Standard library only, so the docs' sample grids can be made anywhere:
  tools/ppm_to_png.py IN.ppm OUT.png [SCALE]
SCALE (default 1) enlarges by pixel repetition.
"""
import struct
import sys
import zlib


def read_ppm(path):
    data = open(path, "rb").read()
    fields, offset = [], 0
    while len(fields) < 4:  # magic, width, height, maxval
        while data[offset:offset + 1].isspace():
            offset += 1
        end = offset
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[offset:end])
        offset = end
    if fields[0] != b"P6" or fields[3] != b"255":
        raise SystemExit(f"{path}: not an 8-bit binary PPM")
    width, height = int(fields[1]), int(fields[2])
    return width, height, data[offset + 1:offset + 1 + width * height * 3]


def write_png(path, width, height, rgb):
    rows = b"".join(b"\0" + rgb[y * width * 3:(y + 1) * width * 3]
                    for y in range(height))

    def chunk(kind, payload):
        body = kind + payload
        return (struct.pack(">I", len(payload)) + body +
                struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                  chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    width, height, rgb = read_ppm(sys.argv[1])
    scale = int(sys.argv[3]) if len(sys.argv) == 4 else 1
    if scale > 1:
        scaled = bytearray()
        for y in range(height):
            row = bytearray()
            for x in range(width):
                row += rgb[(y * width + x) * 3:(y * width + x) * 3 + 3] * scale
            scaled += bytes(row) * scale
        rgb, width, height = bytes(scaled), width * scale, height * scale
    write_png(sys.argv[2], width, height, rgb)


if __name__ == "__main__":
    main()
