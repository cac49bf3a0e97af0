"""Hydra config tree of cnnlab (shipped inside the package as ``cnnlab.conf``)."""
