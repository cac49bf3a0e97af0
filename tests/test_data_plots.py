"""The data plots of a run: sample grid, augmented grid, class distribution."""

from __future__ import annotations

import numpy as np
from fakedata import write_image_folder
from PIL import Image

from cnnlab.data.augment import BatchAugment
from cnnlab.data.imagefolder import ImageFolderDataModule
from cnnlab.evaluation.data_plots import plot_data


def test_plot_data_writes_three_pngs(tmp_path):
    root = write_image_folder(tmp_path / "images")
    dm = ImageFolderDataModule(root=root, img_size=16, augment=BatchAugment(vflip=1.0))
    paths = plot_data(dm, tmp_path / "report", per_class=4)
    assert [p.name for p in paths] == ["samples.png", "samples_augmented.png", "class_distribution.png"]
    samples, augmented = (np.asarray(Image.open(p)) for p in paths[:2])
    assert samples.shape == augmented.shape and samples.shape[0] > 100
    assert not np.array_equal(samples, augmented)
