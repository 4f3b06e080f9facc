"""`%phdeploy batch | jobs | job | cancel-job`: batch jobs from the magics."""

from __future__ import annotations

import argparse
from typing import Any

from . import options as shared
from .batch_files import default_output, local_uri
from .client import Client, JobFailed
from .jobs import Job, JobProgress, JobTable


class JobMagics:
    """The job subcommands of %phdeploy (mixed into DeploymentMagics)."""

    @property
    def client(self) -> Client:  # DeploymentMagics': one per kernel
        raise NotImplementedError

    def _job_parser(self, prog: str, *, job: bool) -> argparse.ArgumentParser:
        from .magics import _Parser

        parser = _Parser(prog=prog)
        parser.add_argument("id", help="the deployment")
        if job:
            parser.add_argument("job", help="the job id (j and 10 hex digits)")
        return parser

    def _ph_batch(self, rest: list[str]) -> Any:
        """Score a file: the job's progress live, then its summary."""
        from .magics import MagicFailed

        parser = self._job_parser("%phdeploy batch", job=False)
        parser.add_argument("input", help="the file to score (relative: to this notebook)")
        shared.add_options(
            parser, *shared.JOB_OPTIONS, shared.wait_switch("the job ends", default=True)
        )
        args = parser.parse_args(rest)
        input_uri = local_uri(args.input)
        job = Job(
            self.client.create_job(
                args.id,
                input_uri,
                local_uri(args.output or default_output(input_uri)),
                format=args.format,
                predictor=args.predictor,
                chunk_rows=args.chunk_rows,
                output_columns=args.output_columns,
                overwrite=args.overwrite,
            ),
            self.client,
        )
        if not args.wait:
            JobProgress(self.client, job.data, live=True).show().follow()
            return None
        try:
            job.wait()
        except JobFailed as error:
            raise MagicFailed(f"{error.message} (see %phdeploy job {args.id} {job.id})") from None
        return None

    def _ph_jobs(self, rest: list[str]) -> JobTable:
        args = self._job_parser("%phdeploy jobs", job=False).parse_args(rest)
        return JobTable(self.client.list_jobs(args.id))

    def _ph_job(self, rest: list[str]) -> Job | None:
        parser = self._job_parser("%phdeploy job", job=True)
        parser.add_argument("--logs", action="store_true", help="print the job's log instead")
        args = parser.parse_args(rest)
        if args.logs:
            print(self.client.job_logs(args.id, args.job), end="")
            return None
        return Job(self.client.get_job(args.id, args.job), self.client)

    def _ph_cancel_job(self, rest: list[str]) -> Job | None:
        args = self._job_parser("%phdeploy cancel-job", job=True).parse_args(rest)
        answer = self.client.cancel_job(args.id, args.job)
        if answer is None:
            print(f"job {args.job}: removed from the history")
            return None
        return Job(answer, self.client)
