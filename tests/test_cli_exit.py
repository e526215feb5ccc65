"""Both command lines end without the interpreter's last garbage collections (``cli_support.exiting``): with
onnxslim's sympy, onnxruntime and labgrid's client loaded those took 0.3-0.35 s of every command (the farm
pays it once per run). A test or a program calling ``main([...])`` keeps its collector as it was."""
from __future__ import annotations

import gc
import sys

import pytest

import xqhil.cli
import xquant.cli


@pytest.mark.parametrize("cli, argv", [
    (xquant.cli, ["xquant", "-c", "{missing}"]),
    (xqhil.cli, ["xqhil", "quantize-and-verify", "{missing}", "--board", "host"])], ids=["xquant", "xqhil"])
def test_a_command_line_freezes_its_objects_before_exit_and_a_call_from_code_does_not(cli, argv, tmp_path,
                                                                                     monkeypatch):
    argv = [a.format(missing=tmp_path / "missing.json") for a in argv]
    gc.unfreeze()
    try:
        code = cli.main(argv[1:])
        assert gc.get_freeze_count() == 0  # called from code: nothing frozen
        monkeypatch.setattr(sys, "argv", argv)
        assert cli.main() == code  # as the command line: the same exit code, the objects frozen for the exit
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert code == 2  # a missing config: bad input, one line


def test_log_lines_follow_the_stderr_of_the_moment_after_main_returns(tmp_path, monkeypatch, capsys):
    """``xqhil`` called from code sets up logging on the stderr of that moment; a caller that swaps stderr and
    closes the old one (pytest's capture between tests) must not get "I/O operation on closed file" from
    every later log line (the history's confirmation logged one into a CI failure's output)."""
    import io
    import logging

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    assert xqhil.cli.main(["quantize-and-verify", str(tmp_path / "missing.json"), "--board", "host"]) == 2
    assert "missing.json" in first.getvalue()
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("xqhil.history.check").info("measuring again to confirm")
    assert "xqhil: measuring again to confirm" in second.getvalue()
