"""The local engine's log files: tail across rotation, merge by time, follow, download."""

from __future__ import annotations

import asyncio
from pathlib import Path

from primehub_jupyter.engines.local import logs

from .conftest import wait_until


def write(directory: Path, name: str, lines: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("".join(line + "\n" for line in lines))


def stamp(second: int, text: str) -> str:
    return f"2026-11-22T10:00:{second:02d}.000Z {text}"


def test_tail_spans_the_rotated_file(tmp_path: Path):
    write(tmp_path, "output.log.1", [stamp(i, f"old {i}") for i in range(5)])
    write(tmp_path, "output.log", [stamp(10 + i, f"new {i}") for i in range(3)])
    assert logs.replica_tail(tmp_path, 4) == [stamp(4, "old 4")] + [
        stamp(10 + i, f"new {i}") for i in range(3)
    ]
    assert len(logs.replica_tail(tmp_path, None)) == 8
    assert logs.replica_tail(tmp_path, 0) == []


def test_tail_of_a_big_file_reads_only_the_end(tmp_path: Path):
    write(tmp_path, "output.log", [stamp(i % 60, "x" * 100 + str(i)) for i in range(20000)])
    last = logs.tail_lines(tmp_path / "output.log", 3)
    assert [line.rsplit("x", 1)[1] for line in last] == ["19997", "19998", "19999"]


def test_merged_tail_interleaves_replicas_by_time_and_tags_them(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "output.log", [stamp(1, "a1"), stamp(3, "a3"), "no timestamp after a3"])
    write(b, "output.log", [stamp(2, "b2"), stamp(4, "b4")])
    merged = logs.merged_tail({"r-a": a, "r-b": b}, None)
    assert merged == [
        "2026-11-22T10:00:01.000Z [r-a] a1",
        "2026-11-22T10:00:02.000Z [r-b] b2",
        "2026-11-22T10:00:03.000Z [r-a] a3",
        "[r-a] no timestamp after a3",
        "2026-11-22T10:00:04.000Z [r-b] b4",
    ]
    assert logs.merged_tail({"r-a": a, "r-b": b}, 2) == merged[-2:]
    # One replica: lines as they are, untagged.
    assert logs.merged_tail({"r-b": b}, None) == [stamp(2, "b2"), stamp(4, "b4")]


async def test_follow_yields_new_lines_and_survives_rotation(tmp_path: Path):
    write(tmp_path, "output.log", [stamp(0, "before")])
    stream = logs.follow(lambda: {"r": tmp_path}, poll=0.02)
    following = asyncio.Event()
    seen: list[str] = []

    async def collect() -> None:
        async for line in stream:
            if line.endswith("warm-up"):  # the follower reads from here on
                following.set()
                continue
            seen.append(line)
            if len(seen) == 3:
                return

    def append(text: str) -> None:
        with open(tmp_path / "output.log", "a") as f:
            f.write(text)

    def warm_up() -> bool:
        if not following.is_set():
            append(stamp(0, "warm-up") + "\n")
        return following.is_set()

    task = asyncio.ensure_future(collect())
    # Lines written before the follower starts are not followed: write until one is seen.
    await wait_until(warm_up, what="the follower to start")
    append(stamp(1, "first") + "\n" + stamp(2, "sec"))
    await wait_until(lambda: len(seen) == 1, what="the first line")
    append("ond\n")  # the rest of a line the follower has read the start of
    await wait_until(lambda: len(seen) == 2, what="the completed line")
    (tmp_path / "output.log").rename(tmp_path / "output.log.1")
    write(tmp_path, "output.log", [stamp(3, "after rotation")])
    await asyncio.wait_for(task, 10)
    await stream.aclose()
    assert seen == [stamp(1, "first"), stamp(2, "second"), stamp(3, "after rotation")]


async def test_download_gives_every_file_whole(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "output.log.1", ["a-old"])
    write(a, "output.log", ["a-new"])
    write(b, "output.log", ["b-only"])
    chunks = [c async for c in logs.download({"r-a": a, "r-b": b})]
    text = b"".join(chunks).decode()
    assert text == "===== replica r-a =====\na-old\na-new\n===== replica r-b =====\nb-only\n"
