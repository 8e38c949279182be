"""What the langfeedback experiments share: the trajectory pool, the utterances and their
MiniLM embeddings, and the latent spaces (one per encoder seed, trained once and cached).

The pool (a simulation: `world.py`'s scripted reach-lift controllers, or Meta-World's
perturbed scripted button press, `metaworld.py`) is split into train / val / test
trajectories; the utterances (`utterances.py`) into train / val / test / stress sentences.
Each encoder seed's latent space is one `core.units` unit (the units run in parallel): stage 1
with the language frozen, then stage 2 (the adapter; or, `stage2_mode="finetune"`, all of
MiniLM co-finetuned, whose embeddings of every split are saved), all saved in
`$ALIGNLAB_CACHE/langfeedback-latent/<key>/` (safetensors), keyed by everything they depend on.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from alignlab.core.cache import artifact_dir, cached_folder, content_key, is_complete
from alignlab.core.config import ConfigError, param
from alignlab.core.errors import AlignlabError
from alignlab.core.io import atomic_write_json, read_json
from alignlab.core.seeding import generator, int_seed
from alignlab.core.units import run_units
from alignlab.langfeedback import latent as L
from alignlab.langfeedback import metaworld as MW
from alignlab.langfeedback import world as W
from alignlab.langfeedback.utterances import METAWORLD_FEATURES, UtteranceSplits, build_splits

STAGE2_MODES = ("adapter", "finetune", "none")
#: Where the trajectories come from: our simulated reach-lift world (`world.py`, the stand-in
#: for the paper's robosuite pools) or Meta-World's button press (`metaworld.py`).
SOURCES = ("reach_lift", "metaworld")
#: stage 2's finetuned-MiniLM embeddings of every utterance split (stage2_mode finetune)
LANGUAGE_FILE = "language.safetensors"
LATENT_VERSION = 1  # bump when a change to the data or the training changes the weights


@dataclass
class DataConfig:
    """The trajectory pool and the utterances."""

    source: str = param(
        "reach_lift", choices=SOURCES, help="reach_lift: world.py; metaworld: button press"
    )
    world: W.WorldConfig = param(factory=W.WorldConfig, help="the simulated reach-lift world")
    metaworld: MW.MetaWorldConfig = param(
        factory=MW.MetaWorldConfig, help="Meta-World's perturbed button press (source metaworld)"
    )
    feature_set: str = param(
        "paper",
        choices=tuple(W.FEATURE_SETS),
        help="reach_lift only. paper: the paper's 5 features; rich: 10 (the richer world)",
    )
    n_train: int = param(1000, ge=2, help="training trajectories")
    n_val: int = param(100, ge=2, help="validation trajectories (the checkpoint rule)")
    n_test: int = param(200, ge=2, help="test trajectories (accuracy, improvement, metrics)")
    utterance_seed: int = param(0, ge=0, help="seed of the 80/10/10 utterance split")

    def validate(self) -> None:
        if self.source == "metaworld" and self.feature_set != "paper":
            raise ConfigError(
                "feature_set", "must be 'paper' with source 'metaworld' (its 3 features)"
            )


@dataclass
class LatentConfig:
    """The latent spaces: stage 1 (language frozen), stage 2 (co-finetuning)."""

    data: DataConfig = param(factory=DataConfig, help="the pool and the utterances")
    stage1: L.StageConfig = param(factory=L.StageConfig, help="stage 1: language frozen")
    stage2: L.StageConfig = param(
        factory=lambda: L.StageConfig(steps=1000, lr=1e-3),
        help="stage 2: the residual adapter trained with Φ",
    )
    stage2_mode: str = param(
        "adapter",
        choices=STAGE2_MODES,
        help="adapter: e + W2 relu(W1 e); finetune: all of MiniLM (the paper's); none: stage 1",
    )
    lm_lr: float = param(
        1e-4, gt=0, help="MiniLM's peak lr in stage 2 with stage2_mode finetune (the paper's)"
    )
    label_noise: str = param("none", choices=L.LABEL_NOISE, help="triplet labels")
    n_encoders: int = param(3, ge=1, help="encoder seeds (units in parallel)")

    def validate(self) -> None:
        if self.stage2_mode == "none" and self.stage2.steps:
            raise ConfigError("stage2.steps", "must be 0 when stage2_mode is 'none'")


def smoke_latent() -> LatentConfig:
    return LatentConfig(
        data=DataConfig(world=W.WorldConfig(horizon=12), n_train=40, n_val=12, n_test=16),
        stage1=L.StageConfig(steps=4, triplets=64, trajectories=16, eval_every=2),
        stage2=L.StageConfig(steps=3, lr=1e-3, triplets=64, trajectories=16, eval_every=2),
        n_encoders=2,
    )


def paper_latent() -> LatentConfig:
    """5,000 trajectories at T = 200, 20k steps per stage, 5 encoder seeds, and stage 2
    co-finetuning all of MiniLM at lr 1e-4 (Φ at 1e-3), the paper's design: for a GPU (a
    finetuning step takes about 6 s on one CPU core)."""
    return LatentConfig(
        data=DataConfig(world=W.WorldConfig(horizon=200), n_train=4000, n_val=300, n_test=700),
        stage1=L.StageConfig(steps=20_000, eval_every=500),
        stage2=L.StageConfig(steps=20_000, lr=1e-3, eval_every=500),
        stage2_mode="finetune",
        n_encoders=5,
    )


@dataclass
class Data:
    """The pool's splits (observations and features) and the utterances' embeddings."""

    obs: dict[str, np.ndarray]  # split -> (n, T, obs_dim) float32
    feats: dict[str, np.ndarray]  # split -> (n, K) float64, K = len(features)
    emb: dict[str, np.ndarray]  # utterance split -> (u, 384) float32
    cls: dict[str, np.ndarray]  # utterance split -> (u,) class index (2k + (direction < 0))
    sentences: dict[str, list[str]]
    utterances: UtteranceSplits
    features: tuple[str, ...]  # the names of the K features


_MEMO: dict[str, Data] = {}


def load_data(dc: DataConfig, seed: int) -> Data:
    """The pool generated from (run seed, 'langfeedback-world') and the embedded utterances
    (MiniLM, cached), once per process."""
    from alignlab.langfeedback.minilm import embed

    key = content_key({"data": asdict(dc), "seed": seed})
    if key in _MEMO:
        return _MEMO[key]
    n = dc.n_train + dc.n_val + dc.n_test
    if dc.source == "metaworld":
        pool = MW.generate(n, int_seed(seed, "langfeedback-metaworld") % 2**32, dc.metaworld)
        if tuple(MW.FEATURES) != METAWORLD_FEATURES:  # the utterance classes follow this order
            raise AlignlabError(f"Meta-World features {MW.FEATURES} != {METAWORLD_FEATURES}")
        obs, feats, names = pool.obs, pool.feats, METAWORLD_FEATURES
    else:
        traj = W.generate(n, generator(seed, "langfeedback-world"), dc.world)
        obs, feats = traj.observations(), W.features(traj, dc.world, dc.feature_set)
        names = W.FEATURE_SETS[dc.feature_set]
    cut = {"train": slice(0, dc.n_train), "val": slice(dc.n_train, dc.n_train + dc.n_val)}
    cut["test"] = slice(dc.n_train + dc.n_val, n)
    utt = build_splits(dc.utterance_seed, names)
    emb, cls, sentences = {}, {}, {}
    everything = utt.sentences()
    table = dict(zip(everything, embed(everything)))
    for split in ("train", "val", "test", "stress"):
        pairs = utt.labelled(split)
        sentences[split] = [s for s, _ in pairs]
        emb[split] = np.stack([table[s] for s, _ in pairs]).astype(np.float32)
        cls[split] = np.array([utt.classes.index(c) for _, c in pairs])
    data = Data(
        obs={k: obs[v] for k, v in cut.items()},
        feats={k: feats[v] for k, v in cut.items()},
        emb=emb,
        cls=cls,
        sentences=sentences,
        utterances=utt,
        features=names,
    )
    _MEMO[key] = data
    return data


def data_hash(d: Data) -> str:
    """sha256 of what training reads: the train and val observations, features, utterance
    embeddings and classes (so new sentences, another MiniLM or a changed world are new
    latent spaces, never stale ones)."""
    h = hashlib.sha256()
    for split in ("train", "val"):
        for a in (d.obs[split], d.feats[split], d.emb[split], d.cls[split]):
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def latent_key(lc: LatentConfig, seed: int, encoder: int, device: str = "cpu") -> str:
    """What one latent space's weights depend on: the data config and the data's bytes
    (`data_hash`), the stages, the label noise, the run seed and the encoder index, torch's
    version, the device type (when not the CPU) and the code version. The unit trains on one
    torch thread (`core.units`)."""
    spec = asdict(lc)
    spec.pop("n_encoders")
    # leave out what this latent space cannot depend on (the other source's settings, the
    # finetune lr of another stage-2 mode): changing them reuses it
    spec["data"].pop("metaworld" if lc.data.source == "reach_lift" else "world")
    if lc.stage2_mode != "finetune":
        spec.pop("lm_lr")
    d = load_data(lc.data, seed)
    extra = {}
    if lc.stage2_mode == "finetune":  # its saved embeddings cover every split's sentences
        extra["sentences"] = content_key({k: d.sentences[k] for k in sorted(d.sentences)})
    kind = torch.device(device).type
    return content_key(
        {
            "latent": spec,
            "data": data_hash(d),
            **extra,
            "seed": int(seed),
            "encoder": int(encoder),
            "torch": torch.__version__.split("+")[0],
            "v": LATENT_VERSION,
            **({} if kind == "cpu" else {"device": kind}),
        }
    )


def preflight(cfg) -> None:
    """The sentence encoder's packages (the `[lang]` extra) and, for a Meta-World pool, an
    interpreter with Meta-World, before anything is written."""
    from alignlab.langfeedback.minilm import check_installed

    check_installed()
    lc = _latent_of(cfg) if hasattr(cfg, "latent") or isinstance(cfg, LatentConfig) else None
    if lc is not None and lc.data.source == "metaworld":
        MW.check_available()


def _models(obs: np.ndarray, mode: str) -> tuple[L.TrajEncoder, L.Adapter | None]:
    enc = L.TrajEncoder(obs_dim=obs.shape[-1])
    enc.set_normaliser(obs)
    return enc, (L.Adapter() if mode == "adapter" else None)


def _train_unit(key: str, uctx) -> dict:
    lc: LatentConfig = _latent_of(uctx.config)
    i = int(key.split("-")[-1])
    folder = artifact_dir("langfeedback-latent", latent_key(lc, uctx.seed, i, uctx.device))
    total = lc.stage1.steps + lc.stage2.steps
    if is_complete(folder):
        uctx.advance(total)
        return read_json(folder / "info.json")
    d = load_data(lc.data, uctx.seed)
    torch.manual_seed(int(generator(uctx.seed, "langfeedback-init", i).integers(2**31)))
    enc, adapter = _models(d.obs["train"], lc.stage2_mode)
    rng = generator(uctx.seed, "langfeedback-triplets", i)
    val = (d.obs["val"], d.feats["val"], d.emb["val"], d.cls["val"])
    args = (d.obs["train"], d.feats["train"], d.emb["train"], d.cls["train"], val)
    step = lambda n, m: uctx.advance(1)  # noqa: E731
    dev = uctx.device
    s1 = L.train_stage(enc, None, *args, lc.stage1, rng, lc.label_noise, on_step=step, device=dev)
    stage1 = {k: v.clone() for k, v in enc.state_dict().items()}
    s2 = {"best_val_cos": s1["best_val_cos"], "val_cos": []}
    tables = None
    if adapter is not None and lc.stage2.steps:
        s2 = L.train_stage(
            enc, adapter, *args, lc.stage2, rng, lc.label_noise, on_step=step, device=dev
        )
    elif lc.stage2_mode == "finetune" and lc.stage2.steps:
        from alignlab.langfeedback.minilm import MiniLMEncoder

        lm = MiniLMEncoder()
        side = L.Finetuned(lm, d.sentences["train"], d.sentences["val"])
        s2 = L.train_stage(
            enc, None, *args, lc.stage2, rng, lc.label_noise, on_step=step, device=dev,
            language=side, lm_lr=lc.lm_lr,
        )  # fmt: skip
        # what the later experiments read: every split's sentences through the finetuned MiniLM
        lm.to(dev).eval()
        with torch.no_grad():
            tables = {
                f"emb.{k}": lm.bank(v).encode_all().float().cpu() for k, v in d.sentences.items()
            }
        lm.to("cpu")
    info = {"encoder": i, "stage1": s1, "stage2": s2}

    def build(tmp: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in stage1.items()}, str(tmp / "stage1.safetensors"))
        state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
        if adapter is not None:
            state.update({f"adapter.{k}": v for k, v in adapter.state_dict().items()})
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "stage2.safetensors"))
        if tables is not None:
            save_file({k: v.contiguous() for k, v in tables.items()}, str(tmp / LANGUAGE_FILE))
        atomic_write_json(tmp / "info.json", info)

    cached_folder("langfeedback-latent", folder.name, build)
    uctx.advance(max(0, total - uctx.progress_done))
    return info


def _latent_of(config) -> LatentConfig:
    return config if isinstance(config, LatentConfig) else config.latent


@dataclass
class Latent:
    """One encoder seed's latent space: Φ after stage 1 and after stage 2, and stage 2's
    language side: the adapter, or (finetune) every split's embeddings by the finetuned MiniLM."""

    stage1: L.TrajEncoder
    stage2: L.TrajEncoder
    adapter: L.Adapter | None
    info: dict
    tables: dict[str, np.ndarray] | None = None

    def embeddings(self, d: Data, split: str, stage: int = 2) -> np.ndarray:
        """The utterance embeddings of `split` as stage `stage`'s language side gives them."""
        if stage == 2 and self.tables is not None:
            if len(self.tables[split]) != len(d.cls[split]):
                raise AlignlabError(
                    f"the finetuned MiniLM's {split} embeddings have {len(self.tables[split])} "
                    f"rows for {len(d.cls[split])} utterances: a stale cache; rerun with --force"
                )
            return self.tables[split]
        return self.language(d.emb[split], stage)

    @torch.no_grad()
    def phi(self, obs: np.ndarray, stage: int = 2) -> np.ndarray:
        enc = self.stage2 if stage == 2 else self.stage1
        return enc.eval()(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    @torch.no_grad()
    def language(self, emb: np.ndarray, stage: int = 2) -> np.ndarray:
        if stage == 2 and self.tables is not None:
            raise AlignlabError("a finetuned MiniLM's embeddings come by split: use embeddings()")
        e = torch.as_tensor(emb, dtype=torch.float32)
        if stage == 2 and self.adapter is not None:
            e = self.adapter.eval()(e)
        return e.numpy()


def get_latents(ctx, lc: LatentConfig) -> tuple[Data, list[Latent]]:
    """The data and every encoder seed's latent space, training (one `run_units` call) what is
    not cached yet."""
    from safetensors.torch import load_file

    d = load_data(lc.data, ctx.seed)  # once, before the workers fork
    keys = [f"encoder-{i}" for i in range(lc.n_encoders)]
    run_units(ctx, keys, _train_unit, size=lc.stage1.steps + lc.stage2.steps, description="latent")
    out = []
    for i in range(lc.n_encoders):
        folder = artifact_dir("langfeedback-latent", latent_key(lc, ctx.seed, i, ctx.device))
        if not is_complete(folder):
            raise AlignlabError(
                f"this run recorded encoder {i} as trained, but {folder} is no longer in the "
                f"cache (ALIGNLAB_CACHE moved or cleaned?); rerun with --force to train it again"
            )
        s1, _ = _models(d.obs["train"], "none")
        s1.load_state_dict(load_file(str(folder / "stage1.safetensors")))
        s2, adapter = _models(d.obs["train"], lc.stage2_mode)
        state = load_file(str(folder / "stage2.safetensors"))
        s2.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        if adapter is not None:
            adapter.load_state_dict(
                {k[8:]: v for k, v in state.items() if k.startswith("adapter.")}
            )
        tables = None
        if lc.stage2_mode == "finetune" and lc.stage2.steps:
            if not (folder / LANGUAGE_FILE).exists():
                raise AlignlabError(f"{folder} has no {LANGUAGE_FILE}; rerun with --force")
            t = load_file(str(folder / LANGUAGE_FILE))
            tables = {k[4:]: v.numpy() for k, v in t.items()}
        out.append(Latent(s1, s2, adapter, read_json(folder / "info.json"), tables))
    return d, out


def replace(cfg, **kw):
    return dataclasses.replace(cfg, **kw)
