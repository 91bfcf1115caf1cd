"""Python client for ldmserve (gRPC, ldm.v1.ImageSynthesisService).

    from ldmclient import Client
    client = Client("127.0.0.1:50051")
    result = client.txt2img("a red circle above a blue square", steps=25, seed=1)
    open("out.png", "wb").write(result.images[0].png)

    for event in client.stream_txt2img("a red circle", steps=50):
        print(event)               # Queued / Started / Progress / Result
    # stream.cancel() stops a generation; the server frees its slot.

    # Jobs outlive their stream when asked: find them again by id.
    gen = client.stream_txt2img("a red circle", cancel_on_disconnect=False)
    job_id = gen.job_id
    gen.cancel()                      # the job runs on
    result = client.watch_job(job_id).result()
    client.get_job(job_id).state      # "SUCCEEDED"
    client.list_jobs(states=["QUEUED", "RUNNING"]); client.cancel_job(id)
    client.health()                   # "SERVING"

    # TLS (mTLS with cert and key) and a bearer token:
    client = Client("ldm.example.com:443", tls=Tls.from_files(ca="ca.pem"),
                    token=os.environ["LDMSERVE_TOKEN"])

Install: pip install ./client/python (offline on Debian 12: pip install
--no-index --no-build-isolation into a venv made with --system-site-packages).
The package ships its stubs (ldm/v1/image_synthesis_pb2*.py); ctest
python.stubs_fresh checks them against proto/ (tools/python/update_stubs.sh
regenerates them).
"""

from ldmclient.client import (AsyncClient, Client, Generation, Image, Job,
                              LdmError, Progress, Queued, Result, Started,
                              Tls)

__all__ = ["AsyncClient", "Client", "Generation", "Image", "Job", "LdmError",
           "Progress", "Queued", "Result", "Started", "Tls"]
