"""EuroSAT RGB (S0): 27,000 Sentinel-2 64x64 jpgs in 10 classes, fetched and laid out by torchvision's
``EuroSAT`` (``<root>/eurosat/2750/<Class>/<Class>_<n>.jpg``)."""

from __future__ import annotations

from torchvision.datasets import EuroSAT

from cnnlab.data.base import Split
from cnnlab.data.download import download_or_explain
from cnnlab.data.errors import DataError
from cnnlab.data.folder import FolderDataModule
from cnnlab.data.images import scan_class_folders
from cnnlab.data.splits import stratified_split

# the archive torchvision's EuroSAT.download fetches; named in the offline error
EUROSAT_URL = "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip"


class EuroSATDataModule(FolderDataModule):
    """Stratified seeded train/val/test split (``fractions``; 60/20/20 gives 16,200 / 5,400 / 5,400)."""

    def __init__(self, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), **kwargs) -> None:
        super().__init__(**kwargs)
        self.fractions = tuple(fractions)

    def load_splits(self) -> dict[str, Split]:
        folder = self.root / "eurosat" / "2750"
        layout = f"{folder}/<Class>/<Class>_<n>.jpg  (10 class folders, e.g. AnnualCrop/AnnualCrop_1.jpg)"
        if not folder.is_dir():
            if not self.download:
                raise DataError(
                    f"EuroSAT is not in {folder} and data.download=false. Set data.download=true to fetch it "
                    f"from {EUROSAT_URL}, or place it as:\n  {layout}"
                )
            download_or_explain("EuroSAT", EUROSAT_URL, layout, lambda: EuroSAT(self.root, download=True))
        files = scan_class_folders(self.root, folder, layout)
        self.class_names = files.class_names
        images, files = self.read(files)
        indices = stratified_split(files.labels, self.fractions, self.seed)
        return {name: self.take(images, files, idx) for name, idx in zip(("train", "val", "test"), indices)}
