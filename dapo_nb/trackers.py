"""Experiment trackers: each step's metrics and the run's config also go to TensorBoard, W&B or Trackio.

    dapo-nb train train.report_to=tensorboard              # runs/<run>/tensorboard;  tensorboard --logdir runs
    dapo-nb train train.report_to=[tensorboard, wandb]     # several at once (TRL's names)
    WANDB_MODE=offline dapo-nb train train.report_to=wandb # no account, no network; `wandb sync` uploads later

`train.report_to` is `none` by default. backend=dapo_nb logs through `Trackers` (Trainer opens them at start, logs
every metrics.jsonl line, closes them when train() returns); backend=trl passes the same names to TRL's
`report_to` (`trl_report_kwargs`, `prepare_trl_trackers`) and adjusts TRL's callbacks so that fresh and resumed
runs behave as below (`adapt_trl_callbacks`).

What goes where, step = the `step` of metrics.jsonl:
  numbers (every other key of the line)  -> TensorBoard scalars, W&B / Trackio metrics, at that step
  strings (`scalarizer`), when they change -> TensorBoard text, W&B run config, Trackio metrics
  the resolved config, once a run        -> TensorBoard text `config` (YAML) and HParams, W&B / Trackio run config

A fresh run (starting at step 0) puts an earlier run's TensorBoard folder aside (`tensorboard.before-<time>`, as
runs.py does with metrics.jsonl) and starts new W&B / Trackio runs. A resumed run continues them: TensorBoard writes
to the same folder with `purge_step` = the resumed step + 1, so points of later steps that a crash left behind are
dropped; W&B resumes the run id kept in `runs/<run>/trackers.json`; Trackio resumes the newest run of the same name
(a fresh run has started a new one of that name). backend=trl does the same at TRL's optimizer steps.
W&B files go to runs/<run>/wandb unless WANDB_DIR says otherwise; Trackio keeps its database in $TRACKIO_DIR
(default ~/.cache/huggingface/trackio). The libraries are optional: a missing one fails before the model loads,
naming the pip command and the config key.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from .config import Config, ConfigError, to_dict, to_yaml

MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}  # report_to name -> module to import
INSTALL_ALL = "pip install 'dapo-nb[trackers]'"
STATE_FILE = "trackers.json"  # in the run's output folder: the W&B run id that a resumed run continues


def enabled(cfg: Config) -> list[str]:
    """The trackers `train.report_to` names (`none` -> [])."""
    return [name for name in cfg.train.report_to if name != "none"]


def check_installed(cfg: Config) -> None:
    """ConfigError naming the pip command and the key when a requested tracker's package is not installed."""
    for name in enabled(cfg):
        module = MODULES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"train.report_to={name} needs the `{module}` package, which is not installed: "
                              f"pip install {module}  (or {INSTALL_ALL} for all trackers); or remove {name} from "
                              "train.report_to")


def tensorboard_dir(cfg: Config) -> Path:
    """runs/<run_name>/tensorboard (or <train.output_dir>/tensorboard)."""
    return cfg.output_dir / "tensorboard"


def split_metrics(metrics: dict) -> tuple[int, dict[str, float], dict[str, str]]:
    """(step, numbers, strings) of one metrics line; `step` itself, None and other values are left out."""
    numbers, texts = {}, {}
    for key, value in metrics.items():
        if key == "step":
            continue
        if isinstance(value, (bool, int, float)):
            numbers[key] = float(value)
        elif isinstance(value, str):
            texts[key] = value
    return int(metrics["step"]), numbers, texts


def flat_config(cfg: Config) -> dict[str, bool | int | float | str]:
    """The config as dotted keys with scalar values (lists and None as text), for TensorBoard's HParams."""
    flat: dict = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (bool, int, float, str)):
                flat[f"{prefix}{key}"] = value
            else:
                flat[f"{prefix}{key}"] = str(value)

    walk(to_dict(cfg), "")
    return flat


def _archive(path: Path) -> None:
    if path.exists():
        moved = path.rename(path.with_name(f"{path.name}.before-{time.strftime('%Y%m%d-%H%M%S')}"))
        print(f"{path}: an earlier run's tracker logs were kept as {moved.name}")


def _read_state(cfg: Config) -> dict:
    path = cfg.output_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(cfg: Config, state: dict) -> None:
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")


def wandb_run_id(cfg: Config, fresh: bool) -> str:
    """The W&B run id of this run: a new one for a fresh run (saved in trackers.json), the saved one when resumed."""
    state = _read_state(cfg)
    if fresh or not state.get("wandb_run_id"):
        import uuid

        state["wandb_run_id"] = uuid.uuid4().hex[:12]
        _write_state(cfg, state)
    return state["wandb_run_id"]


# ----------------------------------------------------------------------------
# The trackers of backend=dapo_nb


class _TensorBoard:
    def __init__(self, cfg: Config, start_step: int, fresh: bool):
        from torch.utils.tensorboard import SummaryWriter

        folder = tensorboard_dir(cfg)
        if fresh:
            _archive(folder)
        # purge_step: a reader drops the points of steps >= it written before (a crash after the checkpoint)
        self.writer = SummaryWriter(str(folder), purge_step=start_step + 1 if start_step > 0 else None)
        self.writer.add_text("config", "    " + to_yaml(cfg).replace("\n", "\n    "), global_step=start_step)
        if fresh:
            from torch.utils.tensorboard.summary import hparams

            for summary in hparams(flat_config(cfg), {"reward": 0.0, "loss": 0.0}):
                self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def log(self, step: int, numbers: dict, texts: dict) -> None:
        for key, value in numbers.items():
            self.writer.add_scalar(key, value, global_step=step)
        for key, value in texts.items():
            self.writer.add_text(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, cfg: Config, start_step: int, fresh: bool):
        import wandb

        kwargs = dict(project=cfg.train.tracker_project, name=cfg.train.run_name, id=wandb_run_id(cfg, fresh),
                      resume="allow", config=to_dict(cfg), reinit="create_new")
        if not os.environ.get("WANDB_DIR"):
            cfg.output_dir.mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = str(cfg.output_dir)
        try:
            self.run = wandb.init(**kwargs)
        except Exception as err:  # no login / no network: say how to log without them
            raise ConfigError(f"train.report_to=wandb: wandb.init failed ({type(err).__name__}: {err}). Log in with "
                              "`wandb login`, or set WANDB_MODE=offline to log locally (`wandb sync` uploads later), "
                              "or remove wandb from train.report_to") from err

    def log(self, step: int, numbers: dict, texts: dict) -> None:
        if texts:
            self.run.config.update(texts, allow_val_change=True)
        self.run.log(numbers, step=step)

    def close(self) -> None:
        self.run.finish()


class _Trackio:
    def __init__(self, cfg: Config, start_step: int, fresh: bool):
        import trackio

        self.run = trackio.init(project=cfg.train.tracker_project, name=cfg.train.run_name, config=to_dict(cfg),
                                resume="never" if fresh else "allow", embed=False)

    def log(self, step: int, numbers: dict, texts: dict) -> None:
        self.run.log({**numbers, **texts}, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "trackio": _Trackio}


class Trackers:
    """The trackers of `train.report_to` for one run of our trainer.

    `Trackers(cfg)` only checks that the packages are installed; `open(start_step)` starts them (0: a fresh run,
    N: resumed from checkpoint N); `log(metrics)` sends one metrics.jsonl line (and reopens them, continuing, after
    `close()`). With `report_to=none` every call does nothing."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.names = enabled(cfg)
        check_installed(cfg)
        self.active: list = []
        self.opened = False  # once opened, a later open() continues the same tracker runs
        self.texts: dict[str, str] = {}  # the last value sent of each string metric

    def open(self, start_step: int = 0) -> Trackers:
        if self.active or not self.names:
            return self
        fresh = start_step == 0 and not self.opened
        try:
            for name in self.names:
                self.active.append(BACKENDS[name](self.cfg, start_step, fresh))
        except BaseException:
            self.close()
            raise
        self.opened = True
        return self

    def log(self, metrics: dict) -> None:
        if not self.names:
            return
        step, numbers, texts = split_metrics(metrics)
        if not self.active:
            self.open(step - 1)
        changed = {k: v for k, v in texts.items() if self.texts.get(k) != v}
        self.texts.update(changed)
        for tracker in self.active:
            tracker.log(step, numbers, changed)

    def close(self) -> None:
        active, self.active = self.active, []
        for tracker in active:
            tracker.close()


# ----------------------------------------------------------------------------
# backend=trl: TRL's own callbacks do the logging


_ENV_SET: dict[str, str] = {}  # environment variables this module set (a user's own settings are left alone)


def _set_env(name: str, value: str) -> None:
    current = os.environ.get(name)
    if current is None or current == _ENV_SET.get(name):
        os.environ[name] = _ENV_SET[name] = value


def trl_report_kwargs(cfg: Config) -> dict:
    """GRPOConfig fields from train.report_to: TRL's `report_to`, the run name (W&B / Trackio) and Trackio's project."""
    check_installed(cfg)
    return {"report_to": enabled(cfg) or "none", "run_name": cfg.train.run_name, "project": cfg.train.tracker_project}


def prepare_trl_trackers(cfg: Config, resume_step: int) -> None:
    """Main process, before the GRPOTrainer is built: where TRL's TensorBoard and W&B callbacks write.

    `resume_step`: TRL's global step of the checkpoint the run continues (0: a fresh run). TensorBoard ->
    runs/<run>/tensorboard (TENSORBOARD_LOGGING_DIR; a fresh run puts an earlier run's folder aside). W&B -> project
    train.tracker_project, files under runs/<run> (unless WANDB_PROJECT / WANDB_DIR are set), and the run id of
    trackers.json (a new one when fresh) with WANDB_RESUME=allow, so a resumed run continues the same W&B run."""
    names = enabled(cfg)
    if "tensorboard" in names:
        if not resume_step:
            _archive(tensorboard_dir(cfg))
        _set_env("TENSORBOARD_LOGGING_DIR", str(tensorboard_dir(cfg)))
    if "wandb" in names:
        _set_env("WANDB_PROJECT", cfg.train.tracker_project)
        _set_env("WANDB_DIR", str(cfg.output_dir))
        _set_env("WANDB_RUN_ID", wandb_run_id(cfg, fresh=not resume_step))
        _set_env("WANDB_RESUME", "allow")


def adapt_trl_callbacks(trainer, cfg: Config, resume_step: int) -> None:
    """Make the tracker callbacks TRL made from report_to continue or start runs as backend=dapo_nb's trackers do.

    TensorBoard, resumed (main process): transformers' writer has no purge_step, so points a crash logged past the
    checkpoint would stay; the callback is given a writer with purge_step = resume_step + 1 (TRL logs at optimizer
    steps). Trackio, fresh: transformers always calls trackio.init(resume="allow"), continuing the newest run of the
    name, fresh runs included; there init starts a new run. A resumed run keeps "allow": the newest run of the name is
    the one its fresh start created."""
    from transformers.integrations import TensorBoardCallback, TrackioCallback

    for callback in trainer.callback_handler.callbacks:
        if type(callback) is TensorBoardCallback and resume_step and trainer.is_world_process_zero():
            from torch.utils.tensorboard import SummaryWriter

            callback.tb_writer = SummaryWriter(callback.logging_dir or str(tensorboard_dir(cfg)),
                                               purge_step=resume_step + 1)
        elif type(callback) is TrackioCallback and not resume_step:
            callback._trackio = _NewTrackioRun(callback._trackio)  # transformers' handle on the trackio module


class _NewTrackioRun:
    """The trackio module as transformers' TrackioCallback uses it, except that init() starts a new run."""

    def __init__(self, module):
        self._module = module

    def init(self, **kwargs):
        return self._module.init(**{**kwargs, "resume": "never"})

    def __getattr__(self, name):
        return getattr(self._module, name)
