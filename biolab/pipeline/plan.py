"""An experiment as runs of stages: from one composed per-dataset config, the stages of each
(dataset, finetune) combination, its probes, its memorization and its manipulation tasks, each a
``PlannedRun``: its manifest (biolab.stages.manifest.RunManifest) and the Stage objects to build.

Manipulation tasks (Part 3.2, paper section 6; ``manipulation`` in ``conf/run.yaml``):
``manipulation.tasks`` lists task names (or ``{task: NAME, <key>: value}`` for one task's own
n_train / n_test / hint_prob / seed / modes / qa_ratios), each trained in every mode:

- ``finetune``: the run's BIO-pretrained model finetuned on the task's P_train items (the finetune
  preset, with ``manipulation.finetune`` overrides); Part 3.2 Result 5 finds starting from the
  QA-finetuned model makes a minimal difference, so we start from the BIO-pretrained one.
- ``mixed``: a fresh model pretrained on BIO + the task's P_train items, one per ``qa_ratios``
  value (the paper's QAr 0.5 / 0.8), with the run's model and train presets.

A run is named after its dataset and the command-line overrides that shape it (``run_name``:
``bioS_single__finetune.train.lr=0.001``; the bare dataset name without any), so the jobs of a sweep
each file their own manifest; ``check_run_names`` stops two different runs under one name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from biolab.config import from_dict
from biolab.data.dataset import BIOD, CELEBRITY_KEYS
from biolab.data.manipulation import HINT_TASKS, TASKS, validate_task
from biolab.errors import ConfigError
from biolab.eval.capacity import CapacityConfig
from biolab.eval.memorization import MemorizationConfig
from biolab.eval.qa import EvalConfig
from biolab.model import MASKED_LM_ARCHS
from biolab.paper import PaperConfig
from biolab.pipeline.cache import Stage
from biolab.pipeline.claims import name_clash
from biolab.probe.probes import PROBE_KINDS
from biolab.stages import KINDS
from biolab.stages.capacity import CAPACITY
from biolab.stages.data import CORPUS, DATA
from biolab.stages.kind import is_volatile
from biolab.stages.manifest import PROBE_SLOT, TASK_RUNS, RunManifest, slot
from biolab.stages.memorization import MEMORIZATION
from biolab.stages.pretrain import PRETRAIN
from biolab.stages.probe import PROBE
from biolab.stages.qa import EVALUATE, FINETUNE
from biolab.stages.tasks import TASK_EVAL, TASK_FINETUNE, TASK_MIXED
from biolab.stages.tasks import TASKS as TASK_SET
from biolab.train.finetune import TARGETS, grid_points

QA_EVAL = ("finetune", "direct", "none")
MODES = ("finetune", "mixed")
TASK_KEYS = ("n_train", "n_test", "hint_prob", "seed")  # what a task set is: part of its label
TRAIN_KEYS = ("modes", "qa_ratios")  # how a task is trained, not what it is: not in its label
# Command-line keys that choose which runs, where or how they are built, not what a run is: left out
# of run names and of the manifests' ``overrides`` (scale has its own manifest field; probe= is
# replaced by each preset of ``probes``; replace_runs and strict say how to build, not what; people,
# models and exposures are swept into each run's variant, see ``sweep_variants``). Logging keys at any
# depth (progress, train.wandb) are left out too: biolab.stages.kind.VOLATILE.
UNNAMED = ("experiment", "scale", "data", "datasets", "root", "jobs", "report", "probe",
           "replace_runs", "strict", "verbose", "people", "models", "exposures")  # fmt: skip
NAME_LIMIT = 120  # a longer run name is cut and ends in a hash: file names stop at 255 bytes
UNSAFE = re.compile(r"[^A-Za-z0-9._,=+~-]")  # what a run name (a file name) does not hold


@dataclass(frozen=True)
class ManipulationConfig:
    """The ``manipulation`` section: which task sets each dataset gets and how they are trained."""

    tasks: list = field(default_factory=list)  # names, or {task: NAME, <key>: value} for its own settings
    n_train: int | None = None  # P_train items kept (people, pairs or queries; None: all)
    n_test: int | None = None  # P_test items kept (None: all)
    hint_prob: float = 0.5  # share of training items written with the CoT hint
    seed: int = 0
    modes: list = field(default_factory=lambda: ["finetune"])
    qa_ratios: list = field(default_factory=lambda: [0.8])  # mixed: share of task windows
    finetune: dict = field(default_factory=dict)  # overrides of the finetune preset
    max_items: int | None = None  # items scored per split (None: all)

    @classmethod
    def from_dict(cls, d: dict) -> ManipulationConfig:
        return from_dict(cls, d, "manipulation")

    def validate(self) -> None:
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError(f"manipulation.max_items must be null or an int >= 1, got {self.max_items!r}")
        if not isinstance(self.tasks, list) or not isinstance(self.finetune, dict):
            raise ConfigError("manipulation.tasks must be a list and manipulation.finetune a mapping")


def task_specs(m: ManipulationConfig) -> list[dict]:
    """One spec per listed task: ``{label, task, n_train, n_test, hint_prob, seed, modes}``; the label
    is the task name plus the task keys the entry sets itself (``month_parity-hint_prob0.0``);
    ``modes`` is a list of (mode, qa_ratio) from the entry's own or the shared ``modes``/``qa_ratios``."""
    shared = {k: getattr(m, k) for k in (*TASK_KEYS, *TRAIN_KEYS)}
    specs = []
    for entry in m.tasks:
        own = dict(entry) if isinstance(entry, dict) else {"task": entry}
        unknown = sorted(set(own) - {"task", *TASK_KEYS, *TRAIN_KEYS})
        if unknown or "task" not in own:
            keys = ", ".join((*TASK_KEYS, *TRAIN_KEYS))
            raise ConfigError(f"manipulation.tasks entry {entry!r}: keys are task and {keys}")
        task = own.pop("task")
        modes = _modes({k: own.pop(k, shared[k]) for k in TRAIN_KEYS})
        if task not in TASKS:
            raise ConfigError(f"unknown manipulation task {task!r}; choose from: {', '.join(TASKS)}")
        spec = {"task": task, **{k: own.get(k, shared[k]) for k in TASK_KEYS}}
        if spec["seed"] is None or spec["hint_prob"] is None:
            raise ConfigError(f"manipulation {task}: seed and hint_prob must be set")
        if task not in HINT_TASKS:
            spec["hint_prob"] = 0.0  # no hint exists: the task set is the same whatever it says
        validate_task(task, spec["n_train"], spec["n_test"], spec["hint_prob"])
        spec["label"] = task + "".join(f"-{k}{own[k]}" for k in sorted(own))
        spec["modes"] = modes
        specs.append(spec)
    return specs


def _modes(m: dict) -> list[tuple[str, float | None]]:
    modes = list(m.get("modes") or [])
    bad = [x for x in modes if x not in MODES]
    if bad or not modes:
        raise ConfigError(f"manipulation.modes must be a non-empty list of {', '.join(MODES)}, got {modes}")
    out: list[tuple[str, float | None]] = []
    for mode in dict.fromkeys(modes):
        if mode == "finetune":
            out.append(("finetune", None))
            continue
        ratios = list(m.get("qa_ratios") or [])
        if not ratios or any(not isinstance(r, int | float) or not 0 < r <= 1 for r in ratios):
            raise ConfigError(
                f"manipulation.qa_ratios must be a non-empty list of numbers in (0, 1]: {ratios}"
            )
        out += [("mixed", float(r)) for r in dict.fromkeys(ratios)]
    return out


@dataclass(frozen=True)
class JunkConfig:
    """The ``junk`` section (Part 3.3 Results 10-11): ``people`` junk people (0: none), whose bios, in
    the dataset's own style, fill ``fraction`` of the pretraining windows; ``seed`` draws them (another
    seed than the dataset's). Many junk people are each seen about once (junk); few are repeated
    (bioS(1K) in Result 11: no capacity loss in the paper)."""

    people: int = 0
    fraction: float = 0.875
    seed: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> JunkConfig:
        return from_dict(cls, d, "junk")

    def validate(self) -> None:
        if not isinstance(self.people, int) or self.people < 0 or self.people == 1:
            raise ConfigError(f"junk.people must be 0 (no junk) or an integer >= 2, got {self.people!r}")
        if not 0 < self.fraction < 1:
            raise ConfigError(f"junk.fraction must be in (0, 1), got {self.fraction}")


def junk_data_keys(data: dict, junk: JunkConfig) -> dict:
    """The junk dataset: the run's data preset with junk's people and seed, under a name of its own."""
    if junk.seed == data.get("seed", 0):
        raise ConfigError(f"junk.seed={junk.seed} is the dataset's own seed: the junk would be its people")
    # one bio per junk person: junk is text seen about once, not more entries to learn
    junk_data = {
        **data,
        "name": f"{data['name']}_junk",
        "n_people": junk.people,
        "seed": junk.seed,
        "multi": 1,
    }
    return data_keys(junk_data)


@dataclass(frozen=True)
class PlannedRun:
    """A run before it is built: the manifest the runner files once ``build`` (the stages it reads,
    each built with everything it needs) is done."""

    manifest: RunManifest
    build: list[Stage]


def plan_extras(cfg: dict, data: Stage, corpus: Stage, pretrain: Stage) -> tuple[dict, dict, list[Stage]]:
    """(manifest stage slots, task runs' settings by label, stages to build) of the memorization,
    the capacity and the manipulation tasks of one dataset; all empty when none is asked for."""
    stages: dict[str, str] = {}
    tasks: dict[str, dict] = {}
    build: list[Stage] = []
    mem = MemorizationConfig.from_dict(cfg.get("memorization") or {})
    if mem.enabled:
        stage = Stage(MEMORIZATION, {"memorization": mem.measures()}, {"pretrain": pretrain, "data": data})
        stages["memorization"] = stage.rel()
        build.append(stage)
    cap = cfg.get("capacity") or {}
    if CapacityConfig.from_dict(cap).enabled:
        inputs = {"pretrain": pretrain, "data": data, "corpus": corpus}
        stage = Stage(CAPACITY, {"capacity": {k: v for k, v in cap.items() if k != "enabled"}}, inputs)
        stages["capacity"] = stage.rel()
        build.append(stage)
    m = ManipulationConfig.from_dict(cfg.get("manipulation") or {})
    specs = task_specs(m)
    if not specs:
        return stages, tasks, build
    ft = OmegaConf.to_container(OmegaConf.merge(cfg["finetune"], m.finetune), resolve=True)
    e = EvalConfig.from_dict(cfg["eval"])
    ev = stage_keys("eval", {"max_items": m.max_items, "batch_size": e.batch_size, "num_beams": e.num_beams,
                             "gpu_batch_size": e.gpu_batch_size})  # fmt: skip
    for spec in specs:
        task_cfg = {k: spec[k] for k in ("task", *TASK_KEYS)}
        task_set = Stage(TASK_SET, {"task": task_cfg}, {"data": data, "corpus": corpus})
        for mode, ratio in spec["modes"]:
            if mode == "finetune":
                label = f"{spec['label']}__ft"
                train = Stage(TASK_FINETUNE, {"finetune": ft},
                              {"pretrain": pretrain, "tasks": task_set, "corpus": corpus})  # fmt: skip
            else:
                label = f"{spec['label']}__mix{ratio:g}"
                tr = {**train_keys(cfg["train"]), "qa_ratio": ratio}
                train = Stage(
                    TASK_MIXED, {"model": cfg["model"], "train": tr}, {"corpus": corpus, "tasks": task_set}
                )
            if label in tasks:
                raise ConfigError(f"manipulation lists {label} twice; give each entry its own settings")
            evaluate = Stage(TASK_EVAL, {"eval": ev}, {"model": train, "tasks": task_set})
            for part, stage in (("tasks", task_set), ("train", train), ("eval", evaluate)):
                stages[slot(TASK_RUNS[0], label, part)] = stage.rel()
            name = ft.get("name") if mode == "finetune" else None
            tasks[label] = {**task_cfg, "mode": mode, "qa_ratio": ratio, "finetune": name}
            build.append(evaluate)
    return stages, tasks, build


def run_overrides(overrides: list[str]) -> list[str]:
    """The command-line overrides a run is named by and its manifest records: all but UNNAMED, the
    logging keys (VOLATILE: train.wandb=disabled names no other run) and Hydra's own, each as Hydra
    writes a sweep job's (``lr=1e-3`` typed and ``lr=0.001`` from a sweep agree), sorted so the order
    they were typed in does not matter."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    kept = [o for o in parsed if o.key_or_group not in UNNAMED and not o.is_hydra_override()
            and not is_volatile(o.key_or_group)]  # fmt: skip
    return sorted(_canonical(o) for o in kept)


def _canonical(o) -> str:
    if o.is_delete() and o.value() is None:
        return o.get_key_element()  # ~key: no value
    return f"{o.get_key_element()}={o.get_value_element_as_str()}"


def run_name(data: str, overrides: list[str]) -> str:
    """``data``, then ``__key=value`` per override of ``run_overrides`` (``bioS_single__finetune.
    train.lr=0.001``), any character a file name should not hold as ``_``. Past NAME_LIMIT the
    overrides that do not fit become ``__+<how many>_<hash of all>``: one name per set of overrides."""
    parts = [UNSAFE.sub("_", o) for o in overrides]
    name = "__".join([data, *parts])
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]
    name, kept = data, 0
    while len(f"{name}__{parts[kept]}") <= NAME_LIMIT - 16:  # room for __+NN_<hash>
        name, kept = f"{name}__{parts[kept]}", kept + 1
    return f"{name}__+{len(parts) - kept}_{digest}"


def check_run_names(runs: list[PlannedRun]) -> None:
    """One set of stages per run name: otherwise one manifest would silently replace the other."""
    first: dict[tuple[str, str], RunManifest] = {}
    for run in (r.manifest for r in runs):
        other = first.setdefault((run.experiment, run.run), run)
        diff = name_clash(run, other.stages)
        if diff:
            raise ConfigError(
                f"two runs of {run.experiment} are named {run.run} but differ in {diff}: "
                "give their data presets different names"
            )


def check_combination(cfg: dict, probes: dict[str, dict]) -> None:
    """What the model cannot do with the rest of the config, refused before any work: a masked LM
    (GBERT) answers QAs by filling masks, so it has no beam search, no generated task answers or
    bio continuations, and its state at a bio position already sees the values after it (P-probes
    would read the answer from the input: only Q-probes, on the name alone, mean something)."""
    arch = cfg["model"].get("arch", "gpt_neox")
    ft = cfg.get("finetune") or {}
    asked = [k for k, on in (("qa_eval", cfg["qa_eval"] != "none"), ("probes", bool(probes)),
             ("manipulation", bool((cfg.get("manipulation") or {}).get("tasks"))),
             ("memorization", bool((cfg.get("memorization") or {}).get("enabled")))) if on]  # fmt: skip
    capacity_only = [what for what, on in (
        ("data.style=bioD", cfg["data"].get("style") == BIOD),
        ("junk.people > 0", JunkConfig.from_dict(cfg.get("junk") or {}).people > 0),
        ("tokenizer.domain_token=true", bool(cfg["tokenizer"].get("domain_token")))) if on]  # fmt: skip
    if capacity_only and asked:
        raise ConfigError(f"{capacity_only[0]} is for capacity: set qa_eval=none, probes=[], no {asked[0]}")
    if (cfg.get("capacity") or {}).get("enabled") and arch in MASKED_LM_ARCHS:
        raise ConfigError(f"capacity reads a causal model's bio loss; model.arch={arch} is a masked LM")
    if cfg["qa_eval"] == "finetune" and ft.get("method", "lora") == "lora" and arch not in TARGETS:
        raise ConfigError(f"finetune.method=lora: LoRA targets exist for {sorted(TARGETS)}, not {arch!r}")
    if arch not in MASKED_LM_ARCHS:
        return
    what = f"model.arch={arch} is a masked LM"
    p_probes = [n for n, p in probes.items() if PROBE_KINDS.get(p.get("kind")) != "q"]
    if p_probes:
        raise ConfigError(f"{what}: P-probes ({', '.join(p_probes)}) would see the values; use q probes")
    if (cfg.get("manipulation") or {}).get("tasks"):
        raise ConfigError(f"{what}: manipulation tasks need generated answers (a causal model)")
    if (cfg.get("memorization") or {}).get("enabled"):
        raise ConfigError(f"{what}: memorization generates bio continuations (a causal model)")
    if cfg["eval"].get("num_beams", 1) != 1:
        raise ConfigError(f"{what}: its answer masks are filled at once, so eval.num_beams must be 1")


# Keys that came after many roots were built, with the value that means "as before": a stage config
# leaves them out at that value, so those roots' stage keys hold.
ADDED_LATER = {
    "data": {"max_values": 0, "biod": None, "llm": None},
    "tokenizer": {"domain_token": False},
    "train": {"exposures": None, "min_steps": None, "fresh_bios": False},
    "eval": {"gpu_batch_size": EvalConfig.gpu_batch_size},
}


def stage_keys(section: str, d: dict) -> dict:
    """A config ``section`` as its stage key holds it: ADDED_LATER's keys left out at their old value."""
    later = ADDED_LATER[section]
    return {k: v for k, v in d.items() if k not in later or v != later[k]}


def data_keys(data: dict) -> dict:
    """A dataset's keys as its stage key holds them: ADDED_LATER's at their old value left out, and the
    celebrity keys (also added later) while there are no celebrities."""
    keys = stage_keys("data", data)
    return keys if data.get("n_celebrities") else {k: v for k, v in keys.items() if k not in CELEBRITY_KEYS}


def train_keys(train: dict) -> dict:
    """A pretraining's train keys as its stage key holds them (``exposures`` and ``min_steps`` unset)."""
    return stage_keys("train", train)


def plan_runs(
    cfg: dict, probes: dict[str, dict] | None = None, named: list[str] = (), variant: str | None = None
) -> list[PlannedRun]:
    """The runs of one composed per-dataset config.

    ``cfg`` holds data, model, train, finetune, tokenizer, eval, qa_eval, grid, experiment, scale,
    paper, and optionally manipulation and memorization; ``probes`` maps a probe preset name to
    its config; ``named``: the command-line overrides (``run_overrides``) that name the runs and go
    into their manifests; ``variant``: what else tells this run from the others of the experiment
    (``N300__gpt2-2-2__e100`` in a capacity sweep), after the dataset in the run's name."""
    if cfg["qa_eval"] not in QA_EVAL:
        raise ConfigError(f"qa_eval must be one of {', '.join(QA_EVAL)}, got {cfg['qa_eval']!r}")
    PaperConfig.from_dict(cfg.get("paper") or {})
    EvalConfig.from_dict(cfg["eval"])
    check_combination(cfg, probes or {})
    data = Stage(DATA, data_keys(cfg["data"]))
    junk = JunkConfig.from_dict(cfg.get("junk") or {})
    junk_data = Stage(DATA, junk_data_keys(cfg["data"], junk)) if junk.people else None
    corpus_inputs = {"data": data, **({"junk": junk_data} if junk_data else {})}
    corpus = Stage(CORPUS, {"tokenizer": stage_keys("tokenizer", cfg["tokenizer"])}, corpus_inputs)
    train = {**train_keys(cfg["train"]), **({"junk_fraction": junk.fraction} if junk.people else {})}
    pretrain = Stage(PRETRAIN, {"model": cfg["model"], "train": train}, {"corpus": corpus})
    probe_stages = {
        name: Stage(PROBE, {"probe": p}, {"pretrain": pretrain, "data": data})
        for name, p in (probes or {}).items()
    }
    evals: list[tuple[str, Stage | None, dict | None]] = []
    eval_keys = stage_keys("eval", cfg["eval"])
    if cfg["qa_eval"] == "finetune":
        for name, _, ft in grid_points(cfg["finetune"], cfg.get("grid")):
            inputs = {"pretrain": pretrain, "data": data, "corpus": corpus}
            evals.append((name, Stage(FINETUNE, {"finetune": ft, "eval": eval_keys}, inputs), ft))
    elif cfg["qa_eval"] == "direct":
        evals.append(
            ("run", Stage(EVALUATE, {"eval": eval_keys}, {"pretrain": pretrain, "data": data}), None)
        )
    else:
        evals.append(("run", None, None))
    extra_stages, task_runs, extra_objs = plan_extras(cfg, data, corpus, pretrain)
    runs = []
    base = run_name("__".join([cfg["data"]["name"], *([variant] if variant else [])]), list(named))
    for grid_name, ev, ft in evals:
        run = base if grid_name == "run" else f"{base}__{grid_name}"
        stages = {"data": data.rel(), **({"junk": junk_data.rel()} if junk_data else {}),
                  "corpus": corpus.rel(), "pretrain": pretrain.rel(),
                  **{slot(PROBE_SLOT, n): s.rel() for n, s in probe_stages.items()},
                  **({"eval": ev.rel()} if ev is not None else {}), **extra_stages}  # fmt: skip
        manifest = RunManifest(
            experiment=cfg["experiment"], scale=cfg["scale"], run=run, data=cfg["data"]["name"],
            model=cfg["model"]["name"], train=cfg["train"]["name"],
            finetune=None if ft is None else ft.get("name", ft.get("method")),
            finetune_method=None if ft is None else ft.get("method"), grid=grid_name,
            qa_ratio=cfg["train"].get("qa_ratio", 0.0), overrides=list(named), stages=stages,
            paper=cfg.get("paper") or {}, probe_kinds={n: p.get("kind") for n, p in (probes or {}).items()},
            tasks=task_runs,
        )  # fmt: skip
        build = [s for s in (pretrain, ev, *probe_stages.values(), *extra_objs) if s is not None]
        runs.append(PlannedRun(manifest, build))
    return runs


def sweep_variants(
    people: list | None, models: dict | None, exposures: list | None
) -> list[tuple[str, list]]:
    """(variant name, overrides) for every combination of the experiment-level sweep lists: data sizes
    ``people``, ``models`` (name -> model keys) and ``train.exposures``; ``[(None, [])]`` when all are
    empty. The capacity sweep (Part 3.3 Figure 1) is N x model x exposures on each dataset."""
    for key, value, kind in (
        ("people", people, list),
        ("models", models, dict),
        ("exposures", exposures, list),
    ):
        if value is not None and (not isinstance(value, kind) or not value):
            raise ConfigError(f"{key} must be null or a non-empty {kind.__name__}, got {value!r}")
        # 0 once passed as "unset" (a falsy value named no variant): every listed value must be a size
        bad = [v for v in value if not is_count(v)] if kind is list and value else []
        if bad:
            raise ConfigError(f"{key} must list integers >= 1, got {bad[0]!r} in {value}")
    if not models:
        model_items: list = [(None, {})]
    else:
        model_items = list(models.items())
        bad = [n for n, keys in model_items if not isinstance(keys, dict) or not UNSAFE.sub("", n) == n]
        if bad:
            raise ConfigError(f"models.{bad[0]} must map a file-name-safe name to model keys")
    out = []
    for n in people or [None]:
        for model, keys in model_items:
            for e in exposures or [None]:
                name = [*([f"N{n}"] if n is not None else []), *([model] if model else []),
                        *([f"e{e}"] if e is not None else [])]  # fmt: skip
                over = [*([f"data.n_people={n}"] if n is not None else []),
                        *([f"train.exposures={e}"] if e is not None else []),
                        *([f"model.name={model}"] if model else []),
                        *(f"++model.{k}={'null' if v is None else v}" for k, v in keys.items())]  # fmt: skip
                out.append(("__".join(name) or None, over))
    return out


def is_count(v) -> bool:
    """An integer >= 1 (not a bool, which Python counts as an int)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def preset_names(value, key: str, options: list[str]) -> list[str]:
    """A list of preset names (``datasets``, ``probes``), one name taken as a one-item list; an unknown
    name is refused here, in one line, rather than by Hydra's composition of it."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{key} must be a preset name or a list of them, got {value!r}")
    unknown = [n for n in names if n not in options]
    if unknown:
        raise ConfigError(f"{key}: unknown preset {unknown[0]!r}; choose from: {', '.join(options)}")
    return names


def with_inputs(stages: list[Stage]) -> list[Stage]:
    """``stages`` and every stage they are built from, each once (a task_eval's training stage)."""
    out: dict[str, Stage] = {}
    todo = list(stages)
    while todo:
        stage = todo.pop(0)
        if stage.key not in out:
            out[stage.key] = stage
            todo += list(stage.inputs.values())
    return list(out.values())


def validate_plan(runs: list[PlannedRun]) -> None:
    """Each stage's own typed check, before any work starts."""
    for run in runs:
        for stage in with_inputs(run.build):
            if KINDS.get(stage.kind) is not stage.spec:
                raise ConfigError(
                    f"stage {stage.rel()}: kind {stage.kind!r} is not one of {', '.join(KINDS)}"
                )
            stage.spec.check(stage.config)
