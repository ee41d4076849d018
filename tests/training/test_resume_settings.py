"""`--resume` continues only a run of the same settings: a checkpoint of another run in the same --out (other
lr, seed, teacher, epochs, batch size, data) is refused, naming what differs; an older checkpoint without
recorded settings resumes with a warning."""

import pytest
import torch
from structlog.testing import capture_logs

from training.config import TrainConfig
from training.trainer import ResumeError, train, training_settings


def _config(data, out, **kw):
    base = {"data_path": data, "output_dir": out, "epochs": 1, "max_steps": 2, "batch_size": 16, "max_length": 32,
            "version": "resume-settings", "threads": 1, "export_onnx": False}
    return TrainConfig(**{**base, **kw})


def test_settings_leave_out_where_and_how_a_run_writes_but_keep_what_it_trains(tmp_path):
    fps = {"financial_phrasebank/train.csv": "sha256:a"}
    a = training_settings(_config(tmp_path, tmp_path / "a"), fps, "sha256:rows", None)
    cosmetic = _config(tmp_path / "moved-data", tmp_path / "b", version="other", threads=4, device="cpu",
                       export_onnx=True, fp16_copy=False, calibrate=False)
    assert training_settings(cosmetic, fps, "sha256:rows", None) == a
    for change in ({"lr": 1e-4}, {"seed": 14}, {"init_seed": 3}, {"epochs": 2}, {"batch_size": 8}, {"kd_alpha": 0.3}):
        assert training_settings(_config(tmp_path, tmp_path / "a", **change), fps, "sha256:rows", None) != a, change
    assert training_settings(_config(tmp_path, tmp_path / "a"), fps, "sha256:other-rows", None) != a
    assert training_settings(_config(tmp_path, tmp_path / "a"), fps, "sha256:rows", {"fingerprint": "sha256:t"}) != a


def test_a_checkpoint_of_other_settings_is_refused_and_an_old_one_resumes_with_a_warning(tiny_data, tmp_path, caplog,
                                                                                         capsys):
    train(_config(tiny_data, tmp_path), progress=False)
    checkpoint = tmp_path / "checkpoints" / "epoch-1.pt"
    before = checkpoint.read_bytes()
    with pytest.raises(ResumeError, match=r"lr \(8e-05 -> 0\.0003\)") as refused:
        train(_config(tiny_data, tmp_path, lr=3e-4, batch_size=8), resume=True, progress=False)
    assert "batch_size" in str(refused.value) and checkpoint.read_bytes() == before
    # what only names or places the run does not block it
    seen: list[dict] = []
    train(_config(tiny_data, tmp_path, version="renamed", threads=2), resume=True, progress=False,
          on_epoch=seen.append)
    assert seen == []
    # a checkpoint from before settings were recorded: resumed, with a warning
    ckpt = torch.load(checkpoint, weights_only=False)
    for key in ("settings", "settings_sha256"):
        ckpt.pop(key)
    torch.save(ckpt, checkpoint)
    with capture_logs() as logs:  # structlog as configured (or not) by earlier tests: captured, logging or stdout
        train(_config(tiny_data, tmp_path, lr=3e-4), resume=True, progress=False, on_epoch=seen.append)
    warned = (any(entry["event"] == "training.resume_unchecked" for entry in logs)
              or "training.resume_unchecked" in caplog.text + capsys.readouterr().out)
    assert seen == [] and warned
