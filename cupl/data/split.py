"""A whole split of a feature bank as one tensor: the shape every hot path works on.

Videos have different lengths, so clips of all videos are concatenated in list order and
`offsets` marks where each video starts: video `v` owns rows `offsets[v]:offsets[v+1]`.
No step that touches all clips loops over videos in Python; they index with `offsets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass
class Split:
    """All videos of one split.

    features:   [N, C, D] clip features of every video, concatenated (C crops).
    offsets:    [V + 1] int64, video v is rows offsets[v]:offsets[v + 1].
    labels:     [V] int64, the weak video-level label (1 abnormal, 0 normal).
    names:      V video names, list order of the bank.
    categories: V class names ("Normal" for normal videos).
    num_frames: [V] int64, frames of the original video.
    frame_labels: test splits only: V uint8 masks of length num_frames[v].
    """

    features: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    categories: list[str]
    num_frames: torch.Tensor
    frame_labels: list[np.ndarray] | None = None
    frames_per_clip: int = 16
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.features.ndim != 3:
            raise ValueError(
                f"Split.features: expected [N, C, D], got shape {tuple(self.features.shape)}"
            )
        n_videos = len(self.names)
        if self.offsets.shape != (n_videos + 1,):
            raise ValueError(
                f"Split.offsets: expected [{n_videos + 1}] for {n_videos} videos, "
                f"got shape {tuple(self.offsets.shape)}"
            )
        if int(self.offsets[-1]) != self.features.shape[0]:
            raise ValueError(
                f"Split.offsets ends at {int(self.offsets[-1])} but features hold "
                f"{self.features.shape[0]} clips"
            )
        if bool((self.lengths <= 0).any()):
            empty = [self.names[i] for i in torch.nonzero(self.lengths <= 0).flatten().tolist()]
            raise ValueError(f"Split: videos with no clips: {empty[:10]}")

    @property
    def num_videos(self) -> int:
        return len(self.names)

    @property
    def num_clips(self) -> int:
        return int(self.features.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """[V] clips per video."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def video_index(self) -> torch.Tensor:
        """[N] the video each clip belongs to."""
        return torch.repeat_interleave(
            torch.arange(self.num_videos, device=self.offsets.device), self.lengths
        )

    @property
    def starts(self) -> torch.Tensor:
        """[N] the first row of each clip's video, for windows that must not cross videos."""
        return self.offsets[:-1].repeat_interleave(self.lengths)

    def to(self, device=None, dtype=None) -> "Split":
        return replace(
            self,
            features=self.features.to(device=device, dtype=dtype),
            offsets=self.offsets.to(device),
            labels=self.labels.to(device),
            num_frames=self.num_frames.to(device),
        )

    def subset(self, videos) -> "Split":
        """The split restricted to the given video indices, in the given order."""
        videos = torch.as_tensor(videos, dtype=torch.long).cpu()
        off = self.offsets.cpu()
        rows = torch.cat([torch.arange(int(off[v]), int(off[v + 1])) for v in videos.tolist()])
        lengths = (off[1:] - off[:-1])[videos]
        new_off = torch.zeros(len(videos) + 1, dtype=torch.long)
        new_off[1:] = torch.cumsum(lengths, 0)
        idx = videos.tolist()
        return replace(
            self,
            features=self.features[rows.to(self.features.device)],
            offsets=new_off.to(self.offsets.device),
            labels=self.labels[videos.to(self.labels.device)],
            names=[self.names[i] for i in idx],
            categories=[self.categories[i] for i in idx],
            num_frames=self.num_frames[videos.to(self.num_frames.device)],
            frame_labels=None if self.frame_labels is None else [self.frame_labels[i] for i in idx],
        )
