"""Seeded, stratified splits shared by every dataset."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for train/val/test with the given fractions, each split stratified by label."""
    labels = np.asarray(labels)
    indices = np.arange(len(labels))
    train_frac, val_frac, test_frac = fractions
    if not np.isclose(train_frac + val_frac + test_frac, 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rest_size = int(round((val_frac + test_frac) * len(labels)))
    train, rest = train_test_split(indices, test_size=rest_size, stratify=labels, random_state=seed)
    test_size = int(round(test_frac * len(labels)))
    val, test = train_test_split(rest, test_size=test_size, stratify=labels[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout) with ``fraction`` held out, stratified by label."""
    labels = np.asarray(labels)
    keep, holdout = train_test_split(
        np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed
    )
    return np.sort(keep), np.sort(holdout)


def kfold_split(labels: np.ndarray, num_folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of fold ``fold`` of a seeded stratified k-fold."""
    if not 0 <= fold < num_folds:
        raise ValueError(f"data.fold must be in [0, {num_folds - 1}], got {fold}")
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    train, held_out = list(folds.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(train), np.sort(held_out)
