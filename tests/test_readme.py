"""Every command the README shows is one the code accepts: Hydra commands pass the same override
check the scripts run before starting (presets and keys exist); the set-up commands are CI's."""

import re
import shlex
from pathlib import Path

import pytest

from biolab.cli import CONF_DIR, check_overrides

ROOT = Path(__file__).resolve().parent.parent
HYDRA = {
    script: (script[:-3], CONF_DIR)
    for script in (
        "generate.py",
        "pretrain.py",
        "finetune.py",
        "run.py",
        "evaluate.py",
        "probe.py",
        "report.py",
    )
}


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if "scripts/" in line and ".py" in line:
                words = shlex.split(line.split("&&")[-1])
                at = next(i for i, w in enumerate(words) if w.startswith(("scripts/", ".venv/bin/python")))
                words = words[at:]
                if words[0].endswith("python"):
                    words = words[1:]
                commands.append(words)
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_the_main_commands():
    scripts = {Path(c[0]).name for c in COMMANDS}
    assert {"run.py", "probe.py", "report.py", "generate.py", "pretrain.py", "finetune.py"} <= scripts
    assert ["scripts/run.py", "experiment=demo"] in COMMANDS  # the main job


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_each_readme_command_is_accepted(command):
    script = ROOT / command[0]
    assert script.is_file(), command
    if script.name in HYDRA:
        name, conf_dir = HYDRA[script.name]
        check_overrides(name, command[1:], conf_dir)
