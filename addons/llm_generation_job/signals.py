"""The notification channels of generation jobs (delivered by ``core.notify``)."""

QUEUED = "llmjobs_queued"  # payload: a provider id: one of its jobs can be claimed
PROGRESS = "llmjobs_progress"  # payload: a job id: its state or its reply changed
CANCEL = "llmjobs_cancel"  # payload: a job id: its cancellation was requested
CHANNELS = (QUEUED, PROGRESS, CANCEL)
