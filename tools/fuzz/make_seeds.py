#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/).

    PYTHONPATH=build/client/python/gen /usr/bin/python3 tools/fuzz/make_seeds.py

Seeds are small valid inputs of each shape the parser knows, plus a few
near misses; libFuzzer mutates from there. Rerun after a format change.
"""
import json
import os
import shutil
import struct
import sys
import zlib

from ldm.v1 import image_synthesis_pb2 as pb

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def png(width, height, colour_type=2, bit_depth=8, palette=None, trns=None):
    """A minimal PNG: one IDAT, filter 0 on every row."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row_bytes = (width * channels * bit_depth + 7) // 8
    raw = b"".join(b"\x00" + bytes((x * 37 + y * 11) & 0xFF
                                   for x in range(row_bytes))
                   for y in range(height))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", palette)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    # GenerateRequest: each task, the sampler, images inside.
    small = png(16, 16)
    requests = {
        "txt2img": pb.GenerateRequest(
            text_to_image=pb.TextToImage(prompt="a red circle", width=64,
                                         height=64),
            sampler=pb.SamplerSettings(steps=5, guidance_scale=4),
            seed=7, num_images=2, client_request_id="r1"),
        "txt2img_weights": pb.GenerateRequest(
            text_to_image=pb.TextToImage(prompt="a (red:1.4) [circle]",
                                         negative_prompt="blue")),
        "img2img": pb.GenerateRequest(
            image_to_image=pb.ImageToImage(prompt="a blue square",
                                           init_image=small, strength=0.6)),
        "inpaint": pb.GenerateRequest(
            inpaint=pb.Inpaint(prompt="a circle", image=small,
                               mask=png(16, 16, colour_type=0))),
        "upscale": pb.GenerateRequest(
            super_resolution=pb.SuperResolution(low_res_image=small)),
        "sampler_plms": pb.GenerateRequest(
            text_to_image=pb.TextToImage(prompt="x"),
            sampler=pb.SamplerSettings(kind=pb.SAMPLER_KIND_PLMS, steps=3)),
        "previews": pb.GenerateRequest(
            text_to_image=pb.TextToImage(prompt="x"), preview_every=2,
            progress_every=1, priority=3),
    }
    for name, request in requests.items():
        write("generate_request", name, request.SerializeToString())

    # PNG: every colour type the decoder converts, and broken ones. The
    # JPEG (baseline, progressive, grey, with EXIF, truncated) and WebP
    # (lossy, lossless, with EXIF) seeds beside them were written once by
    # cjpeg, cwebp and webpmux (Debian's libjpeg-turbo-progs and webp) and
    # are kept as files.
    write("image_decode", "rgb", png(8, 8))
    write("image_decode", "grey", png(8, 4, colour_type=0))
    write("image_decode", "grey_alpha", png(4, 8, colour_type=4))
    write("image_decode", "rgba", png(5, 3, colour_type=6))
    write("image_decode", "rgb16", png(3, 3, bit_depth=16))
    write("image_decode", "grey1", png(9, 2, colour_type=0, bit_depth=1))
    write("image_decode", "palette", png(4, 4, colour_type=3,
                                       palette=bytes(range(48)),
                                       trns=b"\x00\x80"))
    write("image_decode", "truncated", png(8, 8)[:40])
    write("image_decode", "huge_header", png(1, 1)[:16] +
          struct.pack(">II", 60000, 60000) + png(1, 1)[24:])

    # safetensors: dtypes, shapes, metadata, empty tensors.
    write("safetensors", "f32", safetensors(
        {"a.weight": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))}))
    write("safetensors", "mixed", safetensors(
        {"h": ("F16", [3], b"\x00\x3c" * 3), "b": ("BF16", [1, 2], b"\x80\x3f" * 2),
         "i": ("I64", [1], struct.pack("<q", 5)), "u": ("U8", [4], b"abcd")},
        metadata={"format": "pt", "ldmserve.vae_dtype": "f32"}))
    write("safetensors", "empty_tensor", safetensors({"e": ("F32", [0, 3], b"")}))
    write("safetensors", "scalar", safetensors({"s": ("F32", [], b"\x00" * 4)}))
    write("safetensors", "short_header", b"\x10\x00\x00\x00\x00\x00\x00\x00{}")

    # Model configs: the shipped families and the shapes models.
    configs = os.path.join(ROOT, "models", "configs")
    for name in sorted(os.listdir(configs)):
        if name.endswith(".json"):
            with open(os.path.join(configs, name), "rb") as f:
                write("model_config", name, f.read())
    with open(os.path.join(ROOT, "models", "shapes-sr", "config.json")) as f:
        write("model_config", "shapes-sr.json", f.read())

    # Registries.
    with open(os.path.join(ROOT, "models", "registry.json")) as f:
        write("registry", "shipped.json", f.read())
    write("registry", "families.json", json.dumps({
        "configs": "configs",
        "models": [{"name": "sd", "family": "sd-v1", "weights": "sd.safetensors",
                    "tasks": ["text_to_image"], "default_for": ["text_to_image"],
                    "devices": ["cpu"], "dtype": "f16", "vae_dtype": "f32",
                    "required": False, "family_unknown": 1},
                   {"name": "auto", "weights": "/abs/w.safetensors"}]}))

    # Prompts: tokenizers and the emphasis syntax.
    prompts = {
        "plain": "a red circle above a blue square",
        "weights": "a (red:1.5) circle, [[blue]] (square:0.8) \\(literal\\)",
        "nested": "((((a)))) [[[b]]] (c:1.2 (d:0.5))",
        "open": "(unclosed [bracket",
        "unicode": "Ein Café — 東京 🚀 naïve ﬁ",
        "long": " ".join(["circle"] * 100),
        "numbers": "(x:1e30) (y:-2) (z:nan) (w:)",
    }
    for name, text in prompts.items():
        write("tokenizers", name, text)
        write("prompt_weights", name, text)
    print(f"seeds written under {os.path.relpath(CORPUS, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
