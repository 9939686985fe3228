"""Images and data: the one image reader and writer (:mod:`sisr.data.images`), the datasets
(:mod:`sisr.data.datasets`), building them from a config or a benchmark folder (:mod:`sisr.data.build`)
and seeded, resumable loaders (:mod:`sisr.data.loaders`).

Nothing is imported here, so that reading an image does not import torch.
"""
