"""LightningDataModules, one per dataset, sharing :class:`cnnlab.data.base.ImageDataModule`."""
