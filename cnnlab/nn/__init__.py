"""Reusable layers: activations, blocks and hand-crafted feature extractors."""
