"""Fruits-360 (S3): 100x100 jpgs in ``Training/<Class>/`` and ``Test/<Class>/``; the classes (131, 141
or 155 depending on the version) are read from the folders. It has no automatic download."""

from __future__ import annotations

from cnnlab.data.base import Split
from cnnlab.data.errors import DataError
from cnnlab.data.folder import FolderDataModule
from cnnlab.data.images import ImageFiles, scan_class_folders
from cnnlab.data.splits import stratified_holdout

SOURCES = "https://www.kaggle.com/datasets/moltean/fruits or https://github.com/fruits-360/fruits-360-100x100"


class Fruits360DataModule(FolderDataModule):
    """The given train/test split; validation is a seeded stratified ``val_fraction`` of Training."""

    def __init__(self, val_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_fraction = val_fraction

    def scan(self) -> list[ImageFiles]:
        layout = f"{self.root}/Training/<Class>/*.jpg and {self.root}/Test/<Class>/*.jpg"
        if not (self.root / "Training").is_dir() or not (self.root / "Test").is_dir():
            raise DataError(
                f"Fruits-360 is not in {self.root} (it is not downloaded automatically). Get it from "
                f"{SOURCES}, unpack it and place it as:\n  {layout}\nor point data.root at the folder "
                f"that holds Training/ and Test/."
            )
        train_files = scan_class_folders(self.root, self.root / "Training", layout)
        return [train_files, scan_class_folders(self.root, self.root / "Test", layout, train_files.class_names)]

    def load_splits(self) -> dict[str, Split]:
        train, test = self.read_files()
        keep, val = stratified_holdout(train.files.labels, self.val_fraction, self.seed, self.class_names)
        return {"train": train.take(keep), "val": train.take(val), "test": test.whole()}
