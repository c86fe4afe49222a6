"""Matthews correlation coefficient as an `evaluate` metric module, shipped with hf_adapt so
it loads offline.

Load it by path (`evaluate.load(".../metric_modules/matthews_correlation")`);
`evaluate.load("matthews_correlation")` would fetch the canonical script from the Hub instead.
"""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = """
The Matthews correlation coefficient (MCC) measures the agreement between predicted and
reference labels from the whole confusion matrix, so it stays informative when classes are
imbalanced. It ranges from -1.0 (total disagreement) through 0.0 (no better than chance, or a
constant prediction) to 1.0 (perfect). The multi-class form is Gorodkin's R_K statistic.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): reference class ids, one per prediction.
    sample_weight (`list[float]`, *optional*): one weight per example.

Returns:
    matthews_correlation (`float`): the coefficient, between -1.0 and 1.0.

Example:
    >>> mcc = evaluate.load("hf_adapt/metric_modules/matthews_correlation")
    >>> mcc.compute(predictions=[0, 1, 1, 0], references=[0, 1, 1, 0])
    {'matthews_correlation': 1.0}
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


class MatthewsCorrelation(evaluate.Metric):
    """Binary or multi-class Matthews correlation coefficient, computed with scikit-learn."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"
            ],
        )

    def _compute(self, predictions, references, sample_weight=None) -> dict[str, float]:
        score = matthews_corrcoef(references, predictions, sample_weight=sample_weight)
        return {"matthews_correlation": float(score)}
