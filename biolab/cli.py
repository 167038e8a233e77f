"""Hydra entry points with one-line errors: bad overrides and a launcher's missing plugin are caught
before Hydra starts; Hydra's own flags (--cfg job, -p data, --info, -m) pass through."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from biolab.errors import BiolabError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Hydra's flags (hydra/_internal/utils.py, get_args_parser) that take the next word as their value
VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun")  # fmt: skip
INFO_FLAGS = ("--info", "-i")  # its value is optional: one of INFO_TOPICS
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
# With these the config is not (only) conf/'s, or the words are not overrides: Hydra checks them.
FOREIGN_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                 "--experimental-rerun", "--shell-completion", "-sc")  # fmt: skip
SUBMITIT = "hydra_plugins.hydra_submitit_launcher"
# hydra/launcher options whose plugin comes with an extra: option -> (plugin module, extra)
LAUNCHER_PLUGINS = {"slurm": (SUBMITIT, "slurm"), "submitit_slurm": (SUBMITIT, "slurm"),
                    "submitit_local": (SUBMITIT, "slurm")}  # fmt: skip
SLURM_LAUNCHERS = ("slurm", "submitit_slurm")  # submitit refuses these without SLURM's srun
# Config sections read into a typed dataclass: a field of one may be left out of the presets (it
# keeps its default, and a stage hash of an older root stays the same), so an override of such a key
# must add it: ``++model.d_ff=0``. Imported only to word that error.
TYPED_SECTIONS = {
    "data": "biolab.data.dataset:DataConfig", "data.biod": "biolab.data.biod:BioDConfig",
    "data.llm": "biolab.data.llm_bios:LLMConfig",
    "model": "biolab.model:ModelConfig", "train": "biolab.train.config:TrainConfig",
    "finetune": "biolab.train.finetune:FinetuneConfig", "finetune.train": "biolab.train.config:TrainConfig",
    "probe": "biolab.probe.probes:ProbeConfig", "probe.linear": "biolab.probe.linear:LinearProbeConfig",
    "capacity": "biolab.eval.capacity:CapacityConfig",
    "memorization": "biolab.eval.memorization:MemorizationConfig",
    "tokenizer": "biolab.data.tokens:TokenizerConfig",
}  # fmt: skip


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """group -> sorted option names, from the folders of ``conf/``."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml") if not p.stem.startswith("_"))
        for d in sorted(conf_dir.iterdir())
        if d.is_dir() and d.name != "hydra"
    }


def compose(config_name: str, overrides: list[str] = (), conf_dir: Path = CONF_DIR, hydra: bool = False):
    """The composed config, as a script would see it (tests use this too)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra)


def used_groups(config_name: str, conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """The config groups ``config_name`` composes, with their options."""
    choices = compose(config_name, conf_dir=conf_dir, hydra=True).hydra.runtime.choices
    return {g: opts for g, opts in config_groups(conf_dir).items() if g in choices}


def check_overrides(
    config_name: str, args: list[str], conf_dir: Path = CONF_DIR, renamed: dict[str, str] | None = None
) -> None:
    """Raise BiolabError naming the valid choices for an unknown preset or key; ``renamed`` maps an
    old top-level key to its new name, for a one-line hint instead of a bare "unknown key"."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import DictConfig, OmegaConf

    args = override_args(args)
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception as err:  # hydra's parse errors are multi-line
        raise BiolabError(f"cannot parse overrides {args}: {str(err).splitlines()[0]}") from None
    for o in parsed:
        old, _, rest = o.key_or_group.partition(".")
        if old in (renamed or {}):
            new = renamed[old] + (f".{rest}" if rest else "")
            raise BiolabError(f"{o.key_or_group}= is now {new}= (renamed); pass {new}=...")
    groups = used_groups(config_name, conf_dir)
    chosen = []
    for o in parsed:
        key = o.key_or_group
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        if key in groups:
            for v in values:
                if str(v) not in groups[key]:
                    raise BiolabError(f"unknown {key} preset {v!r}; choose from: {', '.join(groups[key])}")
            chosen.append(f"{key}={values[0]}")
    base = compose(config_name, chosen, conf_dir)
    for o in parsed:
        key = o.key_or_group
        added = o.is_add() or o.is_force_add() or o.is_delete()  # +key, ++key, ~key: Hydra's to judge
        if key in groups or key.startswith(("hydra.", "hydra/")) or added:
            continue
        parent, _, last = key.rpartition(".")
        node = OmegaConf.select(base, parent, throw_on_missing=False) if parent else base
        if not isinstance(node, DictConfig):
            raise BiolabError(
                f"unknown key {key!r}: {config_name} has no {parent} section{_near(base, parent)}"
            )
        keys = list(node.keys())
        if last in keys:  # `in node` would be False for a mandatory (???) key
            continue
        typed = typed_fields(parent)
        if last in typed:
            raise BiolabError(f"{key} is not in the preset (it keeps its default): add it with ++{key}=...")
        where = f"under {parent}" if parent else "at top level"
        addable = [f for f in typed if f not in keys]
        more = f"; with ++: {', '.join(addable)}" if addable else ""
        raise BiolabError(f"unknown key {key!r}; valid keys {where}: {', '.join(keys)}{more}")


def _near(cfg, parent: str) -> str:
    """Where an unknown section's keys might live: the top-level keys, or the nearest existing parent's."""
    from omegaconf import DictConfig, OmegaConf

    head, _, _ = parent.rpartition(".")
    node = OmegaConf.select(cfg, head, throw_on_missing=False) if head else cfg
    if not isinstance(node, DictConfig):
        return ""
    return f"; valid keys {f'under {head}' if head else 'at top level'}: {', '.join(node.keys())}"


def typed_fields(section: str) -> list[str]:
    """The field names of the dataclass a config section is read into ([] for an untyped one)."""
    import dataclasses

    target = TYPED_SECTIONS.get(section)
    if target is None:
        return []
    module, _, name = target.partition(":")
    return [f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))]


def override_args(args: list[str]) -> list[str]:
    """The overrides among a script's arguments: Hydra's flags and their values left out."""
    out = []
    i = 0
    while i < len(args):
        word = args[i]
        info_topic = word in INFO_FLAGS and i + 1 < len(args) and args[i + 1] in INFO_TOPICS
        takes_next = word in VALUE_FLAGS or info_topic
        if not word.startswith("-"):
            out.append(word)
        i += 2 if takes_next else 1
    return out


def foreign_config(args: list[str]) -> bool:
    """True when a flag brings a config (or words) of its own: biolab's check would not know them."""
    return any(a.split("=")[0] in FOREIGN_FLAGS for a in args)


def plugin_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its namespace package (hydra_plugins) is missing too
        return False


def check_launcher(args: list[str]) -> None:
    """A hydra/launcher whose plugin or scheduler is missing: one line before Hydra starts, instead
    of Hydra's multi-line "Could not load" or submitit's traceback."""
    for arg in override_args(args):
        key, _, option = arg.partition("=")
        if key != "hydra/launcher" or option not in LAUNCHER_PLUGINS:
            continue
        module, extra = LAUNCHER_PLUGINS[option]
        if not plugin_installed(module):
            raise BiolabError(f"{arg} needs the {extra} extra: pip install -e '.[{extra}]'")
        if option in SLURM_LAUNCHERS and shutil.which("srun") is None:
            raise BiolabError(
                f"{arg} submits SLURM jobs but finds no srun here: run it on the cluster "
                "(hydra/launcher=submitit_local runs the jobs as local processes)"
            )


def usage(config_name: str, doc: str, overrides: list[str] = (), conf_dir: Path = CONF_DIR) -> str:
    """``--help``: what the script does, the presets of each group, and the composed config."""
    from omegaconf import OmegaConf

    check_overrides(config_name, overrides, conf_dir)
    cfg = compose(config_name, overrides, conf_dir)
    used = used_groups(config_name, conf_dir).items()
    groups = "\n".join(f"  {g}: {', '.join(opts)}" for g, opts in used) or "  (none)"
    return (
        f"{doc.strip()}\n\nPresets (group=option):\n{groups}\n\n"
        f"Config (override any key with key=value):\n{OmegaConf.to_yaml(cfg)}"
        "Hydra's own flags: --hydra-help"
    )


def hydra_main(
    config_name: str, conf_dir: Path = CONF_DIR, renamed: dict[str, str] | None = None
) -> Callable:
    """Like ``hydra.main``, plus override checks and one-line exits on BiolabError; ``renamed``:
    old key -> new key, each answered with a one-line hint."""
    import hydra

    def decorate(fn: Callable) -> Callable:
        wrapped = hydra.main(config_path=str(conf_dir), config_name=config_name, version_base="1.3")(
            _one_line_errors(fn)
        )

        @functools.wraps(fn)
        def entry() -> None:
            args = sys.argv[1:]
            try:
                if "--help" in args or "-h" in args:
                    doc = inspect.cleandoc(fn.__doc__ or "")
                    print(usage(config_name, doc, override_args(args), conf_dir))
                    return
                check_launcher(args)
                if "--hydra-help" not in args and not foreign_config(args):
                    check_overrides(config_name, args, conf_dir, renamed)
            except BiolabError as err:
                _die(err)
            wrapped()

        return entry

    return decorate


def _one_line_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BiolabError as err:
            _die(err)

    return run


def _die(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
