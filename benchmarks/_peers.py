"""Small adapters the benchmarks share to call peer libraries."""

import torch


class MeanLoss(torch.nn.Module):
    """A batch-mean loss function as the module curvlinops expects (it reads ``.reduction``)."""

    reduction = "mean"

    def __init__(self, loss_fn):
        super().__init__()
        self.loss_fn = loss_fn

    def forward(self, out, target):
        return self.loss_fn(out, target)
