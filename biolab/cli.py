"""Hydra entry points with one-line errors: bad overrides are caught before Hydra starts."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from biolab.errors import BiolabError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


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

    args = [a for a in args if not a.startswith("-")]
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
        if key in groups or key.startswith(("hydra.", "hydra/")) or o.is_add() or o.is_delete():
            continue
        parent, _, last = key.rpartition(".")
        node = OmegaConf.select(base, parent, throw_on_missing=False) if parent else base
        keys = list(node.keys()) if isinstance(node, DictConfig) else []
        if last not in keys:  # `in node` would be False for a mandatory (???) key
            where = f"under {parent}" if parent else "at top level"
            raise BiolabError(f"unknown key {key!r}; valid keys {where}: {', '.join(keys)}")


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
                    print(usage(config_name, doc, [a for a in args if "=" in a], conf_dir))
                    return
                if "--hydra-help" not in args:
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
