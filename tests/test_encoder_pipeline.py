"""The encoder-teacher recipe through `dvc repro`: a BERT-style teacher (hidden states, no LM head) has no letter
or cloze readout, so `logit_kd` and `cloze_kd` are recorded as unavailable, and the pipeline still finishes with
`summarize` reporting them. The teacher is a local folder, so the same run also checks that editing its weights in
place reruns `models@teacher` and the extraction (through `fingerprint@teacher`), and nothing of the student's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.pipeline_repo import TINY, dvc, make_tiny_repo, run
from tests.tiny_models import make_tiny_encoder

pytestmark = pytest.mark.slow


def test_encoder_teacher_completes_repro_with_unavailable_arms_reported(tmp_path: Path):
    """`dvc repro summarize`: the Probe-KD pipeline; the pre-training study distils next-token logits, which an
    encoder does not have (its `teacher_signal` says so in one line)."""
    repo = make_tiny_repo(tmp_path, {**TINY, "teacher": {"model": "data/raw/encoder"}})
    make_tiny_encoder(repo / "data/raw/encoder")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "encoder teacher"], repo)
    output = dvc("repro", "summarize", cwd=repo)
    assert "logit_kd: unavailable, recorded as such" in output
    summary = json.loads((repo / "data/summary/metrics.json").read_text())
    assert summary["logit_kd_available"] == 0 and summary["cloze_kd_available"] == 0
    for arm in ("gold", "probe_kd", "hld", "oracle"):
        assert 0.0 <= summary[f"{arm}_test_acc"] <= 1.0 and f"{arm}_available" not in summary
    assert "teacher_letter_test_acc" not in summary and 0.0 <= summary["probe_test_acc"] <= 1.0
    details = json.loads((repo / "data/summary/details.json").read_text())
    assert details["labels_teacher_available"] == 0.0 and details["labels_probe_available"] == 1.0
    why = json.loads((repo / "data/students/logit_kd/metrics.json").read_text())["why"]
    assert "has no LM head (encoder-only)" in why
    ref = json.loads((repo / "data/models/teacher/model_ref.json").read_text())
    assert ref["source"] == "data/raw/encoder" and ref["kind"] == "encoder"  # relative: valid in any clone
    ran = set(re.findall(r"Running stage '([^']+)'", dvc("repro", "summarize", cwd=repo)))
    assert ran == {"fingerprint@teacher", "fingerprint@student"}  # done: the unavailable arms are cached too
    make_tiny_encoder(repo / "data/raw/encoder", seed=1)  # other weights in place, same file names
    ran = set(re.findall(r"Running stage '([^']+)'", dvc("repro", "summarize", cwd=repo)))
    extracts = {f"extract@{split}" for split in ("labeled", "transfer", "val", "test")}
    assert {"models@teacher", *extracts, "probe"} <= ran and "models@student" not in ran, ran
    assert json.loads((repo / "data/models/teacher/model_ref.json").read_text())["revision"] != ref["revision"]
