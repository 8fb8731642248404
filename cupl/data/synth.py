"""The embedded benchmark: synthetic clip features with UCF-Crime's structure and the paper's premises.

Real I3D features cannot ship, so the book runs on features generated here. What is real
and what is synthetic (book/data.md has the full account):

- real (preset ``ucf``): the test videos' names, classes, frame counts and annotated
  intervals; the training video names and class mix; the length distribution;
- synthetic: every feature value, the length of each training video (drawn from the real
  distribution) and its anomalous events (real training videos are unannotated).

A video is a trajectory in a small latent space, lifted to D channels by one fixed random
nonlinear map (softplus of a random linear lift, per-channel gains) so that features are
non-negative and heavy-tailed like pooled post-ReLU I3D activations:

    z_t   = scene + drift(t) + noise_t + sum_e a_e r_e(t) d_{class(e)} + sum_h a_h r_h(t) d_hard
    x_t,c = g * softplus((z_t + eps_{t,c}) W - theta)            [T, crops, D]

with r(t) a trapezoidal envelope (ramping in and out) averaged over each clip's frames.
Clips have 16 frames and T = ceil(num_frames / 16), as for the RTFM I3D features.
Every parameter lives in `Premises` and is documented with its reason in book/data.md;
all were fixed from the premises before any experiment was run.

Determinism: each video draws from its own PCG64 stream seeded by (seed, preset, split,
index), so the same preset, profile and seed give byte-identical arrays in any streaming
order (on the same numpy/BLAS build), and the first k videos of a `max_videos=k` run are
those of the complete bank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

GENERATOR_VERSION = "1"
FRAMES_PER_CLIP = 16
FPS = 30.0
SPLITS = ("train", "test")


@dataclass(frozen=True)
class SynthProfile:
    """Sizes of a synthetic bank.

    feature_dim: D of the rgb features.
    crops:       crops per clip (a preset may override it).
    num_train / num_test: videos per split before the preset's `video_fraction`; None takes
                 the whole real list (1,610 / 290). Subsets are evenly spaced along the real
                 lists, which keeps their class mix.
    frame_scale: real frames per synthetic frame. Time is subsampled by this factor (a test
                 video keeps every frame_scale-th real frame and its label), so videos, events
                 and intervals shrink together and keep their proportions.
    """

    name: str
    feature_dim: int
    crops: int
    num_train: int | None
    num_test: int | None
    frame_scale: int


PROFILES = {
    "smoke": SynthProfile("smoke", feature_dim=64, crops=2, num_train=40, num_test=30, frame_scale=16),
    "quick": SynthProfile("quick", feature_dim=256, crops=2, num_train=240, num_test=None, frame_scale=8),
    "full": SynthProfile("full", feature_dim=2048, crops=10, num_train=None, num_test=None, frame_scale=1),
}


@dataclass(frozen=True)
class SynthPreset:
    """What a benchmark looks like beyond its size.

    categories:  anomaly classes; each has its own event direction.
    crops:       overrides the profile's crop count (XD-Violence features have 5 crops).
    audio_dim:   dimension of a correlated audio stream [T, 1, audio_dim]; 0 = none.
    event_length_scale: multiplies the drawn anomalous fraction of an abnormal video.
    video_fraction: share of the profile's video counts.
    real_test:   test videos carry the real UCF-Crime names, classes and intervals; otherwise
                 they take the real test lengths and get drawn events and synthetic names.
    """

    name: str
    categories: tuple[str, ...]
    crops: int | None = None
    audio_dim: int = 0
    event_length_scale: float = 1.0
    video_fraction: float = 1.0
    real_test: bool = False


def _presets() -> dict[str, SynthPreset]:
    from cupl.data.annotations import XD_CLASSES
    from cupl.data.ucf import UCF_CLASSES

    xd = tuple(c for c in XD_CLASSES.values() if c != "Normal")
    tad = ("VehicleAccident", "IllegalTurn", "IllegalOccupation", "Retrograde",
           "PedestrianOnRoad", "RoadSpill", "Else")
    return {
        "ucf": SynthPreset("ucf", UCF_CLASSES, real_test=True),
        "xd": SynthPreset("xd", xd, crops=5, audio_dim=128),
        "tad": SynthPreset("tad", tad, event_length_scale=2.5, video_fraction=0.5),
    }


PRESETS = _presets()
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


@dataclass(frozen=True)
class VideoPlan:
    """The structure of one synthetic video, before any feature is drawn.

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


def resolve(preset: str, profile: str) -> tuple[SynthPreset, SynthProfile]:
    """The preset and profile of the given names; ValueError naming the allowed ones."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return PRESETS[preset], PROFILES[profile]


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class _Real:
    """What the generator borrows from the real UCF-Crime files."""

    train: list[tuple[str, int, str]]            # (name, label, category)
    test: list[dict]                             # load_ucf_test_annotations()
    lengths: dict[int, np.ndarray]               # label -> real test frame counts
    anomalous_fractions: np.ndarray              # per abnormal test video


def _real() -> _Real:
    from cupl.data.annotations import frame_mask
    from cupl.data.ucf import category_of, load_ucf_test_annotations, load_ucf_train_names

    test = load_ucf_test_annotations()
    train = [(n, int(category_of(n) != "Normal"), category_of(n)) for n in load_ucf_train_names()]
    labels = np.array([int(r["category"] != "Normal") for r in test])
    frames = np.array([r["num_frames"] for r in test])
    fractions = [frame_mask(r["intervals"], r["num_frames"], r["name"])[0].mean()
                 for r in test if r["category"] != "Normal"]
    return _Real(train, test, {0: frames[labels == 0], 1: frames[labels == 1]}, np.array(fractions))


def _evenly_spaced(items: list, n: int) -> list:
    n = min(n, len(items))
    return [items[i] for i in (np.arange(n) * len(items)) // n]


def _templates(split: str, preset: SynthPreset, profile: SynthProfile, real: _Real) -> list[dict]:
    """Per video of the split: name, label, category and, for test videos, the real frame
    count (and, with `real_test`, the real intervals)."""
    rows = real.train if split == "train" else real.test
    wanted = profile.num_train if split == "train" else profile.num_test
    count = max(1, round((len(rows) if wanted is None else wanted) * preset.video_fraction))
    out, abnormal = [], 0
    for k, row in enumerate(_evenly_spaced(rows, count)):
        if split == "train":
            name, label, category = row
            t = dict(name=name, label=label, category=category, num_frames=None, intervals=None)
        else:
            t = dict(name=row["name"], label=int(row["category"] != "Normal"), category=row["category"],
                     num_frames=row["num_frames"], intervals=row["intervals"])
        if not preset.real_test:
            t["intervals"] = None
            if t["label"]:
                t["category"] = preset.categories[abnormal % len(preset.categories)]
                abnormal += 1
            t["name"] = f"{preset.name}_{split}_{k:04d}_{t['category']}"
        out.append(t)
    return out


def _streams(seed: int, preset: SynthPreset, split: str, index: int):
    """(plan rng, feature rng) of one video: independent PCG64 streams."""
    seq = np.random.SeedSequence([seed, PRESET_CODES[preset.name], SPLITS.index(split), index])
    return [np.random.Generator(np.random.PCG64(s)) for s in seq.spawn(2)]


def video_plan(preset="ucf", profile="quick", seed=0, *, max_videos=None) -> Iterator[VideoPlan]:
    """The structure of every video of a synthetic bank, train then test, without features.

    max_videos: keep only the first max_videos of each split (a small check of `full`).
    """
    preset_, profile_ = resolve(preset, profile)
    seed = _check_seed(seed)
    real = _real()
    for split in SPLITS:
        for index, t in enumerate(_templates(split, preset_, profile_, real)[:max_videos]):
            rng = _streams(seed, preset_, split, index)[0]
            yield _plan_video(split, index, t, preset_, profile_, real, rng)


def _plan_video(split, index, t, preset, profile, real: _Real, rng) -> VideoPlan:
    scale = profile.frame_scale
    if t["num_frames"] is None:
        real_frames = rng.choice(real.lengths[t["label"]]) * math.exp(rng.uniform(*np.log(PREMISES.length_jitter)))
        num_frames = -(-max(1, round(real_frames)) // scale)
    else:
        num_frames = -(-t["num_frames"] // scale)
    if not t["label"]:
        events = ()
    elif t["intervals"] is not None:
        events = _subsampled(t["intervals"], t["num_frames"], scale)
    else:
        events = _draw_events(rng, num_frames, real.anomalous_fractions, preset.event_length_scale)
    return VideoPlan(split, index, t["name"], t["label"], t["category"], num_frames, events)


def _subsampled(intervals, real_frames: int, scale: int) -> tuple[tuple[int, int], ...]:
    """Real intervals [s, e) in the video keeping every scale-th frame: frame i is real frame
    i * scale, abnormal iff s <= i * scale < min(e, real_frames)."""
    out = []
    for s, e in intervals:
        start, end = -(-s // scale), -(-min(e, real_frames) // scale)
        if start < end:
            out.append((start, end))
    return tuple(out)


def _draw_events(rng, num_frames: int, fractions: np.ndarray, length_scale: float):
    """1-3 non-overlapping events covering a real-like anomalous fraction of the video,
    split unevenly (Dirichlet(1) shares), placed uniformly at random."""
    count = 1 + rng.choice(3, p=PREMISES.events_per_video_p)
    fraction = min(rng.choice(fractions) * length_scale, PREMISES.max_anomalous_fraction)
    budget = max(1, int(fraction * num_frames))
    count = min(count, budget)
    lengths = 1 + rng.multinomial(budget - count, rng.dirichlet(np.ones(count)))
    cuts = np.sort(rng.integers(0, num_frames - budget + 1, size=count))
    starts = cuts + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return tuple((int(s), int(s + n)) for s, n in zip(starts, lengths))


# --------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _World:
    """The fixed random quantities shared by all videos of a bank."""

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


def _world(preset: SynthPreset, profile: SynthProfile, seed: int) -> _World:
    p = PREMISES
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, PRESET_CODES[preset.name]])))
    latent, dim, classes = p.latent_dim, profile.feature_dim, len(preset.categories)
    lift = rng.normal(0.0, 1.0 / math.sqrt(latent), (latent, dim)).astype(np.float32)
    threshold = rng.normal(p.threshold_mean, p.threshold_std, dim).astype(np.float32)
    gain = np.exp(rng.normal(0.0, p.channel_gain_log_std, dim)).astype(np.float32)
    shared = _unit(rng.normal(size=latent))
    w = p.shared_anomaly_weight
    event_dirs = _unit(w * shared + math.sqrt(1 - w * w) * _unit(rng.normal(size=(classes, latent))))
    hard_dir = _unit(w * shared + math.sqrt(1 - w * w) * _unit(rng.normal(size=latent)))
    world = _World(lift, threshold, gain, event_dirs, hard_dir)
    if not preset.audio_dim:
        return world
    la = p.audio_latent_dim
    coupling = np.linalg.qr(rng.normal(size=(latent, la)))[0]
    return _World(lift, threshold, gain, event_dirs, hard_dir,
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


def _moments(rng, plan: VideoPlan, scale: int):
    """Anomalous events and hard-normal moments: intervals [n, 2], amplitudes, ramps."""
    p = PREMISES
    events = np.array(plan.events, dtype=np.float64).reshape(-1, 2)
    minutes = plan.num_frames * scale / FPS / 60.0
    count = rng.poisson(p.hard_normal_per_minute * minutes)
    length = np.maximum(1.0, np.exp(rng.uniform(*np.log(p.hard_normal_s), count)) * FPS / scale)
    start = rng.uniform(0.0, 1.0, count) * np.maximum(plan.num_frames - length, 0.0)
    hard = np.stack([start, start + length], axis=1)
    amp_e = p.event_amplitude_median * np.exp(p.event_amplitude_log_std * rng.standard_normal(len(events)))
    amp_h = p.hard_normal_amplitude_median * np.exp(p.hard_normal_amplitude_log_std * rng.standard_normal(count))
    spans = np.concatenate([events, hard])
    ramps = rng.uniform(*p.ramp_fraction, (2, len(spans))) * (spans[:, 1] - spans[:, 0])
    env = _envelopes(spans, ramps[0], ramps[1], plan.num_frames, plan.num_clips)
    return env[:len(events)], amp_e, env[len(events):], amp_h


def _latent(rng, plan: VideoPlan, scale: int, world: _World, class_index: int):
    """z [T, L] of one video and its event term (for the audio stream)."""
    p = PREMISES
    T, L, K = plan.num_clips, p.latent_dim, p.drift_components
    seconds = (np.arange(T) * FRAMES_PER_CLIP + FRAMES_PER_CLIP / 2) * scale / FPS
    periods = np.exp(rng.uniform(*np.log(p.drift_period_s), K))
    phases = rng.uniform(0.0, 2 * np.pi, K)
    drift = np.cos(2 * np.pi * seconds[:, None] / periods + phases) @ rng.normal(
        0.0, p.drift_std * math.sqrt(2.0 / K), (K, L))
    scene = rng.normal(0.0, p.scene_std, L)
    noise = rng.normal(0.0, p.clip_noise_std, (T, L))
    env_e, amp_e, env_h, amp_h = _moments(rng, plan, scale)
    event_strength = env_e.T @ amp_e                      # [T]
    z = (scene + drift + noise + event_strength[:, None] * world.event_dirs[class_index]
         + (env_h.T @ amp_h)[:, None] * world.hard_dir)
    return z, event_strength


def _rgb(rng, z: np.ndarray, crops: int, world: _World, chunk=1024) -> np.ndarray:
    """[T, crops, D] float32: crops perturb the clip's latent, then the fixed map."""
    T, L = z.shape
    zc = (z[:, None, :] + rng.normal(0.0, PREMISES.crop_noise_std, (T, crops, L))).astype(np.float32)
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


def _audio(rng, z: np.ndarray, event_strength: np.ndarray, world: _World, class_index: int) -> np.ndarray:
    """[T, 1, audio_dim] float32: part of the visual latent, the audio's own scene and noise,
    and the event heard with a class-specific loudness; a real-valued linear readout."""
    p = PREMISES
    c = p.audio_coupling
    own = rng.normal(0.0, p.scene_std, p.audio_latent_dim) + rng.normal(
        0.0, p.clip_noise_std, (z.shape[0], p.audio_latent_dim))
    u = (c * (z @ world.audio_coupling) + math.sqrt(1 - c * c) * own
         + (world.audio_gain[class_index] * event_strength)[:, None] * world.audio_dirs[class_index])
    return (u[:, None, :] @ world.audio_lift).astype(np.float32)   # stacked, like `_rgb`


def _synthesise(plan: VideoPlan, rng, preset: SynthPreset, profile: SynthProfile, world: _World):
    from cupl.data.annotations import frame_mask
    from cupl.data.bank import VideoData

    class_index = preset.categories.index(plan.category) if plan.label else 0
    z, event_strength = _latent(rng, plan, profile.frame_scale, world, class_index)
    features = {"rgb": _rgb(rng, z, preset.crops or profile.crops, world)}
    if preset.audio_dim:
        features["audio"] = _audio(rng, z, event_strength, world, class_index)
    test = plan.split == "test"
    return VideoData(
        name=plan.name, split=plan.split, label=plan.label, category=plan.category,
        num_frames=plan.num_frames, features=features,
        frame_labels=frame_mask(plan.events, plan.num_frames, plan.name)[0] if test else None,
        oracle_clip_labels=None if test else _oracle(plan.events, plan.num_frames, plan.num_clips),
    )


def generate(preset="ucf", profile="quick", seed=0, *, max_videos=None) -> Iterator:
    """Yield the bank's videos (`cupl.data.bank.VideoData`), train then test, one at a time.

    Features are float32 [T, crops, D] (and [T, 1, 128] audio for `xd`); test videos carry
    frame labels, training videos their oracle clip labels (fraction of each clip inside
    an event). max_videos keeps the first max_videos of each split.
    """
    preset_, profile_ = resolve(preset, profile)
    seed = _check_seed(seed)
    world = _world(preset_, profile_, seed)
    for plan in video_plan(preset, profile, seed, max_videos=max_videos):
        rng = _streams(seed, preset_, plan.split, plan.index)[1]
        yield _synthesise(plan, rng, preset_, profile_, world)


def bank_attrs(preset="ucf", profile="quick", seed=0) -> dict:
    """The dataset-level attributes of a synthetic bank."""
    preset_, profile_ = resolve(preset, profile)
    return dict(
        source=f"synthetic {preset}/{profile} seed {seed} (cupl.data.synth {GENERATOR_VERSION})",
        feature_kind="synthetic I3D-like",
        frames_per_clip=FRAMES_PER_CLIP,
        crops=preset_.crops or profile_.crops,
        modalities=["rgb", "audio"] if preset_.audio_dim else ["rgb"],
        preset=preset, profile=profile, seed=int(seed), generator_version=GENERATOR_VERSION,
        frame_scale=profile_.frame_scale,
        oracle="fraction of each clip's frames inside an anomalous event",
        premises=asdict(PREMISES),
    )


def write_synthetic(path, preset="ucf", profile="quick", seed=0, progress=True, *,
                    max_videos=None, dtype="float16", overwrite: bool = False) -> Path:
    """Generate a synthetic bank and write it to `path` atomically, video by video; an
    existing `path` is replaced only with `overwrite`."""
    from cupl.data.bank import write_bank

    preset_, profile_ = resolve(preset, profile)
    real = _real()
    total = sum(len(_templates(s, preset_, profile_, real)[:max_videos]) for s in SPLITS)
    return write_bank(path, generate(preset, profile, seed, max_videos=max_videos),
                      attrs=bank_attrs(preset, profile, seed), dtype=dtype,
                      progress=progress, total=total, overwrite=overwrite)
