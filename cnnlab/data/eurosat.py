"""EuroSAT RGB (S0): 27,000 Sentinel-2 64x64 jpgs in 10 classes, fetched and laid out by torchvision's
``EuroSAT`` (``<root>/eurosat/2750/<Class>/<Class>_<n>.jpg``)."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import EuroSAT

from cnnlab.data.base import Split
from cnnlab.data.download import download_once
from cnnlab.data.errors import DataError
from cnnlab.data.folder import FolderDataModule
from cnnlab.data.images import ImageFiles, scan_class_folders
from cnnlab.data.splits import stratified_split

# the archive torchvision's EuroSAT.download fetches; named in the offline error
EUROSAT_URL = (
    "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip"
)


class EuroSATDataModule(FolderDataModule):
    """Stratified seeded train/val/test split (``fractions``; 60/20/20 gives 16,200 / 5,400 / 5,400)."""

    def __init__(self, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), **kwargs) -> None:
        super().__init__(**kwargs)
        self.fractions = tuple(fractions)

    @property
    def folder(self) -> Path:
        return self.root / "eurosat" / "2750"

    @property
    def layout(self) -> str:
        return f"{self.folder}/<Class>/<Class>_<n>.jpg  (10 class folders, e.g. AnnualCrop/AnnualCrop_1.jpg)"

    def prepare_data(self) -> None:
        if self.download:
            download_once(
                self.root,
                self.folder.is_dir,
                "EuroSAT",
                EUROSAT_URL,
                self.layout,
                lambda: EuroSAT(self.root, download=True),
            )
        super().prepare_data()

    def scan(self) -> list[ImageFiles]:
        if not self.folder.is_dir():
            raise DataError(
                f"EuroSAT is not in {self.folder} and data.download=false. Set data.download=true to fetch it "
                f"from {EUROSAT_URL}, or place it as:\n  {self.layout}"
            )
        return [scan_class_folders(self.root, self.folder, self.layout)]

    def load_splits(self) -> dict[str, Split]:
        (decoded,) = self.read_files()
        indices = stratified_split(decoded.files.labels, self.fractions, self.seed, self.class_names)
        return {name: decoded.take(idx) for name, idx in zip(("train", "val", "test"), indices)}
