"""Remote data roots (``s3://``, ``gs://``, any URI pyarrow reads) reached within a deadline.

Left to themselves, the storage libraries retry an unreachable endpoint for minutes (Google's
client for 15) without a word. Here the first contact with a root, the file system's creation and
one look at the root, must finish within ``$SSLRAY_REMOTE_TIMEOUT`` seconds (default 20); the S3
client is also given one attempt of half that to connect and half to be answered, the GCS client
that long to retry, so they give up by themselves (and the process does not wait for them at exit). Past it: one line naming the root and the setting.
"""

from __future__ import annotations

import math
import os
import threading
from datetime import timedelta

from ..errors import UserError

TIMEOUT_ENV = "SSLRAY_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT = 20.0


def remote_timeout() -> float:
    """Seconds a remote root has to answer: ``$SSLRAY_REMOTE_TIMEOUT``, else 20."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds in (0, 3600], got {text!r}")
    return value


def bounded(fs, seconds: float):
    """The same file system with its client's deadlines set (S3: connect and request time-outs;
    GCS: the time it retries); any other file system as it is."""
    import pyarrow.fs as pafs

    if isinstance(fs, (pafs.S3FileSystem, pafs.GcsFileSystem)):
        rebuild, (options,) = fs.__reduce__()  # the options the URI gave, as keywords
        if isinstance(fs, pafs.S3FileSystem):  # one attempt of at most the deadline: connect, then answer
            options.update(connect_timeout=seconds / 2, request_timeout=seconds / 2,
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
        elif options.get("retry_time_limit") is None:
            options["retry_time_limit"] = timedelta(seconds=seconds)
        return rebuild(options)
    return fs


def open_root(uri: str, seconds: float | None = None):
    """``(file system, base path, FileInfo of the root)`` of a remote ``uri``, within ``seconds``
    (default :func:`remote_timeout`). The library's own errors (``OSError``, ``ValueError``)
    pass through; a root silent past the deadline is a one-line UserError."""
    import pyarrow.fs as pafs

    seconds = remote_timeout() if seconds is None else seconds
    outcome: dict = {}

    def reach():  # in a thread of its own: a library stuck in a retry loop cannot hold the command
        try:
            fs, base = pafs.FileSystem.from_uri(uri)  # S3 asks for the bucket's region here
            fs = bounded(fs, seconds)
            outcome["value"] = (fs, base, fs.get_file_info(base))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=reach, name=f"sslray-reach-{uri[:40]}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise UserError(f"cannot reach data root {uri} within {seconds:g} s "
                        f"(set {TIMEOUT_ENV} to allow longer)")
    error = outcome.get("error")
    if isinstance(error, OSError) and "timeout" in str(error).lower():  # the client's own deadline, above
        raise UserError(f"cannot reach data root {uri} within {seconds:g} s: {str(error).splitlines()[0][:200]} "
                        f"(set {TIMEOUT_ENV} to allow longer)")
    if error is not None:
        raise error
    return outcome["value"]
