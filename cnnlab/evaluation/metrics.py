"""Per-class metrics of a set of predictions: scikit-learn's classification report, confusion matrix,
one-vs-rest ROC curves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.inference import Predictions


@dataclass
class RocCurve:
    """One-vs-rest ROC of one class."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


@dataclass
class ClassificationMetrics:
    report: dict  # scikit-learn's classification_report(output_dict=True), keyed by class name
    report_text: str
    confusion: np.ndarray  # (K, K) counts, rows = true class, columns = predicted class
    roc: dict[str, RocCurve]  # classes with both positives and negatives in the split
    auroc_macro: float  # mean one-vs-rest AUC over ``roc``; NaN if no class qualifies

    def per_class(self, class_names: list[str]) -> dict[str, list[float]]:
        """Precision, recall and F1 as lists in class order."""
        return {m: [self.report[c][m] for c in class_names] for m in ("precision", "recall", "f1-score")}


def compute_metrics(predictions: Predictions) -> ClassificationMetrics:
    """Everything the report shows, computed with scikit-learn on all classes (absent ones included)."""
    from sklearn.metrics import auc, classification_report, confusion_matrix, roc_curve  # ~0.2 s: not at start-up

    names = predictions.class_names
    labels = list(range(len(names)))
    y_true, y_pred = predictions.labels, predictions.predicted
    kwargs = dict(labels=labels, target_names=names, zero_division=0)
    probs = predictions.probs
    roc = {}
    for k, name in enumerate(names):
        positives = y_true == k
        if positives.any() and not positives.all():
            fpr, tpr, _ = roc_curve(positives, probs[:, k])
            roc[name] = RocCurve(fpr, tpr, float(auc(fpr, tpr)))
    return ClassificationMetrics(
        report=classification_report(y_true, y_pred, output_dict=True, **kwargs),
        report_text=classification_report(y_true, y_pred, digits=4, **kwargs),
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        roc=roc,
        auroc_macro=float(np.mean([r.auc for r in roc.values()])) if roc else float("nan"),
    )
