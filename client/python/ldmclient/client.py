"""The client: plain results (image bytes, seeds, timings), no PIL
needed."""

import dataclasses
import os
from typing import Dict, Iterator, List, Optional, Union

import grpc

from ldm.v1 import image_synthesis_pb2 as pb
from ldm.v1 import image_synthesis_pb2_grpc as pb_grpc

_SAMPLERS = {
    "ddim": pb.SAMPLER_KIND_DDIM,
    "plms": pb.SAMPLER_KIND_PLMS,
    "ddpm": pb.SAMPLER_KIND_DDPM,
    "euler_a": pb.SAMPLER_KIND_EULER_ANCESTRAL,
    "dpmpp_2m": pb.SAMPLER_KIND_DPM_SOLVER_PP_2M,
    "euler": pb.SAMPLER_KIND_EULER,
    "heun": pb.SAMPLER_KIND_HEUN,
    "lms": pb.SAMPLER_KIND_LMS,
    "dpmpp_2m_sde": pb.SAMPLER_KIND_DPM_SOLVER_PP_2M_SDE,
    "dpmpp_2s_a": pb.SAMPLER_KIND_DPM_SOLVER_PP_2S_ANCESTRAL,
    "unipc": pb.SAMPLER_KIND_UNI_PC,
}
_SCHEDULES = {
    "uniform": pb.SIGMA_SCHEDULE_UNSPECIFIED,
    "karras": pb.SIGMA_SCHEDULE_KARRAS,
    "exponential": pb.SIGMA_SCHEDULE_EXPONENTIAL,
}
_FORMATS = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
    "webp_lossless": pb.IMAGE_FORMAT_WEBP_LOSSLESS,
}
_RESIZE_MODES = {
    "exact": pb.RESIZE_MODE_UNSPECIFIED,
    "scale": pb.RESIZE_MODE_SCALE,
    "crop": pb.RESIZE_MODE_CROP,
    "pad": pb.RESIZE_MODE_PAD,
}


class LdmError(Exception):
    """A call ended with a non-OK status: `code` is its name
    ("INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED", ...)."""

    def __init__(self, code: str, details: str):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


@dataclasses.dataclass
class Image:
    # The encoded image: PNG unless output_format asked for another
    # (the name stays for compatibility; `data` is the same bytes).
    png: bytes
    width: int
    height: int
    seed: int
    # The generation parameters, also in the file's metadata.
    parameters: str = ""

    @property
    def data(self) -> bytes:
        return self.png

    @property
    def format(self) -> str:
        """"png", "jpeg" or "webp", from the bytes."""
        if self.png[:3] == b"\xff\xd8\xff":
            return "jpeg"
        if self.png[8:12] == b"WEBP":
            return "webp"
        return "png"


@dataclasses.dataclass
class Result:
    images: List[Image]
    model: str
    warnings: List[str]
    timings_ms: Dict[str, int]  # queue, encode, denoise, decode, total
    # What the job ran with, defaults resolved: model, task, prompt,
    # negative_prompt, sampler, steps, guidance_scale, eta, strength,
    # width, height, seed, num_images, clip_skip (0: not CLIP).
    settings: Dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Queued:
    position: int


@dataclasses.dataclass
class Started:
    queue_time_ms: int


@dataclasses.dataclass
class Progress:
    step: int
    total_steps: int
    elapsed_ms: int
    estimated_remaining_ms: int
    preview_png: bytes


Event = Union[Queued, Started, Progress, Result]


@dataclasses.dataclass
class Job:
    """A job as GetJob, CancelJob and ListJobs see it."""
    job_id: str
    client_request_id: str
    # QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.
    state: str
    model: str
    task: str
    queue_position: int  # While QUEUED.
    step: int
    total_steps: int
    created_unix_ms: int
    started_unix_ms: int  # 0 while QUEUED.
    finished_unix_ms: int  # 0 until it ended.
    # The final status' name ("OK", "CANCELLED", "DEADLINE_EXCEEDED"...)
    # and message once it ended; "" before.
    status_code: str
    status_message: str
    settings: Dict[str, object]
    # When SUCCEEDED, asked for and still kept by the server.
    result: Optional[Result]
    # SUCCEEDED, but the server dropped the result (its memory budget).
    result_dropped: bool
    client: str
    priority: int

    @property
    def done(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED")


_JOB_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _settings(s) -> Dict[str, object]:
    return {"model": s.model, "task": pb.Task.Name(s.task),
            "prompt": s.prompt, "negative_prompt": s.negative_prompt,
            "sampler": pb.SamplerKind.Name(s.sampler), "steps": s.steps,
            "guidance_scale": s.guidance_scale, "eta": s.eta,
            "strength": s.strength, "width": s.width,
            "height": s.height, "seed": s.seed,
            "num_images": s.num_images, "clip_skip": s.clip_skip,
            "sigma_schedule": pb.SigmaSchedule.Name(s.sigma_schedule),
            "output_format": pb.ImageFormat.Name(s.output_format),
            "output_quality": s.output_quality,
            "loras": {lora.name: lora.weight for lora in s.loras},
            # What was done to the input image; None when nothing was.
            "input_resize": ({
                "mode": pb.ResizeMode.Name(s.input_resize.mode),
                "original_width": s.input_resize.original_width,
                "original_height": s.input_resize.original_height,
                "width": s.input_resize.width,
                "height": s.input_resize.height}
                if s.HasField("input_resize") else None)}


def _job(message) -> Job:
    ended = message.finished_unix_ms != 0
    return Job(
        job_id=message.job_id, client_request_id=message.client_request_id,
        state=pb.JobState.Name(message.state)[len("JOB_STATE_"):],
        model=message.model, task=pb.Task.Name(message.task),
        queue_position=message.queue_position, step=message.step,
        total_steps=message.total_steps,
        created_unix_ms=message.created_unix_ms,
        started_unix_ms=message.started_unix_ms,
        finished_unix_ms=message.finished_unix_ms,
        status_code=(_STATUS_NAMES.get(message.status_code,
                                       str(message.status_code))
                     if ended else ""),
        status_message=message.status_message,
        settings=_settings(message.settings),
        result=_result(message.result) if message.HasField("result") else None,
        result_dropped=message.result_dropped, client=message.client,
        priority=message.priority)


def _state_filter(states) -> List[int]:
    values = []
    for state in states or ():
        if state not in _JOB_STATES:
            raise ValueError(f"states: each one of {_JOB_STATES}")
        values.append(pb.JobState.Value("JOB_STATE_" + state))
    return values


def _health_status(reply: bytes) -> str:
    """grpc.health.v1.HealthCheckResponse's status (field 1, a varint) by
    hand: the health stubs are not a dependency."""
    names = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING",
             3: "SERVICE_UNKNOWN"}
    if len(reply) >= 2 and reply[0] == 0x08:
        return names.get(reply[1], "UNKNOWN")
    return "UNKNOWN"  # Field absent: the default, UNKNOWN.


def _result(message) -> Result:
    timings = message.timings
    settings = _settings(message.settings)
    return Result(
        images=[Image(i.data, i.width, i.height, i.seed, i.parameters)
                for i in message.images],
        model=message.model,
        warnings=list(message.warnings),
        timings_ms={"queue": timings.queue_ms, "encode": timings.encode_ms,
                    "denoise": timings.denoise_ms,
                    "decode": timings.decode_ms, "total": timings.total_ms},
        settings=settings)


def _event(response) -> Event:
    kind = response.WhichOneof("event")
    if kind == "queued":
        return Queued(response.queued.position)
    if kind == "started":
        return Started(response.started.queue_time_ms)
    if kind == "progress":
        p = response.progress
        return Progress(p.step, p.total_steps, p.elapsed_ms,
                        p.estimated_remaining_ms, p.preview_png)
    return _result(response.result)


def _error(error: grpc.RpcError) -> LdmError:
    return LdmError(error.code().name, error.details() or "")


def _request(task: str, *, model: str = "", steps: int = 0,
             guidance_scale: float = 0.0, sampler: str = "ddim",
             schedule: str = "uniform",
             eta: Optional[float] = None, seed: int = 0, num_images: int = 1,
             preview_every: int = 0, priority: int = 0,
             cancel_on_disconnect: Optional[bool] = None,
             client_request_id: str = "", clip_skip: Optional[int] = None,
             output_format: str = "png", quality: int = 0,
             resize_mode: str = "exact",
             loras: Optional[Dict[str, float]] = None,
             **fields) -> pb.GenerateRequest:
    if sampler not in _SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(_SAMPLERS)}")
    if output_format not in _FORMATS:
        raise ValueError(f"output_format must be one of {sorted(_FORMATS)}")
    if resize_mode not in _RESIZE_MODES:
        raise ValueError(
            f"resize_mode must be one of {sorted(_RESIZE_MODES)}")
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(_SCHEDULES)}")
    settings = pb.SamplerSettings(kind=_SAMPLERS[sampler], steps=steps,
                                  guidance_scale=guidance_scale,
                                  sigma_schedule=_SCHEDULES[schedule])
    if eta is not None:  # Unset: the model's default (1 for SR models).
        settings.eta = eta
    request = pb.GenerateRequest(
        model=model, seed=seed, num_images=num_images,
        preview_every=preview_every, priority=priority, sampler=settings,
        client_request_id=client_request_id,
        output_format=_FORMATS[output_format], output_quality=quality,
        resize_mode=_RESIZE_MODES[resize_mode])
    if clip_skip is not None:  # CLIP models: 2 = the penultimate layer.
        request.clip_skip = clip_skip
    # {"name": weight}: adapters of the server's --lora-dir, in order.
    for name, weight in (loras or {}).items():
        request.loras.add(name=name, weight=weight)
    if cancel_on_disconnect is not None:
        # False: the job runs on when this call ends (watch_job, get_job).
        request.cancel_on_disconnect = cancel_on_disconnect
    getattr(request, task).CopyFrom(
        {"text_to_image": pb.TextToImage, "image_to_image": pb.ImageToImage,
         "inpaint": pb.Inpaint,
         "super_resolution": pb.SuperResolution}[task](**fields))
    return request


class Generation:
    """A running generation: iterate for its events (the last is the
    Result); cancel() ends the call (and the job, unless it was started
    with cancel_on_disconnect=False), and the iteration then raises
    LdmError("CANCELLED")."""

    def __init__(self, call):
        self._call = call

    @property
    def job_id(self) -> str:
        """The server's id for the job (waits for the call's headers); ""
        when the call was refused."""
        try:
            for key, value in self._call.initial_metadata() or ():
                if key == "job-id":
                    return value
        except grpc.RpcError:
            pass
        return ""

    def __iter__(self) -> Iterator[Event]:
        try:
            for response in self._call:
                yield _event(response)
        except grpc.RpcError as error:
            raise _error(error) from None

    def cancel(self) -> None:
        self._call.cancel()

    def result(self) -> Result:
        """Waits for the end and returns the Result."""
        final = None
        for event in self:
            if isinstance(event, Result):
                final = event
        if final is None:
            raise LdmError("INTERNAL", "stream ended without a result")
        return final


@dataclasses.dataclass
class Tls:
    """TLS for the channel: PEM bytes. `ca` verifies the server (None =
    the system's CAs); `cert` and `key` are a client certificate for a
    server that asks for one (mTLS); `server_name` overrides the name the
    server's certificate must carry (when the address is an IP)."""
    ca: Optional[bytes] = None
    cert: Optional[bytes] = None
    key: Optional[bytes] = None
    server_name: Optional[str] = None

    @staticmethod
    def from_files(ca: Optional[str] = None, cert: Optional[str] = None,
                   key: Optional[str] = None,
                   server_name: Optional[str] = None) -> "Tls":
        def read(path):
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()
        return Tls(read(ca), read(cert), read(key), server_name)


def _channel_setup(tls: Optional[Tls], token: Optional[str]):
    """Channel options, credentials (None = plaintext) and call metadata."""
    options = [("grpc.max_receive_message_length", 64 << 20)]
    credentials = None
    if tls is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca, private_key=tls.key,
            certificate_chain=tls.cert)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override",
                            tls.server_name))
    if token is None:
        token = os.environ.get("LDMSERVE_TOKEN") or None
    metadata = (("authorization", "Bearer " + token),) if token else None
    return options, credentials, metadata


class Client:
    """A synchronous client over one channel. `timeout` (seconds) is the
    default deadline of each call; None = no deadline. `tls`: connect over
    TLS (see Tls); `token`: a bearer token for a server with --auth-tokens
    (default: $LDMSERVE_TOKEN)."""

    def __init__(self, address: str = "127.0.0.1:50051",
                 timeout: Optional[float] = None,
                 channel: Optional[grpc.Channel] = None,
                 tls: Optional[Tls] = None,
                 token: Optional[str] = None):
        options, credentials, self._metadata = _channel_setup(tls, token)
        if channel is not None:
            self._channel = channel
        elif credentials is not None:
            self._channel = grpc.secure_channel(address, credentials,
                                                options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.ImageSynthesisServiceStub(self._channel)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stream(self, request, timeout) -> Generation:
        return Generation(self._stub.Generate(
            request, timeout=timeout if timeout is not None else self._timeout,
            metadata=self._metadata))

    # Iterator forms: events as they come.
    def stream_txt2img(self, prompt: str, negative_prompt: str = "",
                       width: Optional[int] = None,
                       height: Optional[int] = None,
                       timeout: Optional[float] = None,
                       **settings) -> Generation:
        fields = {"prompt": prompt, "negative_prompt": negative_prompt}
        if width:
            fields["width"] = width
        if height:
            fields["height"] = height
        return self._stream(_request("text_to_image", **settings, **fields),
                            timeout)

    def stream_img2img(self, image: bytes, prompt: str, strength: float = 0.0,
                       negative_prompt: str = "",
                       timeout: Optional[float] = None,
                       **settings) -> Generation:
        return self._stream(_request(
            "image_to_image", init_image=image, prompt=prompt,
            strength=strength, negative_prompt=negative_prompt, **settings),
            timeout)

    def stream_inpaint(self, image: bytes, mask: bytes, prompt: str,
                       negative_prompt: str = "",
                       timeout: Optional[float] = None,
                       **settings) -> Generation:
        return self._stream(_request(
            "inpaint", image=image, mask=mask, prompt=prompt,
            negative_prompt=negative_prompt, **settings), timeout)

    def stream_upscale(self, low_res: bytes, scale: int = 0,
                       timeout: Optional[float] = None,
                       **settings) -> Generation:
        return self._stream(_request(
            "super_resolution", low_res_image=low_res, scale=scale,
            **settings), timeout)

    # Blocking forms: the Result.
    def txt2img(self, prompt: str, **kwargs) -> Result:
        return self.stream_txt2img(prompt, **kwargs).result()

    def img2img(self, image: bytes, prompt: str, **kwargs) -> Result:
        return self.stream_img2img(image, prompt, **kwargs).result()

    def inpaint(self, image: bytes, mask: bytes, prompt: str,
                **kwargs) -> Result:
        return self.stream_inpaint(image, mask, prompt, **kwargs).result()

    def upscale(self, low_res: bytes, **kwargs) -> Result:
        return self.stream_upscale(low_res, **kwargs).result()

    def _unary(self, method, request):
        try:
            return method(request, timeout=self._timeout,
                          metadata=self._metadata)
        except grpc.RpcError as error:
            raise _error(error) from None

    # Jobs: found again by id after their stream ended.
    def get_job(self, job_id: str, with_result: bool = True) -> Job:
        return _job(self._unary(self._stub.GetJob, pb.GetJobRequest(
            job_id=job_id, omit_result=not with_result)).job)

    def watch_job(self, job_id: str,
                  timeout: Optional[float] = None) -> Generation:
        """The job's events from its current state on; ending the watch
        (cancel()) leaves the job running."""
        return Generation(self._stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id),
            timeout=timeout if timeout is not None else self._timeout,
            metadata=self._metadata))

    def cancel_job(self, job_id: str) -> Job:
        """Stops the job; returns it once it has ended."""
        return _job(self._unary(self._stub.CancelJob,
                                pb.CancelJobRequest(job_id=job_id)).job)

    def list_jobs(self, states: Optional[List[str]] = None,
                  max_jobs: int = 0) -> List[Job]:
        """Running, queued, then recently finished jobs (results left
        out); `states` filters (e.g. ["QUEUED", "RUNNING"])."""
        response = self._unary(self._stub.ListJobs, pb.ListJobsRequest(
            states=_state_filter(states), max_jobs=max_jobs))
        return [_job(job) for job in response.jobs]

    def health(self, service: str = "") -> str:
        """grpc.health.v1 status: "SERVING", "NOT_SERVING" (models still
        loading, or shutting down), "SERVICE_UNKNOWN"."""
        check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda name: (
                b"\n" + bytes([len(name)]) + name.encode() if name else b""),
            response_deserializer=lambda reply: reply)
        try:
            reply = check(service, timeout=self._timeout)
        except grpc.RpcError as error:
            raise _error(error) from None
        return _health_status(reply)

    def models(self) -> List[dict]:
        """What the server serves: name, tasks, state, native size..."""
        try:
            response = self._stub.ListModels(pb.ListModelsRequest(),
                                             timeout=self._timeout,
                                             metadata=self._metadata)
        except grpc.RpcError as error:
            raise _error(error) from None
        return [{"name": m.name,
                 "tasks": [pb.Task.Name(t) for t in m.tasks],
                 "default_for": [pb.Task.Name(t) for t in m.default_for],
                 "state": pb.ModelState.Name(m.state),
                 "native_width": m.native_width,
                 "native_height": m.native_height,
                 "size_multiple": m.size_multiple,
                 "devices": list(m.devices),
                 "placements": [{"device": p.device, "dtype": p.dtype,
                                 "vae_dtype": p.vae_dtype,
                                 "text_dtype": p.text_dtype,
                                 "weight_bytes": p.weight_bytes}
                                for p in m.placements],
                 "error": m.error}
                for m in response.models]

    def loras(self) -> List[str]:
        """The LoRA adapters requests may apply (loras={name: weight})."""
        return list(self._unary(self._stub.ListModels,
                                pb.ListModelsRequest()).loras)

    # Admin (ldmserve --model-admin; with tokens, an --admin-clients token).
    def load_model(self, name: str, weights: str, *, family: str = "",
                   config: str = "", tasks: Optional[List[str]] = None,
                   devices: Optional[List[str]] = None, dtype: str = "",
                   ema: bool = False) -> dict:
        """Loads `weights` (relative to the server's model folder) as
        `name` and returns it as models() lists it, once READY."""
        request = pb.LoadModelRequest(
            name=name, weights=weights, family=family, config=config,
            tasks=[pb.Task.Value("TASK_" + t.upper()) for t in tasks or []],
            devices=devices or [], dtype=dtype, ema=ema)
        loaded = self._unary(self._stub.LoadModel, request).model
        return next(m for m in self.models() if m["name"] == loaded.name)

    def unload_model(self, name: str, cancel_jobs: bool = False) -> int:
        """Stops serving `name` once its jobs finished (or were
        cancelled); returns how many it had."""
        return self._unary(self._stub.UnloadModel, pb.UnloadModelRequest(
            name=name, cancel_jobs=cancel_jobs)).jobs_drained


class AsyncClient:
    """The same calls for asyncio (grpc.aio): `await client.txt2img(...)`;
    `async for event in client.stream(...)`."""

    def __init__(self, address: str = "127.0.0.1:50051",
                 timeout: Optional[float] = None,
                 tls: Optional[Tls] = None,
                 token: Optional[str] = None):
        options, credentials, self._metadata = _channel_setup(tls, token)
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(address, credentials,
                                                    options=options)
        else:
            self._channel = grpc.aio.insecure_channel(address,
                                                      options=options)
        self._stub = pb_grpc.ImageSynthesisServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def stream(self, task: str, timeout: Optional[float] = None,
                     **kwargs):
        """`task`: text_to_image, image_to_image, inpaint or
        super_resolution; kwargs as the synchronous stream_* methods take
        (proto field names for the task's inputs)."""
        call = self._stub.Generate(
            _request(task, **kwargs),
            timeout=timeout if timeout is not None else self._timeout,
            metadata=self._metadata)
        try:
            async for response in call:
                yield _event(response)
        except grpc.RpcError as error:
            raise _error(error) from None

    async def get_job(self, job_id: str, with_result: bool = True) -> Job:
        try:
            return _job(await self._stub.GetJob(
                pb.GetJobRequest(job_id=job_id, omit_result=not with_result),
                timeout=self._timeout, metadata=self._metadata)).job
        except grpc.RpcError as error:
            raise _error(error) from None

    async def cancel_job(self, job_id: str) -> Job:
        try:
            return _job(await self._stub.CancelJob(
                pb.CancelJobRequest(job_id=job_id), timeout=self._timeout,
                metadata=self._metadata)).job
        except grpc.RpcError as error:
            raise _error(error) from None

    async def list_jobs(self, states: Optional[List[str]] = None,
                        max_jobs: int = 0) -> List[Job]:
        try:
            response = await self._stub.ListJobs(
                pb.ListJobsRequest(states=_state_filter(states),
                                   max_jobs=max_jobs),
                timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise _error(error) from None
        return [_job(job) for job in response.jobs]

    async def watch_job(self, job_id: str, timeout: Optional[float] = None):
        call = self._stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id),
            timeout=timeout if timeout is not None else self._timeout,
            metadata=self._metadata)
        try:
            async for response in call:
                yield _event(response)
        except grpc.RpcError as error:
            raise _error(error) from None

    async def txt2img(self, prompt: str, **kwargs) -> Result:
        final = None
        async for event in self.stream("text_to_image", prompt=prompt,
                                       **kwargs):
            if isinstance(event, Result):
                final = event
        if final is None:
            raise LdmError("INTERNAL", "stream ended without a result")
        return final
