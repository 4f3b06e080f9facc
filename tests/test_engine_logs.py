"""Engine lines in a replica's log: a write that fails (disk full) is counted, never silent."""

from __future__ import annotations

from pathlib import Path

from primehub_jupyter.engines.local.launcher import note
from primehub_jupyter.engines.local.replica import Replica


def test_lost_engine_lines_are_counted_and_reported_with_the_next_line(tmp_path: Path):
    blocker = tmp_path / "deployments"
    blocker.write_text("a file where the replica's directory should be: every write fails")
    replica = Replica(
        name="iris-abcde-12345-0",
        deployment_id="iris-abcde",
        slot=0,
        template="12345",
        directory=blocker / "iris-abcde" / "replicas" / "iris-abcde-12345-0",
    )
    note(replica, "replica ready")
    note(replica, "replica not answering health checks")
    assert replica.dropped_lines == 2 and not replica.log_file.exists()

    blocker.unlink()
    note(replica, "replica stopped")
    lines = replica.log_file.read_text().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("[engine] replica stopped (2 earlier engine lines were lost)")
    assert replica.dropped_lines == 0
