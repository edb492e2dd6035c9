"""Training logs that read well in a file: no carriage-return progress bar without a terminal,
one line per epoch, and a throttled progress line in long epochs; the bar stays on a TTY."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

from vaeserve.training import train as train_module
from vaeserve.training.config import TrainConfig
from vaeserve.training.train import train


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_stderr_has_one_line_per_epoch_and_no_carriage_returns(tmp_path, shapes_npz):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaeserve",
            "train",
            "--data",
            str(shapes_npz),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "3",
            "--limit",
            "160",
            "--batch-size",
            "16",
        ],
        capture_output=True,
        text=False,  # see the raw bytes, '\r' included
        timeout=120,
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "\r" not in err
    epochs = re.findall(r"epoch (\d+)/3\b", err)
    assert epochs == ["1", "2", "3"], err
    assert len(re.findall(r"epoch \d+/3 .*active=\d/2$", err, re.MULTILINE)) == 3


def test_long_epochs_log_a_progress_line_instead_of_a_bar(
    tmp_path, shapes_npz, monkeypatch, caplog
):
    monkeypatch.setattr(train_module, "PROGRESS_EVERY_S", 0.0)  # every batch counts as "long"
    stream = io.StringIO()  # not a terminal
    cfg = TrainConfig(data=str(shapes_npz), epochs=1, batch_size=32, limit=128, num_threads=1)
    with caplog.at_level(logging.INFO, logger="vaeserve.training.train"):
        train(cfg, tmp_path, progress_stream=stream)
    assert stream.getvalue() == ""  # tqdm stayed off
    lines = [r.getMessage() for r in caplog.records if ": batch " in r.getMessage()]
    # 116 training images in batches of 32: 4 batches, a line after each but the last
    assert lines[0].startswith("epoch 1/1: batch 1/4 (25%), loss=")
    assert len(lines) == 3


def test_a_terminal_still_gets_the_bar(tmp_path, shapes_npz, caplog):
    stream = _Terminal()
    cfg = TrainConfig(data=str(shapes_npz), epochs=1, batch_size=32, limit=128, num_threads=1)
    with caplog.at_level(logging.INFO, logger="vaeserve.training.train"):
        train(cfg, tmp_path, progress_stream=stream)
    assert "\r" in stream.getvalue() and "epoch 1/1" in stream.getvalue()
    assert not [r for r in caplog.records if ": batch " in r.getMessage()]


def test_evaluate_logs_progress_lines_without_a_terminal(
    tmp_path, shapes_npz, monkeypatch, caplog, capsys
):
    from tests.conftest import save_untrained_checkpoint
    from vaeserve.training.evaluate import evaluate

    monkeypatch.setattr(train_module, "PROGRESS_EVERY_S", 0.0)
    ckpt = save_untrained_checkpoint(tmp_path / "c.pt")
    with caplog.at_level(logging.INFO, logger="vaeserve.training.evaluate"):
        evaluate(ckpt, str(shapes_npz), iw_samples=2, batch_size=100)
    assert "\r" not in capsys.readouterr().err  # pytest's captured stderr is not a terminal
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("IWAE-2: batch")]
    assert lines == [f"IWAE-2: batch {b}/4 ({25 * b}%)" for b in (1, 2, 3, 4)]
