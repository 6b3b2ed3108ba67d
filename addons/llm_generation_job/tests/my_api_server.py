"""A loopback asynchronous job API for the contract's provider example.

``POST /jobs {"inputs": {...}}`` -> ``{"id"}``; the job completes on its ``polls``-th status
request (``inputs["polls"]``, default 2) with a reply derived from ``inputs["prompt"]``, or
fails when the prompt contains "fail". ``GET /jobs/{id}`` -> ``{"completed", "failed",
"result", "error"}``; ``POST /jobs/{id}/cancel`` -> 200 and the job reads as failed
("cancelled").
"""

from __future__ import annotations

import itertools
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build_app() -> tuple[Starlette, dict]:
    jobs: dict[str, dict] = {}
    ids = itertools.count(1)

    async def create(request: Request):
        inputs = (await request.json())["inputs"] or {}
        job_id = f"ext-{next(ids)}"
        jobs[job_id] = {"inputs": inputs, "polls": 0, "cancelled": False}
        return JSONResponse({"id": job_id})

    async def status(request: Request):
        job = jobs.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        job["polls"] += 1
        prompt = str(job["inputs"].get("prompt", ""))
        done = job["polls"] >= int(job["inputs"].get("polls", 2))
        failed = job["cancelled"] or (done and "fail" in prompt)
        return JSONResponse(
            {
                "completed": done and not failed,
                "failed": failed,
                "result": f"Reply to: {prompt}" if done else None,
                "error": "cancelled"
                if job["cancelled"]
                else "the model refused"
                if failed
                else None,
            }
        )

    async def cancel(request: Request):
        job = jobs.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        job["cancelled"] = True
        return JSONResponse({"cancelled": True})

    app = Starlette(
        routes=[
            Route("/jobs", create, methods=["POST"]),
            Route("/jobs/{job_id}", status),
            Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        ]
    )
    return app, jobs


class MyApiServer:
    """The API above, served by uvicorn on a free loopback port in a background thread."""

    def __init__(self):
        self.app, self.jobs = build_app()
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))  # bound before uvicorn starts: no port race
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> MyApiServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("my_api server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
