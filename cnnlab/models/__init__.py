"""Architectures as plain ``nn.Module``s, registered by name.

Every builder takes ``num_classes``, ``in_chans``, ``img_size`` and ``activation`` (a factory for the
model's swappable nonlinearity, or None for the model's own default) and exposes ``head``: the
classifier that transfer learning re-initializes and that freeze policies always keep trainable.
"""

from cnnlab.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
