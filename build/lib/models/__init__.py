"""The networks and their registry, heads, the preprocessing spec, the model description and the checkpoints.

Import what you need from its module: ``models.registry`` (every architecture, ``get_model``; PyTorch),
``models.checkpoint`` (``ModelBundle``, ``load_bundle``; PyTorch), and the torch-free side the ONNX path reads —
``models.schema`` (what a model says about itself, the MAIC modes, the unknown-sex code), ``models.preprocessing``
and ``models.files``.
"""
