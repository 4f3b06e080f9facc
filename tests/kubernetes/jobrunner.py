"""A stand-in for `python -m primehub_jupyter.serving.batch` in the simulated kubelet.

It keeps the runner's contract (job.json in, progress.json after every chunk, output and
errors file, exit 0/1/3, 143 on SIGTERM) without a model: each CSV row's prediction is the
length of its first value. A row `bad` goes to the errors file; a row `fail` fails the job;
while `<input>.hold` exists it waits after the first chunk (a test's gate, not a timer).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

CHUNK_ROWS = 2


def now() -> str:
    moment = datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def main() -> int:
    bundle, job_dir = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--job-dir") + 1])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    job = json.loads((job_dir / "job.json").read_text())["job"]
    started = now()
    progress = {
        "phase": "Running",
        "message": "",
        "rowsRead": 0,
        "rowsScored": 0,
        "rowsFailed": 0,
        "rowsPerSecond": 0.0,
        "totalRows": None,
        "progress": 0.0,
        "chunksDone": 0,
        "startTime": started,
        "finishTime": None,
    }

    def write() -> None:
        temporary = job_dir / "progress.json.tmp"
        temporary.write_text(json.dumps(progress))
        os.replace(temporary, job_dir / "progress.json")

    if not (bundle / "bundle.yaml").exists():
        print("model failed to load: bundle.yaml not found", file=sys.stderr)
        return 3
    source, output = Path(job["spec"]["input"]), Path(job["spec"]["output"])
    print(f"scoring {source} with {bundle} into {output}", flush=True)
    header, *rows = source.read_text().splitlines()
    hold = Path(f"{source}.hold")
    with open(output, "w") as out, open(job["errors"], "w") as errors:
        out.write(f"{header},prediction,request_id\n")
        for start in range(0, len(rows), CHUNK_ROWS):
            for number, row in enumerate(rows[start : start + CHUNK_ROWS], start + 2):
                progress["rowsRead"] += 1
                if row == "fail":
                    progress.update(
                        phase="Failed", message=f"line {number}: the model failed", finishTime=now()
                    )
                    write()
                    return 1
                if row == "bad":
                    progress["rowsFailed"] += 1
                    errors.write(json.dumps({"line": number, "reason": "not a number"}) + "\n")
                    continue
                progress["rowsScored"] += 1
                out.write(f"{row},{len(row.split(',')[0])},{job['id']}-{number}\n")
            progress["chunksDone"] += 1
            progress["progress"] = progress["rowsRead"] / len(rows)
            write()
            print(f"chunk {progress['chunksDone']} done", flush=True)
            while hold.exists():
                time.sleep(0.05)
    progress.update(phase="Succeeded", finishTime=now(), progress=1.0)
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
