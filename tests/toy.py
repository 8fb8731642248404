"""A tiny in-test dataset with planted events, independent of the synthetic benchmark."""

from __future__ import annotations

import numpy as np
import torch

from cupl.data.split import Split


def toy_split(num_abnormal: int, num_normal: int, *, dim: int = 16, crops: int = 2, seed: int = 0,
              test: bool = False, min_len: int = 20, max_len: int = 60):
    """Videos of Gaussian clips; abnormal ones hold one or two events shifted along a fixed direction.

    returns: (Split, oracle [N] float32 clip truth).
    """
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(1234).normal(size=dim)
    direction /= np.linalg.norm(direction)
    feats, truths, masks, lengths, labels = [], [], [], [], []
    for v in range(num_abnormal + num_normal):
        t = int(rng.integers(min_len, max_len + 1))
        x = rng.normal(size=(t, dim)) * 0.5 + rng.normal(size=dim) * 0.3
        truth = np.zeros(t, dtype=np.float32)
        if v < num_abnormal:
            for _ in range(int(rng.integers(1, 3))):
                length = int(rng.integers(3, max(4, t // 4)))
                start = int(rng.integers(0, t - length))
                truth[start:start + length] = 1.0
            x += 2.5 * truth[:, None] * direction * rng.uniform(0.6, 1.4)
        crop_noise = rng.normal(size=(t, crops, dim)) * 0.05
        feats.append((x[:, None, :] + crop_noise).astype(np.float32))
        truths.append(truth)
        masks.append(np.repeat(truth, 16).astype(np.uint8)[: t * 16 - int(rng.integers(0, 16))])
        lengths.append(t)
        labels.append(1 if v < num_abnormal else 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    names = [f"{'Abn' if l else 'Nor'}{i:03d}" for i, l in enumerate(labels)]
    split = Split(
        features=torch.from_numpy(np.concatenate(feats)),
        offsets=torch.from_numpy(offsets).long(),
        labels=torch.tensor(labels),
        names=names,
        categories=["Toy" if l else "Normal" for l in labels],
        num_frames=torch.tensor([len(m) for m in masks]),
        frame_labels=masks if test else None,
    )
    return split, torch.from_numpy(np.concatenate(truths))
