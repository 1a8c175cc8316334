"""``python -m backend.notify.jobdone TASK``: a Slurm job's "I am done" message.

Run by a job after its results are written (:mod:`backend.processing.slurm` adds it to the job
when a broker is configured), so the backend stores them at once instead of at its next poll
(GPFS gives no file events across hosts). Sends one update message (JSON, version 1, kind
``slurm_job_finished``, data ``{"job": TASK, "proposal": P}``, P an int or an identifier such
as ``"mx2532"``, from ``$AMORE_JOB_PROPOSAL``) to the topic in
``$AMORE_JOB_TOPIC`` on ``$AMORE_JOB_BROKER``. Never fails the job: any problem is printed to the
job's log and the exit status is 0 (the backend's polling still finds the results).
"""
from __future__ import annotations

import os
import sys
from backend.vocab import UpdateKind


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    broker, topic = os.environ.get("AMORE_JOB_BROKER"), os.environ.get("AMORE_JOB_TOPIC")
    if not broker or not topic or not argv:
        return 0
    try:
        from confluent_kafka import Producer

        from backend.notify.kafka import make_update_message
        p = Producer({"bootstrap.servers": broker, "linger.ms": 0, "message.timeout.ms": 5000,
                      "log_level": 3})
        from backend.vocab import normalize_proposal
        proposal = os.environ.get("AMORE_JOB_PROPOSAL")
        p.produce(topic, make_update_message(UpdateKind.SLURM_JOB_FINISHED, {
            "job": argv[0], "proposal": normalize_proposal(proposal) if proposal else None}))
        if p.flush(6):
            print("AMORE: the 'job finished' message was not delivered; the backend's polling "
                  "finds the results", flush=True)
    except Exception as e:  # noqa: BLE001 - a message is a shortcut, never a reason to fail
        print(f"AMORE: could not send the 'job finished' message: {e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
