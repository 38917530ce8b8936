"""The README's two commands are the ones CI runs, and the main job runs as a new user would run it."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    main_cmd, test_cmd = readme_commands()
    assert text.index(main_cmd) < 200, "the README must start with the commands"
    assert main_cmd.endswith("orbitseg demo") and "pip install torch==2.13.0" in main_cmd
    assert test_cmd.endswith("pytest -q") and "pip install torch==2.13.0" in test_cmd


def test_ci_runs_exactly_the_readme_test_command():
    _, test_cmd = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci
    assert "set -euo pipefail" in ci


def test_help_is_fast_and_lists_every_verb():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "orbitseg.cli", "--help"],
                         capture_output=True, text=True, check=True)
    for verb in ("synth", "import", "check", "show", "demo"):
        assert verb in out.stdout
    heavy = [m for m in ("SimpleITK", "torch", "matplotlib", "scipy", "numpy")
             if re.search(rf"\|\s+{m}(\.\S+)?$", out.stderr, flags=re.M)]
    assert heavy == [], f"--help imported heavy modules: {heavy}"


def test_cli_makes_openmp_threads_yield_except_when_training():
    code = ("import os, sys; from orbitseg.cli import main; main([sys.argv[1], '/nonexistent']); "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}

    def policy(verb, **extra):
        out = subprocess.run([sys.executable, "-c", code, verb], capture_output=True, text=True, env={**env, **extra})
        return out.stdout.strip().splitlines()[-1]

    assert policy("check") == "PASSIVE"
    assert policy("train") == "None"
    assert policy("check", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
