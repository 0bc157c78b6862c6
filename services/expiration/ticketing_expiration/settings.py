"""expiration settings: the scheduler's safety-net poll and claim batch size."""

from pydantic import Field

from ticketing_common.settings import ServiceSettings


class Settings(ServiceSettings):
    """Environment of the expiration service."""

    # The scheduler sleeps until the next due job and is woken by new jobs; this poll only bounds how long a
    # missed wake-up (a dropped LISTEN connection, say) can delay a job.
    expiration_poll_seconds: float = Field(default=30.0, gt=0)
    # Due jobs claimed and fired per transaction; large enough that a backlog (10,000 jobs falling due together
    # after an outage) drains in a few round trips, small enough to keep each transaction short.
    expiration_batch_size: int = Field(default=500, ge=1, le=10_000)
