"""F1 score as an `evaluate` metric module, shipped with hf_adapt so it loads offline.

Load it by path (`evaluate.load(".../metric_modules/f1")`); `evaluate.load("f1")` would fetch
the canonical script from the Hub instead.
"""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = """
The F1 score is the harmonic mean of precision and recall: F1 = 2 * (P * R) / (P + R).
Per class it ranges from 0.0 to 1.0; `average` decides how per-class scores are combined.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): reference class ids, one per prediction.
    labels (`list[int]`, *optional*): the class ids to score, in this order. By default, the
        sorted ids that occur in `references` or `predictions`.
    pos_label (`int`, defaults to 1): the positive class when `average="binary"`.
    average (`str` or `None`, defaults to `"binary"`): `"binary"`, `"micro"`, `"macro"`,
        `"weighted"`, or `None` to return one score per class in `labels`.
    sample_weight (`list[float]`, *optional*): one weight per example.
    zero_division (`"warn"`, `0.0`, `1.0` or `nan`, defaults to `"warn"`): the score of a class
        that occurs in neither `references` nor `predictions` (its F1 is undefined).
        `"warn"` gives 0.0 and emits scikit-learn's `UndefinedMetricWarning`.

Returns:
    f1 (`float`, or `list[float]` when `average=None`): the F1 score(s).

Example:
    >>> f1 = evaluate.load("hf_adapt/metric_modules/f1")
    >>> f1.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2], average=None)
    {'f1': [1.0, 0.6666666666666666, 0.6666666666666666]}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and
          Grisel, O. and Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and
          Vanderplas, J. and Passos, A. and Cournapeau, D. and Brucher, M. and Perrot, M. and
          Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


class F1(evaluate.Metric):
    """Single-label F1 score (binary, averaged or per class), computed with scikit-learn."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(
        self,
        predictions,
        references,
        labels=None,
        pos_label=1,
        average="binary",
        sample_weight=None,
        zero_division="warn",
    ) -> dict[str, float | list[float]]:
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        # With average=None scikit-learn returns an array, one score per label; plain floats
        # keep the result JSON-serialisable for Trainer logs and model cards.
        if average is None:
            return {"f1": [float(s) for s in score]}
        return {"f1": float(score)}
