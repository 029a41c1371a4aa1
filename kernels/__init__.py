"""Torch compute for kdtui: models, data, augmentation, losses, metrics, ensembles, init, engine.

Importing this package stays cheap (no torch): submodules import torch themselves, so that
`kernels.catalog` can serve names to the app without the cost of loading torch.
"""
