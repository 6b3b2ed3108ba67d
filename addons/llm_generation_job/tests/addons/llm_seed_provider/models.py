"""The contract's provider implementation example, verbatim (only ``my_api`` is ours: a small
client of the asynchronous job API served by tests/my_api_server.py)."""

import httpx

from core import models


class MyApi:
    """Client of an asynchronous generation API: create a job, poll it, cancel it."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def create_job(self, inputs):
        response = httpx.post(f"{self.base_url}/jobs", json={"inputs": inputs})
        response.raise_for_status()
        return response.json()["id"]

    def get_job_status(self, job_id):
        response = httpx.get(f"{self.base_url}/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def cancel_job(self, job_id):
        response = httpx.post(f"{self.base_url}/jobs/{job_id}/cancel")
        return response.status_code == 200


class MyProvider(models.Model):
    _inherit = "llm.provider"

    @property
    def my_api(self):
        return MyApi(self.api_base)

    def create_generation_job(self, job_record):
        # Create job with external provider
        external_job_id = self.my_api.create_job(job_record.generation_inputs)
        return external_job_id

    def check_generation_job_status(self, job_record):
        # Check job status with external provider
        status = self.my_api.get_job_status(job_record.external_job_id)

        if status["completed"]:
            # Create result message
            message = job_record.thread_id.message_post(
                body=status["result"],
                llm_role="assistant",
                author_id=False,
            )
            return {
                "state": "completed",
                "output_message_id": message.id,
            }
        elif status["failed"]:
            return {
                "state": "failed",
                "error_message": status["error"],
            }
        else:
            return {"state": "running"}

    def cancel_generation_job(self, job_record):
        # Cancel job with external provider
        return self.my_api.cancel_job(job_record.external_job_id)
