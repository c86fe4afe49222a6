"""Tests for hf_adapt.metrics: values agree with scikit-learn, and loading never needs the network."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from hf_adapt.errors import HfAdaptError
from hf_adapt.metrics import (
    METRIC_NAMES,
    build_compute_metrics,
    compute_classification_metrics,
    expected_calibration_error,
    load_metric,
)

ID2LABEL = {0: "weather", 1: "set_alarm", 2: "play_music", 3: "order_food"}
# Class 3 (order_food) occurs in neither list: its per-class F1 is undefined.
REFERENCES = [0, 0, 0, 1, 1, 1, 2, 2, 0, 1]
PREDICTIONS = [0, 0, 1, 1, 1, 2, 2, 0, 0, 1]

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "hf_adapt"


def test_compute_classification_metrics_matches_sklearn():
    scores = compute_classification_metrics(PREDICTIONS, REFERENCES, ID2LABEL)

    assert scores["accuracy"] == pytest.approx(accuracy_score(REFERENCES, PREDICTIONS))
    assert scores["macro_f1"] == pytest.approx(f1_score(REFERENCES, PREDICTIONS, average="macro"))
    assert scores["mcc"] == pytest.approx(matthews_corrcoef(REFERENCES, PREDICTIONS))
    per_class = f1_score(REFERENCES, PREDICTIONS, labels=[0, 1, 2], average=None)
    assert scores["f1_weather"] == pytest.approx(per_class[0])
    assert scores["f1_set_alarm"] == pytest.approx(per_class[1])
    assert scores["f1_play_music"] == pytest.approx(per_class[2])


def test_compute_classification_metrics_keys_and_plain_floats():
    scores = compute_classification_metrics(np.array(PREDICTIONS), np.array(REFERENCES), ID2LABEL)

    expected = {"accuracy", "macro_f1", "mcc"} | {f"f1_{label}" for label in ID2LABEL.values()}
    assert set(scores) == expected
    assert set(METRIC_NAMES) <= set(scores)
    # np.float64 subclasses float, so check the exact type: logs and cards need plain floats.
    assert all(type(value) is float for value in scores.values())


def test_absent_class_scores_zero_without_lowering_macro_f1(recwarn):
    scores = compute_classification_metrics(PREDICTIONS, REFERENCES, ID2LABEL)

    assert scores["f1_order_food"] == 0.0
    present = [scores["f1_weather"], scores["f1_set_alarm"], scores["f1_play_music"]]
    assert scores["macro_f1"] == pytest.approx(sum(present) / 3)
    assert not [w for w in recwarn if "UndefinedMetricWarning" in type(w.message).__name__]


def test_perfect_and_binary_predictions():
    perfect = compute_classification_metrics([0, 1, 1, 0], [0, 1, 1, 0], {0: "neg", 1: "pos"})
    assert perfect == {"accuracy": 1.0, "macro_f1": 1.0, "mcc": 1.0, "f1_neg": 1.0, "f1_pos": 1.0}

    inverted = compute_classification_metrics([1, 0, 0, 1], [0, 1, 1, 0], {0: "neg", 1: "pos"})
    assert inverted["accuracy"] == 0.0
    assert inverted["mcc"] == pytest.approx(-1.0)


def test_f1_module_average_and_labels():
    f1 = load_metric("f1")

    per_class = f1.compute(predictions=PREDICTIONS, references=REFERENCES, average=None, labels=[2, 0])["f1"]
    assert per_class == pytest.approx(list(f1_score(REFERENCES, PREDICTIONS, labels=[2, 0], average=None)))
    weighted = f1.compute(predictions=PREDICTIONS, references=REFERENCES, average="weighted")["f1"]
    assert weighted == pytest.approx(f1_score(REFERENCES, PREDICTIONS, average="weighted"))
    binary = f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])["f1"]
    assert binary == pytest.approx(f1_score([0, 1, 0, 0], [0, 1, 1, 0]))


def test_load_metric_is_cached():
    assert load_metric("accuracy") is load_metric("accuracy")


def test_load_metric_unknown_name_lists_valid_names():
    with pytest.raises(HfAdaptError, match="'bleu'") as excinfo:
        load_metric("bleu")
    for name in ("accuracy", "f1", "matthews_correlation"):
        assert name in str(excinfo.value)


@pytest.mark.integration
def test_load_metric_offline_reads_package_modules(tmp_path):
    """Load every metric in a fresh process: offline env vars, an empty HF cache, sockets
    that raise. A Hub lookup would fail there, and the copy evaluate imports must record
    our package file as its origin."""
    script = textwrap.dedent(
        """
        import json, socket, sys
        from pathlib import Path

        def refuse(*args, **kwargs):
            raise RuntimeError("network access attempted")

        socket.socket.connect = refuse
        socket.create_connection = refuse

        from hf_adapt.metrics import load_metric

        origins = {}
        for name in ("accuracy", "f1", "matthews_correlation"):
            module = load_metric(name)
            # evaluate copies the script into its modules cache, next to a JSON file that
            # records where the copy came from.
            copied = Path(sys.modules[type(module).__module__].__file__)
            origins[name] = json.loads(copied.with_suffix(".json").read_text())["original file path"]
        print(json.dumps(origins))
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    origins = json.loads(result.stdout.strip().splitlines()[-1])
    for name, origin in origins.items():
        assert Path(origin).resolve() == PACKAGE_DIR / "metric_modules" / name / f"{name}.py"


def test_build_compute_metrics_takes_first_element_of_tuple_predictions():
    logits = np.array(
        [[2.0, 0.1, 0.0, 0.0], [0.0, 3.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.5], [0.3, 0.2, 0.1, 0.0]],
        dtype=np.float32,
    )
    hidden_states = np.zeros((4, 3, 8), dtype=np.float32)
    labels = np.array([0, 1, 2, 2])
    compute_metrics = build_compute_metrics(ID2LABEL)

    scores = compute_metrics(EvalPrediction(predictions=(logits, hidden_states), label_ids=labels))

    assert scores == {**compute_classification_metrics([0, 1, 2, 0], labels, ID2LABEL),
                      "ece": expected_calibration_error(logits, labels, "single_label")}
    assert scores["accuracy"] == pytest.approx(0.75)
    assert compute_metrics(EvalPrediction(predictions=logits, label_ids=labels)) == scores
