"""The Python client against a real ldmserve on localhost (port 0).

    test_client.py LDMSERVE REGISTRY
Exit 77 (CTest: skipped) when grpcio or the protobuf runtime is missing.
"""
import asyncio
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

try:
    import grpc  # noqa: F401
    from ldmclient import AsyncClient, Client, LdmError, Progress, Result
except ImportError as missing:
    print(f"skipped: {missing}")
    sys.exit(77)

SERVER, REGISTRY = sys.argv[1], sys.argv[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png(width, height, rgb):
    """A minimal RGB PNG (no PIL needed)."""
    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))

    def chunk(kind, payload):
        body = kind + payload
        return (struct.pack(">I", len(payload)) + body +
                struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF))

    return (PNG_SIGNATURE +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_lora(path):
    """A kohya-layout LoRA (CompVis module names, as old files use) of
    rank 1 on the shipped text-to-image model's first self-attention query
    projection (64 -> 64), in float32 safetensors written by hand."""
    module = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    tensors = {module + ".lora_down.weight": ([1, 64], [0.5] * 64),
               module + ".lora_up.weight": ([64, 1], [0.5] * 64),
               module + ".alpha": ([], [1.0])}
    header, data = {}, b""
    for name, (shape, values) in sorted(tensors.items()):
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded + data)


def size_of(data):
    return struct.unpack(">II", data[16:24])


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.TemporaryDirectory()
        port_file = os.path.join(cls.work.name, "port")
        lora_dir = os.path.join(cls.work.name, "loras")
        os.mkdir(lora_dir)
        write_lora(os.path.join(lora_dir, "bold.safetensors"))
        cls.server = subprocess.Popen(
            [SERVER, "--listen=127.0.0.1:0", f"--port-file={port_file}",
             "--metrics-listen=", "--threads=1", f"--models={REGISTRY}",
             "--model-admin", f"--lora-dir={lora_dir}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file) or not open(port_file).read():
            if time.monotonic() > deadline or cls.server.poll() is not None:
                raise RuntimeError("ldmserve did not start")
            time.sleep(0.05)  # waiting for another process
        cls.address = "127.0.0.1:" + open(port_file).read().strip()
        cls.client = Client(cls.address, timeout=60)
        while True:  # until the models are loaded
            if all(m["state"] == "MODEL_STATE_READY"
                   for m in cls.client.models()):
                break
            time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.terminate()
        cls.server.wait(timeout=60)
        cls.work.cleanup()

    def test_models_lists_the_shipped_models(self):
        names = {m["name"]: m for m in self.client.models()}
        self.assertIn("shapes-txt2img", names)
        self.assertIn("TASK_TEXT_TO_IMAGE",
                      names["shapes-txt2img"]["default_for"])
        self.assertEqual(names["shapes-txt2img"]["native_width"], 64)
        # 4 pixels a latent pixel, halved twice in the UNet.
        self.assertEqual(names["shapes-txt2img"]["size_multiple"], 16)
        placements = names["shapes-txt2img"]["placements"]
        self.assertEqual(len(placements), 1)
        # Loaded as f32: 4 bytes for each element of the three stages' weights
        # the file's header lists (stored in f16; the file's noise schedule
        # buffers are recomputed, not loaded).
        weights = os.path.join(os.path.dirname(REGISTRY), "shapes-txt2img",
                               "weights.safetensors")
        with open(weights, "rb") as file:
            header = json.loads(file.read(
                struct.unpack("<Q", file.read(8))[0]))
        elements = sum(math.prod(tensor["shape"])
                       for name, tensor in header.items()
                       if name.startswith(("model.diffusion_model.",
                                           "first_stage_model.",
                                           "cond_stage_model.")))
        self.assertEqual(placements[0].pop("weight_bytes"), 4 * elements)
        self.assertEqual(placements,
                         [{"device": "cpu", "dtype": "f32", "vae_dtype": "f32",
                           "text_dtype": "f32"}])

    def test_txt2img_returns_png_bytes_and_is_seeded(self):
        first = self.client.txt2img("a red circle", steps=3, seed=5,
                                    num_images=2)
        self.assertEqual(len(first.images), 2)
        self.assertTrue(first.images[0].png.startswith(PNG_SIGNATURE))
        self.assertEqual(size_of(first.images[0].png), (64, 64))
        self.assertEqual([i.seed for i in first.images], [5, 6])
        self.assertEqual(first.model, "shapes-txt2img")
        self.assertGreater(first.timings_ms["total"], 0)
        again = self.client.txt2img("a red circle", steps=3, seed=5,
                                    num_images=2)
        self.assertEqual(first.images[1].png, again.images[1].png)
        # Defaults resolved (the shapes model's guidance 4), and the
        # parameters as other front ends read them, also in the PNG.
        self.assertEqual(first.settings["steps"], 3)
        self.assertEqual(first.settings["sampler"], "SAMPLER_KIND_DDIM")
        self.assertEqual(first.settings["guidance_scale"], 4.0)
        self.assertEqual((first.settings["width"], first.settings["height"]),
                         (64, 64))
        self.assertIn("Seed: 6,", first.images[1].parameters)
        self.assertIn(first.images[1].parameters.encode(),
                      first.images[1].png)

    def test_jpeg_and_webp_carry_their_parameters_where_pil_reads_them(self):
        try:
            from PIL import Image as PilImage
        except ImportError:
            self.skipTest("python3-pil is not installed")
        import io
        prompt = "a red circle, caf\u00e9 \u6771\u4eac"
        for output_format, pil_format in (("jpeg", "JPEG"), ("webp", "WEBP"),
                                          ("webp_lossless", "WEBP")):
            result = self.client.txt2img(prompt, steps=2, seed=3,
                                         output_format=output_format,
                                         quality=0)
            image = result.images[0]
            self.assertEqual(image.format, pil_format.lower())
            self.assertEqual(result.settings["output_format"],
                             "IMAGE_FORMAT_" + output_format.upper())
            # An independent reader: PIL decodes the file and finds the
            # parameters in the EXIF UserComment, as AUTOMATIC1111 reads
            # them (the "UNICODE" charset, UTF-16 in the block's order).
            with PilImage.open(io.BytesIO(image.data)) as opened:
                self.assertEqual(opened.format, pil_format)
                self.assertEqual(opened.size, (64, 64))
                exif_ifd = opened.getexif().get_ifd(0x8769)
            comment = exif_ifd[0x9286]
            self.assertEqual(comment[:8], b"UNICODE\x00")
            self.assertEqual(comment[8:].decode("utf-16-be"),
                             image.parameters)
            self.assertTrue(image.parameters.startswith(prompt))

    def test_inputs_are_fitted_as_asked(self):
        image = png(50, 40, (240, 220, 40))
        with self.assertRaises(LdmError) as raised:
            self.client.img2img(image, "a red circle", steps=2)
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")
        self.assertIn("resize_mode", raised.exception.details)
        result = self.client.img2img(image, "a red circle", steps=2,
                                     resize_mode="scale")
        self.assertEqual(size_of(result.images[0].png), (48, 48))
        self.assertEqual(result.settings["input_resize"],
                         {"mode": "RESIZE_MODE_SCALE", "original_width": 50,
                          "original_height": 40, "width": 48, "height": 48})
        with self.assertRaises(ValueError):
            self.client.img2img(image, "x", resize_mode="stretch")

    def test_stream_yields_progress_then_the_result(self):
        events = list(self.client.stream_txt2img("a blue square", steps=4,
                                                 seed=1))
        steps = [e.step for e in events if isinstance(e, Progress)]
        self.assertEqual(steps, [1, 2, 3, 4])
        self.assertIsInstance(events[-1], Result)

    def test_cancel_from_the_iterator(self):
        generation = self.client.stream_txt2img("a green diamond", steps=200,
                                                num_images=4)
        with self.assertRaises(LdmError) as raised:
            for event in generation:
                if isinstance(event, Progress):
                    generation.cancel()
        self.assertEqual(raised.exception.code, "CANCELLED")

    def test_errors_carry_the_status(self):
        with self.assertRaises(LdmError) as raised:
            self.client.txt2img("x", model="no-such-model")
        self.assertEqual(raised.exception.code, "NOT_FOUND")
        with self.assertRaises(LdmError) as raised:
            self.client.txt2img("x", steps=100000)
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")
        self.assertIn("steps", raised.exception.details)

    def test_models_load_and_unload_at_run_time(self):
        loaded = self.client.load_model(
            "sr-again", "shapes-sr/weights.safetensors",
            config="shapes-sr/config.json")
        self.assertEqual(loaded["state"], "MODEL_STATE_READY")
        self.assertEqual(loaded["tasks"], ["TASK_SUPER_RESOLUTION"])
        self.assertGreater(loaded["placements"][0]["weight_bytes"], 0)
        upscaled = self.client.upscale(png(16, 16, (40, 70, 220)),
                                       model="sr-again", steps=2)
        self.assertEqual(size_of(upscaled.images[0].png), (64, 64))
        self.assertEqual(upscaled.model, "sr-again")
        self.assertEqual(self.client.unload_model("sr-again"), 0)
        self.assertNotIn("sr-again",
                         [m["name"] for m in self.client.models()])
        with self.assertRaises(LdmError) as raised:
            self.client.load_model("x", "/etc/passwd")
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")

    def test_loras_change_the_image_and_are_echoed(self):
        self.assertEqual(self.client.loras(), ["bold"])
        plain = self.client.txt2img("a red circle", steps=3, seed=9)
        styled = self.client.txt2img("a red circle", steps=3, seed=9,
                                     loras={"bold": 1.5})
        self.assertNotEqual(styled.images[0].data, plain.images[0].data)
        self.assertEqual(styled.settings["loras"], {"bold": 1.5})
        with self.assertRaises(LdmError) as raised:
            self.client.txt2img("x", loras={"nope": 1.0})
        self.assertEqual(raised.exception.code, "NOT_FOUND")

    def test_inpaint_and_upscale(self):
        image = png(64, 64, (240, 220, 40))
        mask = png(64, 64, (255, 255, 255))
        inpainted = self.client.inpaint(image, mask, "a red circle", steps=3,
                                        seed=2)
        self.assertEqual(size_of(inpainted.images[0].png), (64, 64))
        upscaled = self.client.upscale(png(16, 16, (40, 70, 220)), steps=3)
        self.assertEqual(size_of(upscaled.images[0].png), (64, 64))
        self.assertEqual(upscaled.model, "shapes-sr")

    def test_jobs_outlive_their_stream(self):
        generation = self.client.stream_txt2img(
            "a red circle", steps=4, seed=3, cancel_on_disconnect=False,
            client_request_id="py-jobs")
        job_id = generation.job_id
        self.assertTrue(job_id.startswith("job-"))
        generation.cancel()  # The job runs on.
        watched = self.client.watch_job(job_id).result()
        job = self.client.get_job(job_id)
        self.assertEqual(job.state, "SUCCEEDED")
        self.assertTrue(job.done)
        self.assertEqual(job.status_code, "OK")
        self.assertEqual(job.client_request_id, "py-jobs")
        self.assertEqual((job.step, job.total_steps), (4, 4))
        self.assertEqual(job.result.images[0].png, watched.images[0].png)
        self.assertIsNone(self.client.get_job(job_id,
                                              with_result=False).result)
        listed = [j.job_id for j in self.client.list_jobs(
            states=["SUCCEEDED"])]
        self.assertIn(job_id, listed)
        with self.assertRaises(ValueError):
            self.client.list_jobs(states=["DONE"])
        with self.assertRaises(LdmError) as raised:
            self.client.get_job("job-00000000-1")
        self.assertEqual(raised.exception.code, "NOT_FOUND")

    def test_cancel_job_by_id(self):
        generation = self.client.stream_txt2img("a green diamond", steps=200,
                                                num_images=4)
        job_id = generation.job_id
        cancelled = self.client.cancel_job(job_id)
        self.assertEqual(cancelled.state, "CANCELLED")
        self.assertEqual(cancelled.status_code, "CANCELLED")
        with self.assertRaises(LdmError) as raised:
            generation.result()
        self.assertEqual(raised.exception.code, "CANCELLED")

    def test_samplers_and_schedules(self):
        result = self.client.txt2img("a red circle", steps=3, seed=4,
                                     sampler="dpmpp_2m", schedule="karras")
        self.assertEqual(result.settings["sampler"],
                         "SAMPLER_KIND_DPM_SOLVER_PP_2M")
        self.assertEqual(result.settings["sigma_schedule"],
                         "SIGMA_SCHEDULE_KARRAS")
        self.assertIn("Sampler: DPM++ 2M Karras", result.images[0].parameters)
        # The shapes models read prompts with a word-level encoder.
        self.assertEqual(result.settings["clip_skip"], 0)
        with self.assertRaises(LdmError) as raised:
            self.client.txt2img("a red circle", clip_skip=2)
        self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")
        with self.assertRaises(ValueError):
            self.client.txt2img("a red circle", schedule="cosine")

    def test_health(self):
        self.assertEqual(self.client.health(), "SERVING")

    def test_async_client(self):
        async def run():
            client = AsyncClient(self.address, timeout=60)
            try:
                return await client.txt2img("a white square", steps=2, seed=9)
            finally:
                await client.close()
        result = asyncio.run(run())
        blocking = self.client.txt2img("a white square", steps=2, seed=9)
        self.assertEqual(result.images[0].png, blocking.images[0].png)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
