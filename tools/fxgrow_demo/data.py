"""The demo's data: scikit-learn's digits (shipped inside scikit-learn: no download) and an
endless, seeded stream of shifted training batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str = ""


def digits() -> Data:
    """scikit-learn's digits (1797 8x8 images, 10 classes; shipped inside scikit-learn), a fixed
    stratified 75/25 split, standardised with the training set's mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    i_tr, i_te = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.25, random_state=0, stratify=y.numpy()
    )
    x_tr, x_te = x[i_tr], x[i_te]
    mean, std = x_tr.mean(), x_tr.std()
    return Data((x_tr - mean) / std, y[i_tr], (x_te - mean) / std, y[i_te], "digits")


class Batches:
    """An endless, seeded stream of shuffled training batches, each image shifted by up to
    ``shift`` pixels (zero padding).  Two streams with the same seed give the same batches."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, shift: int = 1
    ) -> None:
        self.x, self.y, self.batch_size, self.shift = x, y, batch_size, shift
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.long)
        self.fill = float(x.min())  # the background

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.order) < self.batch_size:
            self.order = torch.cat([self.order, torch.randperm(len(self.y), generator=self.gen)])
        idx, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        x = self.x[idx]
        if self.shift:
            x = shift(x, self.shift, self.gen, self.fill)
        return x, self.y[idx]


def shift(x: torch.Tensor, s: int, gen: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Each image of ``x`` [N, C, H, W] moved by its own random offset in [-s, s]^2; pixels
    that come in are ``fill``."""
    n, (h, w) = len(x), x.shape[-2:]
    padded = F.pad(x, (s, s, s, s), value=fill)
    dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # N, 1, H, 1
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # N, 1, 1, W
    batch = torch.arange(n)[:, None, None, None]
    chan = torch.arange(x.shape[1])[None, :, None, None]
    return padded[batch, chan, rows, cols]
