"""Rate imports from the console, run in the background.

A million-row rates CSV takes seconds to check and apply: longer than a browser should wait on
one answer, and longer than api.request_timeout may allow. So the upload is streamed to a
temporary file (never held in memory), the import runs in a greenlet of its own, and the
browser is sent to a progress page that refreshes itself (a meta refresh: no JavaScript)
until it shows the all-bad-rows report or the counts. The import is the CLI's importer, all
or nothing, with its progress callback feeding the page."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import IO, Any

import gevent

from cardd.billing import apistore
from cardd.billing.rate_import import ImportRefused, ImportResult

log = logging.getLogger("cardd.web")

#: Jobs kept for their result page; the oldest finished ones go first.
KEEP = 50
#: The import's statements may outlast api.request_timeout (the process's statement_timeout).
STATEMENT_TIMEOUT_S = 900


@dataclass
class RateImportJob:
    """One upload's import, as its progress page shows it (also the importer's progress callback)."""

    id: str
    who: str
    tariff: str
    mode: str
    size: int  # bytes of the uploaded file
    checked_bytes: int = 0
    rows: int = 0  # rows read and checked so far
    stage: str = "waiting to start"
    result: ImportResult | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)
    finished: bool = False

    # --- cardd.billing.rate_import.ImportProgress -----------------------------------------------
    def update(self, done: int, rows: int, *, force: bool = False) -> None:
        self.checked_bytes, self.rows = done, rows
        gevent.sleep(0)  # between COPY chunks: let the progress pages (and everything else) be served

    def phase(self, text: str) -> None:
        self.stage = text.rstrip(". ")
        gevent.sleep(0)

    def finish(self) -> None:
        self.stage = "done"

    @property
    def percent(self) -> int:
        return min(100, self.checked_bytes * 100 // self.size) if self.size else 0


class RateImports:
    """The console's background imports in this process, by a random id."""

    def __init__(self) -> None:
        self._jobs: dict[str, RateImportJob] = {}
        self._lock = threading.Lock()

    def start(self, pool: Any, who: str, tariff: str, mode: str, upload: IO[bytes]) -> RateImportJob:
        """Stream `upload` to a temporary file and import it in a greenlet; returns at once."""
        fd, path = tempfile.mkstemp(prefix="cardd-rates-", suffix=".csv")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(upload, out, 1 << 20)
            size = os.path.getsize(path)
        except BaseException:
            os.unlink(path)
            raise
        job = RateImportJob(id=secrets.token_urlsafe(12), who=who, tariff=tariff, mode=mode, size=size)
        with self._lock:
            done = [k for k, j in self._jobs.items() if j.finished]
            for old in done[: max(0, len(self._jobs) - KEEP + 1)]:
                del self._jobs[old]
            self._jobs[job.id] = job
        gevent.spawn(_run, pool, job, path)
        return job

    def get(self, job_id: str, who: str) -> RateImportJob | None:
        """The job, to the operator who started it only."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.who == who else None


def _run(pool: Any, job: RateImportJob, path: str) -> None:
    job.stage = "checking rows"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            result = apistore.import_rates_audited(
                pool,
                job.who,
                job.tariff,
                f,
                mode=job.mode,
                progress=job,
                statement_timeout_s=STATEMENT_TIMEOUT_S,
                via=" (web console)",
            )
        job.result = result
    except ImportRefused as exc:
        job.errors, job.rows = list(exc.errors), exc.rows
    except UnicodeDecodeError:
        job.errors = [(0, "the file is not UTF-8 text")]
    except Exception as exc:  # a refusal of the service layer (an unknown tariff...) or a fault of ours
        from cardd.api.app import problem_of

        try:
            job.errors = [(0, problem_of(exc).detail or str(exc))]
        except Exception:
            log.exception("rate import of %s into %s failed", job.id, job.tariff)
            job.errors = [(0, "an internal error; it was logged")]
    finally:
        job.finished = True
        job.stage = "done"
        os.unlink(path)
