"""Architectures as plain ``nn.Module``s, each named in its ``conf/model/<name>.yaml`` by ``net._target_``.

Every builder takes ``num_classes``, ``in_chans``, ``img_size`` and ``activation`` (a factory for the
model's swappable nonlinearity, or None for the model's own default) and exposes ``head``: the
classifier that transfer learning re-initializes and that freeze policies always keep trainable.
"""
