"""Following a training job's CloudWatch logs: new lines from every instance's stream, in order.

SageMaker writes ``/aws/sagemaker/TrainingJobs`` streams named ``<job>/algo-<n>-<timestamp>``; they
appear only once the container starts, so "no group / no stream yet" is normal, not an error.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

__all__ = ["TRAINING_LOG_GROUP", "LogTail"]

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class LogTail:
    """Polls a job's log streams and remembers the last ``keep`` lines (for error messages)."""

    def __init__(self, logs_client: Any, job_name: str, *, log_group: str = TRAINING_LOG_GROUP,
                 keep: int = 40) -> None:
        self.client = logs_client
        self.job_name = job_name
        self.log_group = log_group
        self.tail: collections.deque[str] = collections.deque(maxlen=keep)
        self._tokens: dict[str, str | None] = {}

    def _streams(self) -> list[str]:
        from botocore.exceptions import ClientError

        names: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": self.log_group, "logStreamNamePrefix": self.job_name + "/"}
        try:
            while True:
                resp = self.client.describe_log_streams(**kwargs)
                names.extend(s["logStreamName"] for s in resp.get("logStreams", []))
                if not resp.get("nextToken"):
                    break
                kwargs["nextToken"] = resp["nextToken"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return []
            raise
        return sorted(names)

    def _events(self, stream: str) -> Iterator[tuple[int, str]]:
        while True:
            kwargs: dict[str, Any] = {"logGroupName": self.log_group, "logStreamName": stream,
                                      "startFromHead": True}
            token = self._tokens.get(stream)
            if token:
                kwargs["nextToken"] = token
            resp = self.client.get_log_events(**kwargs)
            events = resp.get("events", [])
            for event in events:
                yield int(event.get("timestamp", 0)), str(event.get("message", ""))
            new_token = resp.get("nextForwardToken")
            if not events or new_token == token:
                self._tokens[stream] = new_token
                return
            self._tokens[stream] = new_token

    def poll(self) -> list[str]:
        """Lines written since the last poll, oldest first across streams."""
        lines: list[tuple[int, str, str]] = []
        for stream in self._streams():
            lines.extend((ts, stream, msg) for ts, msg in self._events(stream))
        lines.sort(key=lambda t: t[0])
        out = [msg.rstrip("\n") for _, _, msg in lines]
        self.tail.extend(out)
        return out
