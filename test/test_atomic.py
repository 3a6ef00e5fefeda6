"""imkd_core.atomic: a file appears whole or not at all, with an ordinary file's mode."""

from __future__ import annotations

import stat

import pytest

from imkd_core.atomic import write_atomic, write_text_atomic


def test_written_whole_with_the_mode_open_would_give(tmp_path):
    from imkd_core import atomic  # its umask, read at import

    with open(tmp_path / "plain.txt", "w") as f:  # what open() gives under that umask
        f.write("hello")
    write_text_atomic(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o666 & ~atomic._UMASK == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    write_text_atomic(tmp_path / "a.txt", "again")  # replacing keeps that mode
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "a.txt", fail)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
