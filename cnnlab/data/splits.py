"""Seeded, stratified splits shared by every dataset. A class too small to be split (scikit-learn's
"least populated class" error) is a :class:`DataError` naming it and the images each class needs."""

from __future__ import annotations

import math
from typing import Callable, Sequence, TypeVar

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from cnnlab.data.errors import DataError

T = TypeVar("T")


def _explain_small_classes(
    split: Callable[[], T], labels: np.ndarray, class_names: Sequence[str] | None, needed: int, what: str
) -> T:
    """``split()``, whose ValueError (a class with too few images for stratification) becomes a one-line
    :class:`DataError` naming the smallest classes and the ``needed`` images per class."""
    try:
        return split()
    except ValueError:
        counts = np.bincount(labels)
        present = np.flatnonzero(counts)
        small = [c for c in present if counts[c] < needed] or [present[counts[present].argmin()]]
        names = class_names or [str(c) for c in range(len(counts))]
        listed = ", ".join(f"{names[c]!r} ({counts[c]} image{'s' if counts[c] != 1 else ''})" for c in small)
        raise DataError(
            f"{'class' if len(small) == 1 else 'classes'} {listed}: too few images for {what}, which needs "
            f"at least {needed} images per class. Add images or remove the class folder."
        ) from None


def _needed(*shares: float) -> int:
    """Images a class needs for each of the parts with these fractions to receive one (at least 2)."""
    return max(2, math.ceil(1 / min(shares) - 1e-9))


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for train/val/test with the given fractions, each split stratified by label."""
    labels = np.asarray(labels)
    indices = np.arange(len(labels))
    train_frac, val_frac, test_frac = fractions
    if not np.isclose(train_frac + val_frac + test_frac, 1.0):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")

    def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rest_size = int(round((val_frac + test_frac) * len(labels)))
        train, rest = train_test_split(indices, test_size=rest_size, stratify=labels, random_state=seed)
        test_size = int(round(test_frac * len(labels)))
        val, test = train_test_split(rest, test_size=test_size, stratify=labels[rest], random_state=seed)
        return np.sort(train), np.sort(val), np.sort(test)

    what = f"a stratified train/val/test split of fractions {list(fractions)}"
    return _explain_small_classes(split, labels, class_names, _needed(*(f for f in fractions if f > 0)), what)


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout) with ``fraction`` held out, stratified by label."""
    labels = np.asarray(labels)

    def split() -> tuple[np.ndarray, np.ndarray]:
        keep, holdout = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels, random_state=seed)
        return np.sort(keep), np.sort(holdout)

    what = f"a stratified hold-out of {fraction:g}"
    return _explain_small_classes(split, labels, class_names, _needed(fraction, 1 - fraction), what)


def kfold_split(
    labels: np.ndarray,
    num_folds: int,
    fold: int,
    fractions: tuple[float, float, float],
    seed: int,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, val and test indices: fold ``fold`` of a seeded stratified k-fold as training, the other
    fold shared by val and test in the ratio of ``fractions``' last two (stratified)."""
    if not 0 <= fold < num_folds:
        raise ValueError(f"data.fold must be in [0, {num_folds - 1}], got {fold}")
    labels = np.asarray(labels)
    _, val_frac, test_frac = fractions
    test_share = test_frac / (val_frac + test_frac)

    def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        train, held_out = (np.sort(part) for part in list(folds.split(np.zeros(len(labels)), labels))[fold])
        val, test = train_test_split(
            np.arange(len(held_out)), test_size=test_share, stratify=labels[held_out], random_state=seed
        )
        return train, np.sort(held_out[val]), np.sort(held_out[test])

    what = f"a stratified {num_folds}-fold split whose held-out fold is split into val and test"
    return _explain_small_classes(split, labels, class_names, num_folds * _needed(test_share, 1 - test_share), what)
