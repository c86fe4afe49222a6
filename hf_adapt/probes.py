"""Probe files for the forgetting meter: which kind a CSV is, and reading its rows.

A probe's header picks its kind: `sentence1,sentence2,score` is an STS probe (how well the
encoder's sentence vectors still rank similarity), `text,label` a labelled probe (an earlier
model's old-task accuracy). Extra columns are allowed. Reading is plain `csv`: the recipe loader
checks a probe's kind at load time, before anything heavy is imported.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hf_adapt.errors import HfAdaptError

STS_COLUMNS = ("sentence1", "sentence2", "score")
LABELLED_COLUMNS = ("text", "label")


def detect_probe_kind(probe: str | Path) -> str:
    """Tell the probe kind from the CSV header: `"sts"` or `"labelled"`.

    Extra columns are allowed (e.g. the `group` column of grouped datasets).

    Raises:
        `HfAdaptError`: if the file is missing or its header fits neither kind.
    """
    columns = read_header(Path(probe))
    if set(STS_COLUMNS) <= set(columns):
        return "sts"
    if set(LABELLED_COLUMNS) <= set(columns):
        return "labelled"
    raise HfAdaptError(
        f"{probe}: probe columns {','.join(columns) or '(none)'} fit no probe kind; expected "
        f"{','.join(STS_COLUMNS)} (STS pairs) or {','.join(LABELLED_COLUMNS)} (labelled examples)"
    )


def read_header(path: Path) -> list[str]:
    if not path.is_file():
        raise HfAdaptError(f"probe file {path} does not exist; pass a CSV file with --probe")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [column.strip() for column in next(csv.reader(handle), [])]


def read_rows(path: Path, columns: Sequence[str], max_rows: int | None) -> list[dict[str, str]]:
    """Read the first `max_rows` rows of a probe CSV after checking its columns."""
    if max_rows is not None and max_rows < 1:
        raise HfAdaptError(f"max_rows must be a positive integer, got {max_rows}")
    header = read_header(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise HfAdaptError(f"{path}: column {missing[0]} is missing (found {','.join(header)}); expected {','.join(columns)}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, fieldnames=header)  # stripped names, not the raw ones
        next(reader)  # the header row itself
        rows = list(itertools.islice(reader, max_rows))
    if not rows:
        raise HfAdaptError(f"{path}: the probe has a header but no rows; add examples")
    return rows


def read_sts_pairs(pairs_csv: str | Path, max_rows: int | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """Read `sentence1`, `sentence2` and float `score` columns of an STS CSV."""
    path = Path(pairs_csv)
    rows = read_rows(path, STS_COLUMNS, max_rows)
    scores = np.empty(len(rows), dtype=np.float64)
    for line, row in enumerate(rows, start=2):
        try:
            scores[line - 2] = float(row["score"])
        except (TypeError, ValueError):
            raise HfAdaptError(f"{path}, line {line}: score {row['score']!r} is not a number; fix the row") from None
    return [r["sentence1"] or "" for r in rows], [r["sentence2"] or "" for r in rows], scores


def read_labelled_examples(labelled_csv: str | Path, max_rows: int | None = None) -> tuple[list[str], list[str]]:
    """Read the `text` and `label` (string) columns of a labelled CSV."""
    rows = read_rows(Path(labelled_csv), LABELLED_COLUMNS, max_rows)
    return [r["text"] or "" for r in rows], [r["label"] or "" for r in rows]
