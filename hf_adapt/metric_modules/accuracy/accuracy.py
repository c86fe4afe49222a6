"""Accuracy as an `evaluate` metric module, shipped with hf_adapt so it loads offline.

`evaluate.load("accuracy")` fetches the canonical script from the Hub; loading this file by
path (`evaluate.load(".../metric_modules/accuracy")`) needs no network.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """
Accuracy is the fraction of examples whose predicted label equals the reference label:
(number of correct predictions) / (number of predictions). It ranges from 0.0 to 1.0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): reference class ids, one per prediction.
    normalize (`bool`, defaults to `True`): if `False`, return the number of correct
        predictions instead of the fraction.
    sample_weight (`list[float]`, *optional*): one weight per example.

Returns:
    accuracy (`float`): the fraction (or count, with `normalize=False`) of correct predictions.

Example:
    >>> accuracy = evaluate.load("hf_adapt/metric_modules/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 0.75}
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


class Accuracy(evaluate.Metric):
    """Single-label classification accuracy, computed with scikit-learn."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None) -> dict[str, float]:
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
