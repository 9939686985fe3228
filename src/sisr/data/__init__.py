"""Images and data: the one image reader and writer (:mod:`sisr.data.images`), datasets and seeded,
resumable loaders (:mod:`sisr.data.datasets`).

Nothing is imported here, so that reading an image does not import torch.
"""
