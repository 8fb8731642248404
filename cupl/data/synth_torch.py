"""The embedded benchmark made on a device: a whole split of `cupl.data.synth` features at once.

numpy makes the benchmark video by video, far too slowly for the paper's scale (the whole UCF-Crime
training split is about 790k clips, 32 GB in bfloat16 with 10 crops of 2048-d). This module makes
the same videos on a GPU in seconds, from the same plan (`video_plan`: names, classes, frame
counts, events) and the same premises (`PREMISES`), in a simpler form:

- events are boxes of constant strength (no ramps in and out), and there are no hard-normal
  moments;
- all draws come from one torch generator for the split, not from per-video streams.

So the features are not `generate`'s, but what the plan fixes is the same: clip counts, frame
labels, and the event strength per clip, which with unit amplitudes is `generate`'s oracle (the
share of each clip's frames inside an event).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from cupl.data.annotations import frame_mask
from cupl.data.reference import load_reference
from cupl.data.split import Split
from cupl.data.synth import FRAMES_PER_CLIP, PREMISES, Premises, VideoPlan


def evenly_spaced(count: int, total: int) -> list[int]:
    """`count` indices spread over range(total), at least one and at most `total` (on a list
    ordered by class, as the real lists are, the class mix is kept)."""
    count = max(1, min(count, total))
    return [(i * total) // count for i in range(count)]


def stretch(plans: list[VideoPlan], factor: float) -> list[VideoPlan]:
    """The plans with every video's frames and events scaled by `factor` (1 keeps them); an
    event keeps at least one frame and stays inside its video."""
    if not factor > 0:
        raise ValueError(f"stretch: factor must be positive, got {factor!r}")
    out = []
    for p in plans:
        frames = max(1, round(p.num_frames * factor))
        events = tuple((min(round(s * factor), frames - 1), min(max(round(e * factor), round(s * factor) + 1), frames))
                       for s, e in p.events)
        out.append(replace(p, num_frames=frames, events=events))
    return out


def plan_events(plans: list[VideoPlan], device=None) -> tuple[torch.Tensor, ...]:
    """The plans as tensors: num_frames [V], and per event e (video after video) its video
    event_video[e] and frames event_start[e] <= f < event_end[e], all int64."""
    num_frames = torch.tensor([p.num_frames for p in plans], dtype=torch.long)
    events = torch.tensor([(v, s, e) for v, p in enumerate(plans) for s, e in p.events], dtype=torch.long)
    events = events.reshape(-1, 3).to(device)
    return num_frames.to(device), events[:, 0], events[:, 1], events[:, 2]


def clip_event_strength(num_frames: torch.Tensor, event_video: torch.Tensor, event_start: torch.Tensor,
                        event_end: torch.Tensor, amplitude: torch.Tensor,
                        frames_per_clip: int = FRAMES_PER_CLIP) -> torch.Tensor:
    """[N] float32 event strength of every clip: the mean, over the clip's frames inside its
    video, of the summed amplitudes of the events covering each frame.

    num_frames: [V]; video v has ceil(num_frames[v] / frames_per_clip) clips, N in all.
    Events e ([E] each): video event_video[e], frames event_start[e] <= f < event_end[e]
    (0-based, within the video), amplitude[e]. With unit amplitudes and disjoint events this
    is the oracle of `cupl.data.synth.generate`. One difference array over the frames, laid
    out clip after clip, and its float64 prefix sum give every frame's strength, with no loop
    over videos.
    """
    bad = (event_start < 0) | (event_end <= event_start) | (event_end > num_frames[event_video])
    if bool(bad.any()):
        e = int(bad.nonzero()[0, 0])
        v = int(event_video[e])
        raise ValueError(f"clip_event_strength: event [{int(event_start[e])}, {int(event_end[e])}) of video {v} "
                         f"is empty or outside its {int(num_frames[v])} frames")
    clips = -(-num_frames // frames_per_clip)
    first_clip = torch.cat([clips.new_zeros(1), clips.cumsum(0)[:-1]])
    total = int(clips.sum())
    diff = torch.zeros(total * frames_per_clip + 1, dtype=torch.float64, device=num_frames.device)
    amp = amplitude.double()
    diff.index_add_(0, first_clip[event_video] * frames_per_clip + event_start, amp)
    diff.index_add_(0, first_clip[event_video] * frames_per_clip + event_end, -amp)
    per_clip = diff.cumsum(0)[:-1].view(total, frames_per_clip).sum(dim=1)
    video = torch.repeat_interleave(torch.arange(len(clips), device=num_frames.device), clips)
    within = torch.arange(total, device=num_frames.device) - first_clip[video]
    frames_in_clip = (num_frames[video] - within * frames_per_clip).clamp(max=frames_per_clip)
    return (per_clip / frames_in_clip).float()


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def synthesize(lengths: torch.Tensor, classes: torch.Tensor, strength: torch.Tensor, *, num_classes: int,
               dim: int, crops: int, seed: int, premises: Premises = PREMISES, frame_s: float = 1 / 30,
               dtype=torch.bfloat16, chunk_vectors: int = 2**18) -> torch.Tensor:
    """Clip features of a whole split, made where `lengths` lives: [N, crops, dim] in `dtype`.

    lengths: [V] clips per video; classes: [V] event class of each video; strength: [N] event
    strength per clip (`clip_event_strength`); frame_s: seconds per frame. For clip t of video v

        z_t    = scene_v + sum_k a_vk cos(2 pi s_t / P_vk + phi_vk) + noise_t + strength_t d_class(v)
        x_t,c  = g * softplus((z_t + eps_t,c) W - theta)

    with s_t the clip's centre in seconds and every parameter a field of `premises`. All
    random draws come from one generator on the device seeded with `seed`, chunk by chunk
    (`chunk_vectors` vectors at a time, which also bounds the float32 temporaries), so a seed
    and a chunk size give the same features.
    """
    device, p = lengths.device, premises
    g = torch.Generator(device=device).manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=g, device=device)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=g, device=device)

    latent, k = p.latent_dim, p.drift_components
    lift = normal(latent, dim) / math.sqrt(latent)
    threshold = p.threshold_mean + p.threshold_std * normal(dim)
    gain = torch.exp(p.channel_gain_log_std * normal(dim))
    w = p.shared_anomaly_weight
    directions = _unit(w * _unit(normal(latent)) + math.sqrt(1 - w * w) * _unit(normal(num_classes, latent)))
    videos = len(lengths)
    scene = p.scene_std * normal(videos, latent)
    periods = torch.exp(uniform(math.log(p.drift_period_s[0]), math.log(p.drift_period_s[1]), videos, k))
    phases = uniform(0.0, 2 * math.pi, videos, k)
    drift = p.drift_std * math.sqrt(2.0 / k) * normal(videos, k, latent)
    video = torch.repeat_interleave(torch.arange(videos, device=device), lengths)
    starts = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])
    seconds = ((torch.arange(len(video), device=device) - starts[video]) * FRAMES_PER_CLIP
               + FRAMES_PER_CLIP / 2) * frame_s
    out = torch.empty(len(video), crops, dim, dtype=dtype, device=device)
    rows = max(1, chunk_vectors // crops)
    for lo in range(0, len(video), rows):
        v = video[lo:lo + rows]
        n = len(v)
        waves = torch.cos(2 * math.pi * seconds[lo:lo + rows, None] / periods[v] + phases[v])  # [n, K]
        z = (scene[v] + torch.einsum("nk,nkl->nl", waves, drift[v]) + p.clip_noise_std * normal(n, latent)
             + strength[lo:lo + rows, None] * directions[classes[v]])
        zc = z[:, None, :] + p.crop_noise_std * normal(n, crops, latent)
        out[lo:lo + rows] = (gain * torch.nn.functional.softplus(zc @ lift - threshold)).to(dtype)
    return out


def build_split(plans: list[VideoPlan], *, dim: int, crops: int, seed: int, device="cpu", preset: str = "ucf",
                frame_scale: int = 1, premises: Premises = PREMISES, dtype=torch.bfloat16):
    """A `cupl.data.split.Split` of the planned videos, features made on `device` ([N, crops,
    dim] in `dtype`); test videos (plan.split == "test") carry their frame labels.

    preset: whose classes index the event directions and whose frame rate times the drift;
    frame_scale: the plans' real frames per frame (1 for the `quick` and `full` profiles).
    Event amplitudes are drawn on the CPU from `seed`, features on the device from `seed`.
    """
    if not plans:
        raise ValueError("build_split: no videos")
    test = [p.split == "test" for p in plans]
    if any(test) and not all(test):
        raise ValueError("build_split: the plans mix training and test videos")
    reference = load_reference(preset)
    num_frames, event_video, event_start, event_end = plan_events(plans, device)
    g = torch.Generator().manual_seed(seed)
    amplitude = premises.event_amplitude_median * torch.exp(
        premises.event_amplitude_log_std * torch.randn(len(event_video), generator=g))
    strength = clip_event_strength(num_frames, event_video, event_start, event_end, amplitude.to(device))
    lengths = -(-num_frames // FRAMES_PER_CLIP)
    classes = torch.tensor([reference.categories.index(p.category) if p.label else 0 for p in plans], device=device)
    features = synthesize(lengths, classes, strength, num_classes=len(reference.categories), dim=dim, crops=crops,
                          seed=seed, premises=premises, frame_s=frame_scale / reference.fps, dtype=dtype)
    return Split(features=features, offsets=torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]),
                 labels=torch.tensor([p.label for p in plans], device=device),
                 names=[p.name for p in plans], categories=[p.category for p in plans], num_frames=num_frames,
                 frame_labels=[frame_mask(p.events, p.num_frames, p.name)[0] for p in plans] if all(test) else None,
                 frames_per_clip=FRAMES_PER_CLIP)
