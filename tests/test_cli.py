"""The shipped Hydra configs and the one-line errors of the entry points."""

import re

import pytest
from omegaconf import OmegaConf

from biolab import cli
from biolab.cli import CONF_DIR, check_overrides, compose, config_groups, foreign_config, override_args
from biolab.data.dataset import DataConfig
from biolab.errors import BiolabError

FIG3 = [
    "bioS_single", "bioS_single_fullname", "bioS_single_permute1", "bioS_single_permute2",
    "bioS_single_permute5", "bioS_single_permute1_fullname", "bioS_single_permute2_fullname",
    "bioS_single_permute5_fullname", "bioS_multi2", "bioS_multi2_fullname", "bioS_multi2_permute",
    "bioS_multi2_permute_fullname", "bioS_multi5", "bioS_multi5_fullname", "bioS_multi5_permute",
    "bioS_multi5_permute_fullname",
]  # fmt: skip
REVERSE = [
    "bioS_multi5_reverse1",
    "bioS_multi5_reverse2",
    "bioS_multi5_reverse6",
    "bioS_multi5_permute_reverse6",
]
CELEBRITY = ["bioS_single_cel", "bioS_single_permute1_cel", "bioS_single_permute1_fullname_cel",
             "bioR_single_cel", "bioR_single_fullname_cel"]  # fmt: skip
OTHERS = [
    "bioS_couple2", "bioR_single", "bioR_single_fullname", "bioR_multi5", "bioR_multi5_fullname", *REVERSE,
    *CELEBRITY,
]  # fmt: skip


def test_every_shipped_yaml_parses():
    files = sorted(CONF_DIR.rglob("*.yaml"))
    assert len(files) >= 23
    for f in files:
        OmegaConf.load(f)


CAPACITY = ["bioS_cap", "bioS_fresh", "bioS_simple", "bioR_cap", "bioD_cap"]  # Part 3.3's, at CPU sizes
LLM = ["bioR_llm_single"]  # bioR written by a local LLM: needs data.llm.model (tests/test_bioR_llm.py)


def test_data_presets_are_exactly_the_papers_datasets():
    assert sorted(config_groups()["data"]) == sorted(FIG3 + OTHERS + CAPACITY + LLM)


@pytest.mark.parametrize("preset", CAPACITY)
def test_every_capacity_preset_composes_to_a_valid_config(preset):
    data = DataConfig.from_dict(
        OmegaConf.to_container(compose("generate", [f"data={preset}"]).data, resolve=True)
    )
    assert (
        data.name == preset and data.style == preset[:4] and (data.biod is not None) == (data.style == "bioD")
    )


@pytest.mark.parametrize("preset", FIG3 + OTHERS)
def test_every_data_preset_composes_to_a_valid_config(preset):
    cfg = compose("generate", [f"data={preset}"])
    data = DataConfig.from_dict(OmegaConf.to_container(cfg.data, resolve=True))
    assert data.name == preset and data.n_people == 100_000 and data.seed == 0
    assert data.fullname == preset.removesuffix("_cel").endswith("_fullname")
    assert data.style == preset[:4]
    assert data.n_celebrities == (data.n_people if preset in CELEBRITY else 0)


@pytest.mark.parametrize(
    ("preset", "entries", "permute", "multi"),
    [
        ("bioS_single", 1, 0, 1),
        ("bioS_single_permute1", 1, 1, 1),
        ("bioS_single_permute5_fullname", 5, 5, 1),
        ("bioS_multi2", 2, 0, 2),
        ("bioS_multi5_permute", 5, 1, 5),
        ("bioS_couple2", 2, 2, 1),
        ("bioR_multi5", 5, 0, 5),
    ],
)
def test_preset_semantics(preset, entries, permute, multi):
    data = DataConfig.from_dict(OmegaConf.to_container(compose("generate", [f"data={preset}"]).data))
    assert (data.entries_per_person, data.permute, data.multi) == (entries, permute, multi)
    assert data.couple == (preset == "bioS_couple2")


@pytest.mark.parametrize("preset", REVERSE)
def test_reverse_presets(preset):
    data = DataConfig.from_dict(OmegaConf.to_container(compose("generate", [f"data={preset}"]).data))
    assert (data.reverse, data.multi, data.permute) == (int(preset[-1]), 5, int("permute" in preset))


def test_good_overrides_pass():
    check_overrides("generate", ["data=bioS_multi5", "data.n_people=10", "out=x", "-m"])
    check_overrides("generate", ["data=bioS_single,bioR_single", "+extra=1", "hydra.verbose=true"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["data=bioS_mult5"],
            r"unknown data preset 'bioS_mult5'; choose from: bioD_cap, bioR_cap, bioR_llm_single, "
            r"bioR_multi5, ",
        ),
        (["data=bioS_single,nope"], "unknown data preset 'nope'"),
        (["data.mutli=5"], r"unknown key 'data.mutli'; valid keys under data: name, style, "),
        (["outt=x"], "unknown key 'outt'; valid keys at top level: data, out, overwrite"),
        (["data.n_people=="], "cannot parse overrides"),
    ],
)
def test_bad_overrides_name_the_valid_choices(args, message):
    with pytest.raises(BiolabError, match=message):
        check_overrides("generate", args)


@pytest.mark.parametrize(
    ("args", "overrides"),
    [
        (["--cfg", "job", "experiment=demo"], ["experiment=demo"]),
        (["--cfg", "job", "-p", "data", "experiment=demo"], ["experiment=demo"]),
        (["-c", "hydra", "--resolve", "--package", "hydra.sweep", "root=R"], ["root=R"]),
        (["--info", "defaults", "experiment=demo"], ["experiment=demo"]),
        (["--info", "experiment=demo"], ["experiment=demo"]),  # --info's value is optional
        (["-m", "data=bioS_single,bioS_multi2", "--multirun"], ["data=bioS_single,bioS_multi2"]),
        (["--cfg=job", "--config-dir", "/my/conf", "data=mine"], ["data=mine"]),
    ],
)
def test_hydra_flags_and_their_values_are_not_overrides(args, overrides):
    assert override_args(args) == overrides


def test_hydra_flags_pass_the_override_check():
    check_overrides("run", ["--cfg", "job", "-p", "data", "experiment=demo"])
    check_overrides("run", ["--info", "defaults", "-m", "experiment=demo", "--resolve"])
    assert foreign_config(["--config-dir", "/my/conf", "data=mine"]) and foreign_config(["-cn=other"])
    assert not foreign_config(["--cfg", "job", "-p", "data", "experiment=demo"])


def test_a_launcher_without_its_plugin_or_scheduler_is_one_line(monkeypatch):
    monkeypatch.setattr(cli, "plugin_installed", lambda module: False)
    with pytest.raises(BiolabError) as err:
        cli.check_launcher(["-m", "hydra/launcher=slurm", "experiment=demo"])
    assert str(err.value) == "hydra/launcher=slurm needs the slurm extra: pip install -e '.[slurm]'"
    with pytest.raises(BiolabError, match="submitit_local needs the slurm extra"):
        cli.check_launcher(["-m", "hydra/launcher=submitit_local"])
    cli.check_launcher(["-m", "hydra/launcher=basic", "experiment=demo"])  # Hydra's own
    monkeypatch.setattr(cli, "plugin_installed", lambda module: True)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BiolabError, match="hydra/launcher=slurm submits SLURM jobs but finds no srun here"):
        cli.check_launcher(["-m", "hydra/launcher=slurm"])
    cli.check_launcher(["-m", "hydra/launcher=submitit_local"])  # local processes: no SLURM needed


def test_plugin_detection():
    assert cli.plugin_installed("hydra") and not cli.plugin_installed("hydra_plugins.biolab_nope")
    assert not cli.plugin_installed("biolab_nope_namespace.launcher")  # its parent is missing too


def test_each_sweep_gets_its_own_timestamped_folder():
    cfg = compose("run", ["root=/data/R"], hydra=True)
    assert re.fullmatch(r"/data/R/multirun/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", cfg.hydra.sweep.dir)
    assert cfg.hydra.run.dir == "."  # a single run writes nothing of Hydra's


@pytest.mark.parametrize(
    ("config", "arg", "message"),
    [
        (
            "run",
            "model.d_ff=0",
            "model.d_ff is not in the preset (it keeps its default): add it with ++model.d_ff=",
        ),
        ("run", "probe.train_entries=2", "add it with ++probe.train_entries="),
        ("run", "model.bogus=1", "; with ++: d_ff, init_std"),
        ("evaluate", "eval.bogus=1", "evaluate has no eval section; valid keys at top level: model_dir,"),
        (
            "finetune",
            "eval.bogus=1",
            "valid keys under eval: max_people, batch_size, gpu_batch_size, num_beams",
        ),
    ],
)
def test_an_unknown_key_names_where_valid_keys_are_and_how_to_add_a_typed_one(config, arg, message):
    with pytest.raises(BiolabError) as err:
        check_overrides(config, [arg])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_key_added_with_plus_plus_passes_the_check_and_reaches_the_model():
    check_overrides("run", ["++model.d_ff=0", "++probe.train_entries=2"])
    assert compose("run", ["++model.d_ff=0"]).model.d_ff == 0


def test_every_typed_section_names_a_dataclass_whose_fields_its_presets_hold():
    for section in cli.TYPED_SECTIONS:
        fields = cli.typed_fields(section)
        assert fields, section
    cfg = compose("run")
    for section in ("model", "train", "probe", "probe.linear", "capacity", "memorization", "tokenizer"):
        node = OmegaConf.select(cfg, section)
        assert set(node.keys()) <= set(cli.typed_fields(section)), section
