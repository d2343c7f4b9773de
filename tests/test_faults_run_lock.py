"""One run per folder: a second concurrent run fails at once naming the first; a dead run's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lensa_for_all.errors import RunInUseError, TooFewPhotosError
from lensa_for_all.pipeline.progress import RunProgress
from lensa_for_all.run_lock import LOCK_FILE, RunLock, lock_folders


class Recorder(RunProgress):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


def _holder(folder: Path) -> subprocess.Popen[str]:
    """Another process holding ``folder``'s lock until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from lensa_for_all.run_lock import RunLock
        lock = RunLock({str(folder)!r}, what="the other run").acquire()
        print("locked", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def other_run(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    folder = tmp_path / "run"
    proc = _holder(folder)
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_process_is_refused_with_the_first_ones_pid_host_and_start(
        other_run: tuple[Path, subprocess.Popen[str]]) -> None:
    folder, proc = other_run
    with pytest.raises(RunInUseError, match=rf"in use by another lensa-for-all run: pid {proc.pid} on .*started "
                                            rf"20\d\d-.*\(the other run\).*kill {proc.pid}"):
        RunLock(folder).acquire()


def test_a_killed_runs_lock_is_taken_over_with_a_message(other_run: tuple[Path, subprocess.Popen[str]]) -> None:
    folder, proc = other_run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == proc.pid  # the dead run's record is still there
    heard: list[str] = []
    with RunLock(folder, on_takeover=heard.append) as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert len(heard) == 1 and f"pid {proc.pid}" in heard[0] and "no longer running" in heard[0]
    assert (folder / LOCK_FILE).read_text() == ""  # released cleanly: the next run hears nothing
    with RunLock(folder, on_takeover=heard.append):
        pass
    assert len(heard) == 1


def test_two_locks_in_one_process_also_exclude_each_other(tmp_path: Path) -> None:
    with RunLock(tmp_path), pytest.raises(RunInUseError):
        RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: free again
        pass


def test_lock_folders_takes_one_lock_for_nested_folders(tmp_path: Path) -> None:
    with lock_folders(tmp_path / "run", tmp_path / "run" / "avatars", tmp_path / "elsewhere") as locks:
        assert sorted(lock.folder.name for lock in locks) == ["elsewhere", "run"]
        with pytest.raises(RunInUseError):
            RunLock(tmp_path / "elsewhere").acquire()
    assert not (tmp_path / "run" / "avatars").exists()


def test_a_pipeline_run_on_a_folder_in_use_fails_at_once(other_run: tuple[Path, subprocess.Popen[str]],
                                                         tiny_sd: Path, tmp_path: Path) -> None:
    from lensa_for_all import Pipeline
    from lensa_for_all.testing.photos import make_photos

    folder, proc = other_run
    photos = make_photos(tmp_path / "p", 2)

    def pipeline(progress: RunProgress) -> Pipeline:
        return Pipeline.from_folder(photos[0].parent, base_model=str(tiny_sd), run_dir=folder, progress=progress)

    with pytest.raises(RunInUseError, match=f"pid {proc.pid}"):
        pipeline(Recorder()).run(num_images=1)
    assert not (folder / "lensa_run.json").exists()  # the second run wrote nothing
    proc.kill()
    proc.wait()
    recorder = Recorder()
    with pytest.raises(TooFewPhotosError):  # now it runs (and stops at the photo check: two photos)
        pipeline(recorder).run(num_images=1)
    assert any("Took over the lock" in m and str(proc.pid) in m for m in recorder.messages)


def test_the_cli_reports_a_folder_in_use_in_one_paragraph(other_run: tuple[Path, subprocess.Popen[str]],
                                                           tiny_sd: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from lensa_for_all.cli.main import EXIT_ERROR, main
    from lensa_for_all.testing.photos import make_photos

    folder, proc = other_run
    make_photos(tmp_path / "me", 4)
    code = main(["run", str(tmp_path / "me"), "--out", str(tmp_path / "out"), "--run-dir", str(folder),
                 "--base-model", str(tiny_sd), "-n", "1"])
    assert code == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and "Traceback" not in err


def test_generate_into_a_folder_in_use_fails_before_rendering(other_run: tuple[Path, subprocess.Popen[str]],
                                                              tiny_sd: Path) -> None:
    from lensa_for_all.generation import AvatarModel

    folder, proc = other_run
    model = AvatarModel.load(tiny_sd)
    with pytest.raises(RunInUseError, match=f"pid {proc.pid}"):
        model.generate("a photo", 1, num_inference_steps=1, out_dir=folder)
    assert not list(folder.glob("*.png"))
