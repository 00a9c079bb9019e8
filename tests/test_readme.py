import pytest
"""The README's commands are what CI runs: keep them the same."""

import re

from helpers import REPO

pytestmark = pytest.mark.unit


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    section = readme.split("Run the tests", 1)[1]
    test_block = _bash_blocks(section)[0].strip().splitlines()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_block, "README has no test command"
    start = ci.index(test_block[0])
    assert ci[start:start + len(test_block)] == test_block


def test_readme_has_the_main_job_command_first():
    readme = (REPO / "README.md").read_text()
    first = _bash_blocks(readme)[0]
    assert "pip install" in first
