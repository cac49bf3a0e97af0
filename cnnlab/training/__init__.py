"""The generic LightningModule, freeze policies and callbacks."""
