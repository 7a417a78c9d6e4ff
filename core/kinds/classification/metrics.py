"""Per-task classification metrics: accuracy and (macro / mean) AUC, MedMNIST conventions."""

from __future__ import annotations

import numpy as np


def binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney U statistic (ties get average ranks); nan if one class is absent."""
    y_true = np.asarray(y_true).astype(bool)
    pos, neg = int(y_true.sum()), int((~y_true).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y_true].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def classification_metrics(probs: np.ndarray, labels: np.ndarray, kind: str) -> dict[str, float]:
    """acc and auc for one task.

    multiclass: probs (N, C) softmax, labels (N,) ints; acc = top-1, auc = macro one-vs-rest AUC
    (binary tasks: AUC of the positive class). multilabel: probs (N, C) sigmoid, labels (N, C) 0/1;
    acc = mean over labels of the accuracy at 0.5, auc = mean over labels of the AUC.
    Classes absent from the labels are left out of the AUC mean.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if kind == "multilabel":
        acc = float(((probs >= 0.5) == labels.astype(bool)).mean())
        aucs = [binary_auc(labels[:, c], probs[:, c]) for c in range(probs.shape[1])]
    else:
        labels = labels.astype(np.int64).reshape(-1)
        acc = float((probs.argmax(axis=1) == labels).mean())
        if probs.shape[1] == 2:
            aucs = [binary_auc(labels == 1, probs[:, 1])]
        else:
            aucs = [binary_auc(labels == c, probs[:, c]) for c in range(probs.shape[1])]
    valid = [a for a in aucs if not np.isnan(a)]
    return {"acc": acc, "auc": float(np.mean(valid)) if valid else float("nan")}
