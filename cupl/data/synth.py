"""The embedded benchmark: synthetic clip features on the real structure of the paper's benchmarks.

Real I3D features cannot ship, so the book runs on features generated here. What is real
and what is synthetic (book/data.md has the full account):

- real (presets ``ucf``, ``xd``, ``tad``: UCF-Crime, XD-Violence, TAD; `cupl.data.reference`):
  every video's name, class and frame count, the test videos' annotated intervals, the
  training class mix;
- synthetic: every feature value, the anomalous events of training videos (real training
  videos are unannotated) and, for ``xd`` whose files do not publish them, the training
  lengths (drawn from the real test lengths of the same label).

A video is a trajectory in a small latent space, lifted to D channels by one fixed random
nonlinear map (softplus of a random linear lift, per-channel gains) so that features are
non-negative and heavy-tailed like pooled post-ReLU I3D activations:

    z_t   = scene + drift(t) + noise_t + sum_e a_e r_e(t) d_{class(e)} + sum_h a_h r_h(t) d_hard
    x_t,c = g * softplus((z_t + eps_{t,c}) W - theta)            [T, crops, D]

with r(t) a trapezoidal envelope (ramping in and out) averaged over each clip's frames.
Clips have 16 frames and T = ceil(num_frames / 16), as for the RTFM I3D features.
Every parameter lives in `Premises` and is documented with its reason in book/data.md;
all were fixed from the premises before any experiment was run.

Determinism: each video draws from its own PCG64 streams seeded by (seed, preset, split,
position in the real list), so the same preset, profile and seed give byte-identical
arrays in any streaming order (on the same numpy/BLAS build), the first k videos of a
`max_videos=k` run are those of the complete bank, and a video kept by `quick` has the
events it has at `full` (same frame_scale).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from cupl.data.reference import RealVideo, Reference, load_reference

GENERATOR_VERSION = "2"
FRAMES_PER_CLIP = 16
SPLITS = ("train", "test")


@dataclass(frozen=True)
class SynthProfile:
    """Sizes of a synthetic bank.

    feature_dim: D of the rgb features.
    crops:       crops per clip (a preset may override it).
    train_every, test_every: keep a 1/k systematic sample of the real training / test list
                 (1: the whole list), which keeps each list's class mix and length
                 distribution.
    frame_scale: real frames per synthetic frame. Time is subsampled by this factor (a test
                 video keeps every frame_scale-th real frame and its label), so videos, events
                 and intervals shrink together and keep their proportions. 1 keeps the real
                 16-frame clips of real length, the paper's time regime.
    """

    name: str
    feature_dim: int
    crops: int
    train_every: int
    test_every: int
    frame_scale: int


# `quick` keeps real time (frame_scale 1) and pays for the real lengths with D, crops and
# videos: training costs in proportion to training clips, so 1 in 15 training videos;
# test videos are only scored, so half the test list. `smoke` (tests and CI) subsamples time.
PROFILES = {
    "smoke": SynthProfile("smoke", feature_dim=64, crops=2, train_every=40, test_every=10, frame_scale=16),
    "quick": SynthProfile("quick", feature_dim=64, crops=1, train_every=15, test_every=2, frame_scale=1),
    "full": SynthProfile("full", feature_dim=2048, crops=10, train_every=1, test_every=1, frame_scale=1),
}


@dataclass(frozen=True)
class SynthPreset:
    """What a benchmark looks like beyond its real structure (`cupl.data.reference`).

    crops:     overrides the profile's crop count (XD-Violence features have 5 crops).
    audio_dim: dimension of a correlated audio stream [T, 1, audio_dim]; 0 = none.
    """

    name: str
    crops: int | None = None
    audio_dim: int = 0


PRESETS = {
    "ucf": SynthPreset("ucf"),
    "xd": SynthPreset("xd", crops=5, audio_dim=128),
    "tad": SynthPreset("tad"),
}
PRESET_CODES = {name: code for code, name in enumerate(PRESETS)}


@dataclass(frozen=True)
class Premises:
    """The generator's parameters, one per premise (reasons in book/data.md). Latent units:
    the scene offset has standard deviation 1 per latent dimension."""

    latent_dim: int = 32
    # videos differ by scene; a scene changes slowly; clips jitter; crops barely differ
    scene_std: float = 1.0
    drift_std: float = 0.5
    drift_components: int = 4
    drift_period_s: tuple[float, float] = (20.0, 200.0)
    clip_noise_std: float = 0.35
    crop_noise_std: float = 0.1
    # anomalous events: 1-3 per abnormal training video, uneven in strength and length
    events_per_video_p: tuple[float, float, float] = (0.5, 0.3, 0.2)
    # least gap between consecutive events of a video, in units of its mean event length
    min_event_gap: float = 0.0
    max_anomalous_fraction: float = 0.9
    shared_anomaly_weight: float = 0.6
    event_amplitude_median: float = 6.0
    event_amplitude_log_std: float = 0.6
    ramp_fraction: tuple[float, float] = (0.05, 0.2)
    # hard-normal moments: rare, short, unusual but not anomalous
    hard_normal_per_minute: float = 0.2
    hard_normal_s: tuple[float, float] = (2.0, 10.0)
    hard_normal_amplitude_median: float = 3.0
    hard_normal_amplitude_log_std: float = 0.4
    length_jitter: tuple[float, float] = (0.8, 1.25)
    # the fixed nonlinear map
    channel_gain_log_std: float = 0.5
    threshold_mean: float = 1.0
    threshold_std: float = 0.5
    # audio (xd preset)
    audio_latent_dim: int = 16
    audio_coupling: float = 0.7
    audio_event_gain: tuple[float, float] = (0.2, 1.5)


PREMISES = Premises()

# The benchmark with one premise moved at a time, for asking when the paper's claims hold
# (book chapter 10). Levels were fixed from the premises before any run: one event or three
# well-separated ones instead of the mix; events at half or twice the median strength; no
# hard-normal moments or four times as many.
PREMISE_VARIANTS: dict[str, dict] = {
    "default": {},
    "one_event": {"events_per_video_p": (1.0, 0.0, 0.0)},
    "three_spaced_events": {"events_per_video_p": (0.0, 0.0, 1.0), "min_event_gap": 1.0},
    "weak_events": {"event_amplitude_median": PREMISES.event_amplitude_median * 0.5},
    "strong_events": {"event_amplitude_median": PREMISES.event_amplitude_median * 2.0},
    "no_hard_normals": {"hard_normal_per_minute": 0.0},
    "many_hard_normals": {"hard_normal_per_minute": PREMISES.hard_normal_per_minute * 4.0},
}


def premises_of(variant: str = "default") -> Premises:
    """The `Premises` of a named variant (`PREMISE_VARIANTS`); ValueError naming the known ones."""
    if variant not in PREMISE_VARIANTS:
        raise ValueError(f"unknown premise variant {variant!r}; expected one of {sorted(PREMISE_VARIANTS)}")
    return replace(PREMISES, **PREMISE_VARIANTS[variant])


@dataclass(frozen=True)
class VideoPlan:
    """The structure of one synthetic video, before any feature is drawn.

    index:      position of the video in its real list (it seeds the video's streams).
    num_frames: frames of the synthetic video (real frames / frame_scale, rounded up).
    events:     anomalous intervals (start, end) in its frames, 0-based, end exclusive.
    """

    split: str
    index: int
    name: str
    label: int
    category: str
    num_frames: int
    events: tuple[tuple[int, int], ...] = ()

    @property
    def num_clips(self) -> int:
        return -(-self.num_frames // FRAMES_PER_CLIP)


def resolve(preset: str, profile: str, crops: int | None = None) -> tuple[SynthPreset, SynthProfile]:
    """The preset and profile of the given names; ValueError naming the allowed ones.
    crops: crops per clip instead of the preset's or profile's (None: theirs)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    if crops is None:
        return PRESETS[preset], PROFILES[profile]
    if isinstance(crops, bool) or not isinstance(crops, (int, np.integer)) or crops < 1:
        raise ValueError(f"crops must be a whole number >= 1, got {crops!r}")
    return replace(PRESETS[preset], crops=int(crops)), PROFILES[profile]


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class _Real:
    """What the generator borrows from a benchmark's real files (`cupl.data.reference`)."""

    reference: Reference
    test_lengths: dict[int, np.ndarray]   # label -> real test frame counts
    anomalous_fractions: np.ndarray       # per abnormal test video: share of its frames annotated


def _real(preset: str) -> _Real:
    reference = load_reference(preset)
    labels = np.array([v.label for v in reference.test])
    frames = np.array([v.num_frames for v in reference.test])
    fractions = np.array([sum(e - s for s, e in v.intervals) / v.num_frames
                          for v in reference.test if v.label and v.intervals])
    return _Real(reference, {0: frames[labels == 0], 1: frames[labels == 1]}, fractions)


def _every(videos: tuple, k: int) -> list[int]:
    """A 1/k systematic sample of a real list, as positions in the list's order: every k-th
    video (from the (k // 2)-th) of the list ordered by class and then length, so the sample
    keeps each class's share and, within a class, the length distribution."""
    order = sorted(range(len(videos)), key=lambda i: (videos[i].category, videos[i].num_frames or 0, i))
    return sorted(order[k // 2::k])


def _selection(split: str, profile: SynthProfile, real: _Real) -> list[tuple[int, RealVideo]]:
    """(position in the real list, video) of the split's videos kept by the profile."""
    videos = real.reference.train if split == "train" else real.reference.test
    return [(i, videos[i]) for i in _every(videos, profile.train_every if split == "train" else profile.test_every)]


def _streams(seed: int, preset: SynthPreset, split: str, index: int):
    """(plan rng, feature rng) of one video: independent PCG64 streams."""
    seq = np.random.SeedSequence([seed, PRESET_CODES[preset.name], SPLITS.index(split), index])
    return [np.random.Generator(np.random.PCG64(s)) for s in seq.spawn(2)]


def video_plan(preset="ucf", profile="quick", seed=0, *, max_videos=None,
               premise_variant: str = "default") -> Iterator[VideoPlan]:
    """The structure of every video of a synthetic bank, train then test, without features.

    Videos are the preset's real ones (`cupl.data.reference`), every `train_every`-th /
    `test_every`-th of the real lists: real names, classes, frame counts and test intervals
    (clipped to the video). Drawn: the anomalous events of training videos (real training
    videos are unannotated) and, where a dataset does not publish them (XD-Violence), the
    training lengths.
    max_videos: keep only the first max_videos of each split (a small check of `full`).
    premise_variant: a name of `PREMISE_VARIANTS` (the same videos, one premise moved).
    """
    preset_, profile_ = resolve(preset, profile)
    seed = _check_seed(seed)
    premises = premises_of(premise_variant)
    real = _real(preset)
    for split in SPLITS:
        for index, video in _selection(split, profile_, real)[:max_videos]:
            rng = _streams(seed, preset_, split, index)[0]
            yield _plan_video(split, index, video, profile_.frame_scale, real, rng, premises)


def _plan_video(split: str, index: int, video: RealVideo, scale: int, real: _Real, rng,
                premises: Premises) -> VideoPlan:
    real_frames = video.num_frames
    if real_frames is None:
        real_frames = _draw_length(rng, real.test_lengths[video.label], premises)
    num_frames = -(-real_frames // scale)
    if not video.label:
        events = ()
    elif split == "test":
        events = _subsampled(video.intervals, real_frames, scale)
    else:
        events = _draw_events(rng, num_frames, real.anomalous_fractions, premises)
    return VideoPlan(split, index, video.name, video.label, video.category, num_frames, events)


def _draw_length(rng, lengths: np.ndarray, p: Premises) -> int:
    """An unpublished training length: a real test length of the same label, times a
    log-uniform jitter (`Premises.length_jitter`), so lengths follow the real distribution
    without copying it."""
    return max(1, round(rng.choice(lengths) * math.exp(rng.uniform(*np.log(p.length_jitter)))))


def _subsampled(intervals, real_frames: int, scale: int) -> tuple[tuple[int, int], ...]:
    """Real intervals [s, e) in the video keeping every scale-th frame: frame i is real frame
    i * scale, abnormal iff s <= i * scale < min(e, real_frames)."""
    out = []
    for s, e in intervals:
        start, end = -(-s // scale), -(-min(e, real_frames) // scale)
        if start < end:
            out.append((start, end))
    return tuple(out)


def _draw_events(rng, num_frames: int, fractions: np.ndarray, p: Premises):
    """1-3 non-overlapping events covering a real-like anomalous fraction of the video,
    split unevenly (Dirichlet(1) shares), placed uniformly at random, consecutive events at
    least `min_event_gap` mean event lengths (budget / count frames) apart. Where the gaps
    do not fit beside the drawn fraction, the fraction shrinks until they do."""
    count = 1 + rng.choice(3, p=p.events_per_video_p)
    fraction = min(rng.choice(fractions), p.max_anomalous_fraction)
    budget, gap = _fit_gaps(max(1, int(fraction * num_frames)), count, num_frames, p.min_event_gap)
    count = min(count, budget)
    lengths = 1 + rng.multinomial(budget - count, rng.dirichlet(np.ones(count)))
    cuts = np.sort(rng.integers(0, num_frames - budget - (count - 1) * gap + 1, size=count))
    starts = cuts + np.concatenate([[0], np.cumsum(lengths + gap)[:-1]])
    return tuple((int(s), int(s + n)) for s, n in zip(starts, lengths))


def _fit_gaps(budget: int, count: int, num_frames: int, min_gap: float) -> tuple[int, int]:
    """(anomalous frames, gap in frames): the largest budget <= `budget` whose `count` events
    and count - 1 gaps of ceil(min_gap * budget / count) frames fit in the video."""
    def gap(b):
        return math.ceil(min_gap * b / count) if count > 1 else 0

    while budget > 1 and budget + (count - 1) * gap(budget) > num_frames:
        budget -= 1
    return budget, gap(budget)


@dataclass(frozen=True)
class Regime:
    """Where a bank stands against segment pooling (S segments per video, Sec. 3.1).

    short_share:        share of the videos with fewer than S clips (pooling repeats clips
                        instead of averaging them).
    median_event_clips: median span of the training videos' anomalous events, in clips.
    """

    videos: int
    short_share: float
    events: int
    median_event_clips: float


def regime_stats(plans, num_segments: int = 32) -> Regime:
    """The `Regime` of an iterable of `VideoPlan`: every video counts for `short_share`, the
    events of training videos for `median_event_clips` ((end - start) / 16 per event)."""
    plans = list(plans)
    if not plans:
        raise ValueError("regime_stats: no videos")
    short = sum(p.num_clips < num_segments for p in plans)
    spans = [(e - s) / FRAMES_PER_CLIP for p in plans if p.split == "train" for s, e in p.events]
    return Regime(len(plans), short / len(plans), len(spans), float(np.median(spans)) if spans else math.nan)


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _World:
    """The fixed random quantities shared by all videos of a bank."""

    categories: tuple[str, ...]  # the anomaly classes, indexing event_dirs
    lift: np.ndarray          # [L, D]
    threshold: np.ndarray     # [D]
    gain: np.ndarray          # [D]
    event_dirs: np.ndarray    # [classes, L] unit
    hard_dir: np.ndarray      # [L] unit
    audio_coupling: np.ndarray | None = None  # [L, La] orthonormal columns
    audio_dirs: np.ndarray | None = None      # [classes, La] unit
    audio_gain: np.ndarray | None = None      # [classes]
    audio_lift: np.ndarray | None = None      # [La, audio_dim]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _world(preset: SynthPreset, profile: SynthProfile, seed: int, p: Premises) -> _World:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, PRESET_CODES[preset.name]])))
    categories = load_reference(preset.name).categories
    latent, dim, classes = p.latent_dim, profile.feature_dim, len(categories)
    lift = rng.normal(0.0, 1.0 / math.sqrt(latent), (latent, dim)).astype(np.float32)
    threshold = rng.normal(p.threshold_mean, p.threshold_std, dim).astype(np.float32)
    gain = np.exp(rng.normal(0.0, p.channel_gain_log_std, dim)).astype(np.float32)
    shared = _unit(rng.normal(size=latent))
    w = p.shared_anomaly_weight
    event_dirs = _unit(w * shared + math.sqrt(1 - w * w) * _unit(rng.normal(size=(classes, latent))))
    hard_dir = _unit(w * shared + math.sqrt(1 - w * w) * _unit(rng.normal(size=latent)))
    world = _World(categories, lift, threshold, gain, event_dirs, hard_dir)
    if not preset.audio_dim:
        return world
    la = p.audio_latent_dim
    coupling = np.linalg.qr(rng.normal(size=(latent, la)))[0]
    return _World(categories, lift, threshold, gain, event_dirs, hard_dir,
                  audio_coupling=coupling,
                  audio_dirs=_unit(rng.normal(size=(classes, la))),
                  audio_gain=rng.uniform(*p.audio_event_gain, classes),
                  audio_lift=rng.normal(0.0, 1.0 / math.sqrt(la), (la, preset.audio_dim)))


def _clip_means(per_frame: np.ndarray, num_frames: int) -> np.ndarray:
    """[n, F] per-frame values (F = 16 T, frames past num_frames ignored) -> [n, T] clip means."""
    n, padded = per_frame.shape
    clips = padded // FRAMES_PER_CLIP
    valid = np.arange(padded) < num_frames
    sums = (per_frame * valid).reshape(n, clips, FRAMES_PER_CLIP).sum(-1)
    return sums / valid.reshape(clips, FRAMES_PER_CLIP).sum(-1)


def _envelopes(intervals: np.ndarray, ramp_in: np.ndarray, ramp_out: np.ndarray,
               num_frames: int, num_clips: int) -> np.ndarray:
    """[n, T] clip-mean intensity of n trapezoidal envelopes: 0 outside [s, e), rising over
    ramp_in frames and falling over ramp_out frames, 1 in between."""
    f = np.arange(num_clips * FRAMES_PER_CLIP) + 0.5
    s, e = intervals[:, :1], intervals[:, 1:]
    env = np.clip(np.minimum((f - s) / ramp_in[:, None], (e - f) / ramp_out[:, None]), 0.0, 1.0)
    return _clip_means(env, num_frames)


def _oracle(events, num_frames: int, num_clips: int) -> np.ndarray:
    """[T] float32: fraction of each clip's frames inside an anomalous event."""
    f = np.arange(num_clips * FRAMES_PER_CLIP)
    inside = np.zeros(f.shape, dtype=bool)
    for s, e in events:
        inside |= (f >= s) & (f < e)
    return _clip_means(inside[None].astype(np.float64), num_frames)[0].astype(np.float32)


def _moments(rng, plan: VideoPlan, frame_s: float, p: Premises):
    """Anomalous events and hard-normal moments: intervals [n, 2], amplitudes, ramps.
    frame_s: real seconds per frame of the plan."""
    events = np.array(plan.events, dtype=np.float64).reshape(-1, 2)
    minutes = plan.num_frames * frame_s / 60.0
    count = rng.poisson(p.hard_normal_per_minute * minutes)
    length = np.maximum(1.0, np.exp(rng.uniform(*np.log(p.hard_normal_s), count)) / frame_s)
    start = rng.uniform(0.0, 1.0, count) * np.maximum(plan.num_frames - length, 0.0)
    hard = np.stack([start, start + length], axis=1)
    amp_e = p.event_amplitude_median * np.exp(p.event_amplitude_log_std * rng.standard_normal(len(events)))
    amp_h = p.hard_normal_amplitude_median * np.exp(p.hard_normal_amplitude_log_std * rng.standard_normal(count))
    spans = np.concatenate([events, hard])
    ramps = rng.uniform(*p.ramp_fraction, (2, len(spans))) * (spans[:, 1] - spans[:, 0])
    env = _envelopes(spans, ramps[0], ramps[1], plan.num_frames, plan.num_clips)
    return env[:len(events)], amp_e, env[len(events):], amp_h


def _latent(rng, plan: VideoPlan, frame_s: float, world: _World, class_index: int, p: Premises):
    """z [T, L] of one video and its event term (for the audio stream); frame_s: real
    seconds per frame of the plan."""
    T, L, K = plan.num_clips, p.latent_dim, p.drift_components
    seconds = (np.arange(T) * FRAMES_PER_CLIP + FRAMES_PER_CLIP / 2) * frame_s
    periods = np.exp(rng.uniform(*np.log(p.drift_period_s), K))
    phases = rng.uniform(0.0, 2 * np.pi, K)
    drift = np.cos(2 * np.pi * seconds[:, None] / periods + phases) @ rng.normal(
        0.0, p.drift_std * math.sqrt(2.0 / K), (K, L))
    scene = rng.normal(0.0, p.scene_std, L)
    noise = rng.normal(0.0, p.clip_noise_std, (T, L))
    env_e, amp_e, env_h, amp_h = _moments(rng, plan, frame_s, p)
    event_strength = env_e.T @ amp_e                      # [T]
    z = (scene + drift + noise + event_strength[:, None] * world.event_dirs[class_index]
         + (env_h.T @ amp_h)[:, None] * world.hard_dir)
    return z, event_strength


def _rgb(rng, z: np.ndarray, crops: int, world: _World, p: Premises, chunk=1024) -> np.ndarray:
    """[T, crops, D] float32: crops perturb the clip's latent, then the fixed map."""
    T, L = z.shape
    zc = (z[:, None, :] + rng.normal(0.0, p.crop_noise_std, (T, crops, L))).astype(np.float32)
    out = np.empty((T, crops, world.lift.shape[1]), dtype=np.float32)
    for t0 in range(0, T, chunk):   # bounds the temporaries of long videos
        # a stacked [t, crops, L] @ [L, D] product: a flattened 2-D one would wake BLAS
        # threads, which is many times slower on a busy machine
        h = zc[t0:t0 + chunk] @ world.lift - world.threshold
        out[t0:t0 + chunk] = world.gain * _softplus(h)
    return out


def _softplus(h: np.ndarray) -> np.ndarray:
    """log(1 + exp(h)) in place, exact to float32 for any h (np.logaddexp is ~20x slower)."""
    beyond = np.maximum(h - 30.0, 0.0)
    np.minimum(h, 30.0, out=h)
    np.exp(h, out=h)
    np.log1p(h, out=h)
    h += beyond
    return h


def _audio(rng, z: np.ndarray, event_strength: np.ndarray, world: _World, class_index: int,
           p: Premises) -> np.ndarray:
    """[T, 1, audio_dim] float32: part of the visual latent, the audio's own scene and noise,
    and the event heard with a class-specific loudness; a real-valued linear readout."""
    c = p.audio_coupling
    own = rng.normal(0.0, p.scene_std, p.audio_latent_dim) + rng.normal(
        0.0, p.clip_noise_std, (z.shape[0], p.audio_latent_dim))
    u = (c * (z @ world.audio_coupling) + math.sqrt(1 - c * c) * own
         + (world.audio_gain[class_index] * event_strength)[:, None] * world.audio_dirs[class_index])
    return (u[:, None, :] @ world.audio_lift).astype(np.float32)   # stacked, like `_rgb`


def _synthesise(plan: VideoPlan, rng, preset: SynthPreset, profile: SynthProfile, world: _World, p: Premises):
    from cupl.data.annotations import frame_mask
    from cupl.data.bank import VideoData

    class_index = world.categories.index(plan.category) if plan.label else 0
    frame_s = profile.frame_scale / load_reference(preset.name).fps
    z, event_strength = _latent(rng, plan, frame_s, world, class_index, p)
    features = {"rgb": _rgb(rng, z, preset.crops or profile.crops, world, p)}
    if preset.audio_dim:
        features["audio"] = _audio(rng, z, event_strength, world, class_index, p)
    test = plan.split == "test"
    return VideoData(
        name=plan.name, split=plan.split, label=plan.label, category=plan.category,
        num_frames=plan.num_frames, features=features,
        frame_labels=frame_mask(plan.events, plan.num_frames, plan.name)[0] if test else None,
        oracle_clip_labels=None if test else _oracle(plan.events, plan.num_frames, plan.num_clips),
    )


def generate(preset="ucf", profile="quick", seed=0, *, max_videos=None, premise_variant: str = "default",
             crops: int | None = None) -> Iterator:
    """Yield the bank's videos (`cupl.data.bank.VideoData`), train then test, one at a time.

    Features are float32 [T, crops, D] (and [T, 1, 128] audio for `xd`); test videos carry
    frame labels, training videos their oracle clip labels (fraction of each clip inside
    an event). max_videos keeps the first max_videos of each split. premise_variant: a name
    of `PREMISE_VARIANTS`; every variant has the default's videos, scenes and feature map.
    crops: crops per clip instead of the preset's or profile's (same videos, scenes and map).
    """
    preset_, profile_ = resolve(preset, profile, crops)
    seed = _check_seed(seed)
    premises = premises_of(premise_variant)
    world = _world(preset_, profile_, seed, premises)
    for plan in video_plan(preset, profile, seed, max_videos=max_videos, premise_variant=premise_variant):
        rng = _streams(seed, preset_, plan.split, plan.index)[1]
        yield _synthesise(plan, rng, preset_, profile_, world, premises)


def bank_attrs(preset="ucf", profile="quick", seed=0, premise_variant: str = "default",
               crops: int | None = None) -> dict:
    """The dataset-level attributes of a synthetic bank; a premise variant other than the
    default is named in `source` and `premise_variant`, a crop count given in `source`."""
    preset_, profile_ = resolve(preset, profile, crops)
    variant = {} if premise_variant == "default" else {"premise_variant": premise_variant}
    moved = f", premises {premise_variant}" if variant else ""
    moved += f", {crops} crops" if crops is not None else ""
    return dict(
        source=f"synthetic {preset}/{profile} seed {seed}{moved} (cupl.data.synth {GENERATOR_VERSION})",
        feature_kind="synthetic I3D-like",
        frames_per_clip=FRAMES_PER_CLIP,
        crops=preset_.crops or profile_.crops,
        modalities=["rgb", "audio"] if preset_.audio_dim else ["rgb"],
        preset=preset, profile=profile, seed=int(seed), generator_version=GENERATOR_VERSION,
        frame_scale=profile_.frame_scale,
        oracle="fraction of each clip's frames inside an anomalous event",
        premises=asdict(premises_of(premise_variant)),
        **variant,
    )


def write_synthetic(path, preset="ucf", profile="quick", seed=0, progress=True, *,
                    max_videos=None, dtype="float16", overwrite: bool = False,
                    premise_variant: str = "default", crops: int | None = None) -> Path:
    """Generate a synthetic bank (of `premise_variant`, `PREMISE_VARIANTS`; `crops` per clip,
    None: the preset's or profile's) and write it to `path` atomically, video by video; an
    existing `path` is replaced only with `overwrite`."""
    from cupl.data.bank import write_bank

    preset_, profile_ = resolve(preset, profile, crops)
    premises_of(premise_variant)  # an unknown variant is named before any work
    real = _real(preset)
    total = sum(len(_selection(s, profile_, real)[:max_videos]) for s in SPLITS)
    return write_bank(path, generate(preset, profile, seed, max_videos=max_videos, premise_variant=premise_variant,
                                     crops=crops),
                      attrs=bank_attrs(preset, profile, seed, premise_variant, crops), dtype=dtype,
                      progress=progress, total=total, overwrite=overwrite)
