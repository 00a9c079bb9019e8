"""The book: chapter conventions (static checks on the notebooks) and a real HTML build.

(a) Every chapter in book/_toc.yml exists, starts with the Colab bootstrap cell, has a
    Summary and an Exercises section, at least one `# NBVAL_CHECK_OUTPUT` cell and stored
    outputs from a full (not FAST) run.
(b) `book/build.sh` builds the book offline with warnings as errors; every chapter page has
    its figures, loads the widget manager and MathJax from the site itself (no CDN), and
    pages with sliders embed their widget state, links included.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

from s9lib.show.book import BOOTSTRAP_CELL, REPOSITORY_URL, chapters

pytestmark = pytest.mark.book


ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"

#: The book's chapters in reading order (DESIGN.md). _toc.yml lists those that exist, in
#: this order.
PLANNED = [
    "01_augmentation",
    "02_resnet18_anatomy",
    "03_training",
    "04_gradcam",
    "05_gradcam_plusplus",
    "06_gradcam_plusplus_bugs",
    "07_explorer",
    "08_evaluating",
    "09_trust",
    "10_planted_shortcut",
    "a1_beyond_one_machine",  # the appendix: after the chapters, and a chapter for every test
]
#: A chapter notebook's name: two digits (a chapter) or a letter and a digit (an appendix).
CHAPTER_NAME = re.compile(r"(\d\d|a\d)_\w+\.ipynb")
CHAPTERS = chapters(BOOK)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _widget_state(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _has_slider(state: dict) -> bool:
    """Slider widgets in a stored widget state (progress bars and other widgets need no link)."""
    return any(m["model_name"].endswith("SliderModel") for m in state.values())


# --------------------------------------------------------------------------- (a) static


def test_toc_lists_existing_chapters_in_design_order():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "intro"
    names = [p.stem for p in CHAPTERS]
    assert names, "no chapters in _toc.yml"
    unknown = [n for n in names if n not in PLANNED]
    assert not unknown, f"chapters not in the planned list {PLANNED}: {unknown}"
    assert names == sorted(names, key=PLANNED.index), f"chapters out of order: {names}"
    for path in CHAPTERS:
        assert path.exists(), f"{path.name} is in _toc.yml but does not exist"
    # A chapter notebook that exists but is not in the toc would be silently left out.
    on_disk = {p.stem for p in BOOK.glob("*.ipynb") if CHAPTER_NAME.fullmatch(p.name)}
    assert on_disk == set(names), f"notebooks not in _toc.yml: {sorted(on_disk - set(names))}"


def test_intro_links_every_chapter():
    intro = (BOOK / "intro.md").read_text()
    for path in CHAPTERS:
        assert f"]({path.name})" in intro, f"intro.md does not link {path.name}"


def test_repository_url_is_the_same_in_config_and_library():
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    assert config["repository"]["url"] == REPOSITORY_URL
    assert config["repository"]["path_to_book"] == "book"
    assert config["execute"]["execute_notebooks"] == "off"
    assert "colab_url" in config["launch_buttons"]


def test_bootstrap_cell_is_self_contained():
    # It runs before s9lib is installed: it may import s9lib only at the very end.
    lines = BOOTSTRAP_CELL.splitlines()
    assert lines[-1] == "import s9lib"
    assert not any("s9lib" in l and ("import" in l or "from" in l) for l in lines[:-1])
    assert REPOSITORY_URL in BOOTSTRAP_CELL and "S9LIB_INSTALL_SPEC" in BOOTSTRAP_CELL
    compile(BOOTSTRAP_CELL, "<bootstrap>", "exec")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_conventions(path: Path):
    nb = _read(path)
    code = _code_cells(nb)
    assert code, "no code cells"
    assert code[0].source == BOOTSTRAP_CELL, (
        "the first code cell must be s9lib.show.book.BOOTSTRAP_CELL, verbatim")
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert re.match(r"#\s+\S", nb.cells[0].source), "the first cell must be the # title"
    assert re.search(r"^##\s+Summary\s*$", markdown, re.M), "no '## Summary' section"
    exercises = re.search(r"^##\s+Exercises\s*$(.*?)(?=^##\s|\Z)", markdown, re.M | re.S)
    assert exercises, "no '## Exercises' section"
    n_exercises = len(re.findall(r"^\d+\.\s", exercises.group(1), re.M))
    assert 2 <= n_exercises <= 4, f"{n_exercises} exercises; the book asks for 2 to 4"
    checked = [c for c in code if re.search(r"^#\s*NBVAL_CHECK_OUTPUT", c.source, re.M)]
    assert checked, "no `# NBVAL_CHECK_OUTPUT` cell"
    assert all(c.outputs for c in checked), "a NBVAL_CHECK_OUTPUT cell has no stored output"
    assert not re.search(r"\binteract(ive)?\b", "\n".join(c.source for c in code)), (
        "no `interact`: it needs a kernel; use s9lib.show.widgets (precomputed frames + jslink)")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_inline_math_is_balanced(path: Path):
    # An odd number of `$` in a cell (outside code and $$ blocks) means a formula lost its
    # opening or closing dollar, and the rest of the paragraph renders as math or as TeX.
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "markdown":
            continue
        text = re.sub(r"```.*?```|`[^`]*`", "", cell.source, flags=re.S).replace("$$", "")
        assert text.count("$") % 2 == 0, f"cell {i}: unbalanced $ in {text[:80]!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_exercise_has_a_folded_solution(path: Path):
    # After "## Exercises" comes "## Solutions": per exercise N, optional code cells that
    # start with "# Solution to exercise N" (tagged hide-cell: a toggle in the HTML book,
    # collapsed in JupyterLab), then one markdown cell folded in <details> "Solution N".
    nb = _read(path)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    exercises = re.search(r"^##\s+Exercises\s*$(.*?)(?=^##\s|\Z)", markdown, re.M | re.S)
    n_exercises = len(re.findall(r"^\d+\.\s", exercises.group(1), re.M))
    start = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                  and re.search(r"^##\s+Solutions\s*$", c.source, re.M)), None)
    assert start is not None, "no '## Solutions' section after the exercises"
    answers, coded = [], set()
    for cell in nb.cells[start + 1:]:
        if cell.cell_type == "markdown":
            text = cell.source.strip()
            found = re.match(r"<details>\s*<summary><b>Solution (\d+)</b></summary>", text)
            assert found and text.endswith("</details>"), (
                f"a markdown cell in Solutions is not one folded solution: {text[:60]!r}")
            answers.append(int(found.group(1)))
        else:
            found = re.match(r"# Solution to exercise (\d+)\b", cell.source)
            assert found, f"a code cell in Solutions does not name its exercise: {cell.source[:60]!r}"
            assert "hide-cell" in cell.metadata.get("tags", []), (
                f"solution code for exercise {found.group(1)} is not folded (tag hide-cell)")
            coded.add(int(found.group(1)))
    assert answers == list(range(1, n_exercises + 1)), (
        f"solutions {answers} for exercises 1..{n_exercises}")
    assert coded <= set(answers)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_has_stored_outputs_from_a_full_run(path: Path):
    nb = _read(path)
    code = _code_cells(nb)
    unexecuted = [i for i, c in enumerate(code) if c.execution_count is None]
    assert not unexecuted, f"code cells {unexecuted} were never executed; run python -m s9lib.show.book"
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), "outputs are not from one top-to-bottom run"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], "a stored output is an error"
    undrawn = [i for i, c in enumerate(code) for o in c.outputs
               if "<Figure size" in o.get("data", {}).get("text/plain", "")
               and "image/png" not in o.get("data", {})]
    assert not undrawn, (f"code cells {undrawn} end with a Figure that was stored as text, not "
                         "drawn: start the chapter with `%matplotlib inline`")
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "mode:     full" in text, (
        "stored outputs must come from a full run that prints s9lib.show.book.run_info(); "
        "refresh them with `python -m s9lib.show.book` (without --fast)")
    views = [o.data[WIDGET_VIEW]["model_id"] for o in outputs if WIDGET_VIEW in o.get("data", {})]
    if views:
        state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        missing = [v for v in views if v not in state]
        assert not missing, "widget views without stored widget state (store_widget_state=True)"
        if _has_slider(state):  # a slider works without a kernel only if linked (jslink)
            assert any(m["model_name"] == "LinkModel" for m in state.values())


# --------------------------------------------------------------------------- citations

BIB = BOOK / "references.bib"
#: A MyST citation role, {cite:t}`key` or {cite:p}`key1,key2` (any sphinxcontrib-bibtex role).
CITE_ROLE = re.compile(r"\{cite(?::\w+)?\}`([^`]*)`")
#: What an uncited author-year mention looks like: "Selvaraju et al.", "Draelos & Carin, 2020".
AUTHOR_YEAR = re.compile(r"\bet al\b|\b[A-Z][\w'-]+ (?:&|and) [A-Z][\w'-]+,? \(?(?:19|20)\d\d\b")


def _book_markdown() -> dict[str, str]:
    """The markdown of every page in book/: the markdown cells of each notebook, each .md file."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(BOOK.glob("*.md"))}
    for path in sorted(BOOK.glob("*.ipynb")):
        texts[path.name] = "\n\n".join(c.source for c in _read(path).cells
                                       if c.cell_type == "markdown")
    return texts


def _bib_entries() -> dict:
    from pybtex.database import parse_file  # installed with sphinxcontrib-bibtex (jupyter-book)

    return dict(parse_file(str(BIB), bib_format="bibtex").entries)


def test_every_citation_is_in_the_bibliography():
    entries = {key.lower() for key in _bib_entries()}
    missing = {name: sorted({k.strip() for keys in CITE_ROLE.findall(text)
                             for k in keys.split(",")} - entries)
               for name, text in _book_markdown().items()}
    missing = {name: keys for name, keys in missing.items() if keys}
    assert not missing, f"cited but not in book/references.bib: {missing}"


def test_every_bibliography_entry_links_and_is_cited():
    entries = _bib_entries()
    unlinked = [key for key, entry in entries.items()
                if not ({"doi", "url"} & {f.lower() for f in entry.fields})]
    assert not unlinked, f"entries without a doi or url: {unlinked}"
    bad_keys = [key for key in entries if not re.fullmatch(r"[a-z]+\d{4}[a-z]?", key)]
    assert not bad_keys, f"keys are lastnameYEAR, lowercase (a letter on a clash): {bad_keys}"
    cited = {k.strip() for text in _book_markdown().values()
             for keys in CITE_ROLE.findall(text) for k in keys.split(",")}
    assert sorted(set(entries) - cited) == [], "entries in references.bib that no page cites"


def test_papers_are_cited_not_just_named():
    # "Selvaraju et al. (2017)" in prose is a citation without a link; write
    # {cite:t}`selvaraju2017` (or {cite:p}) so it links to the bibliography.
    code_or_math = re.compile(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$\n]+\$", re.S)
    found = {}
    for name, text in _book_markdown().items():
        prose = code_or_math.sub("", CITE_ROLE.sub("", text))
        hits = [prose[max(0, m.start() - 30):m.end() + 10] for m in AUTHOR_YEAR.finditer(prose)]
        if hits:
            found[name] = hits
    assert not found, f"author-year mentions without a {{cite}} role: {found}"


# --------------------------------------------------------------------------- (b) build


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The HTML book, built by book/build.sh into a temporary folder."""
    if shutil.which("jupyter-book") is None:
        pytest.fail("jupyter-book is not installed: pip install -e '.[book,test]'")
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run(["bash", str(BOOK / "build.sh"), str(out)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"build.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out / "_build" / "html"


def _scripts(page: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)]


def _images(page: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)]


def test_build_has_every_page_without_external_scripts(built: Path):
    for name in ["intro", *[p.stem for p in CHAPTERS]]:
        page_path = built / f"{name}.html"
        assert page_path.exists(), f"{page_path.name} was not built"
        page = page_path.read_text()
        external = [s for s in _scripts(page) if re.match(r"(https?:)?//", s)]
        assert not external, f"{name}.html loads scripts from elsewhere: {external}"
        assert "tex-mml-chtml.js" not in page or any(
            s.startswith("_static/tex-mml-chtml.js") for s in _scripts(page))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_built_chapter_has_its_figures_and_widgets(built: Path, path: Path):
    page = (built / f"{path.stem}.html").read_text()
    figures = [s for s in _images(page) if s.startswith("_images/")]
    for src in _images(page):
        if not re.match(r"(https?:)?//|data:", src):
            assert (built / src.split("?")[0]).exists(), f"{path.stem}.html: missing image {src}"
    nb = _read(path)
    n_stored = sum(1 for c in _code_cells(nb) for o in c.outputs
                   if "image/png" in o.get("data", {}))
    assert len(figures) == n_stored, f"{n_stored} figures stored, {len(figures)} in the page"

    has_widgets = WIDGET_STATE in json.dumps(nb.metadata.get("widgets", {}))
    # The explorer's pictures are its widget's precomputed frames, not static figures.
    assert figures or has_widgets, f"{path.stem}.html has neither figures nor widgets"
    state_scripts = re.findall(
        rf'<script type="{re.escape(WIDGET_STATE)}">(.*?)</script>', page, re.S)
    if not has_widgets:
        assert not state_scripts
        return
    assert len(state_scripts) == 1, "the page must embed the notebook's widget state once"
    state = json.loads(html.unescape(state_scripts[0]))["state"]
    if _has_slider(state):
        assert any(m["model_name"] == "LinkModel" for m in state.values()), "no LinkModel"
    managers = [s for s in _scripts(page)
                if Path(s.split("?")[0]).name in ("embed.js", "embed-amd.js")]
    assert len(managers) == 1, f"the widget manager must be loaded once, got {managers}"
    assert managers[0].startswith("_static/"), f"not served by the site: {managers[0]}"
    assert (built / managers[0].split("?")[0]).exists()
    assert "application/vnd.jupyter.widget-view+json" in page


CHROMIUM = Path("/usr/bin/chromium")
#: CI sets CI=true; there the browser test must run (.ci/run installs chromium), not skip.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def test_sliders_work_in_a_browser(built: Path, tmp_path: Path):
    # book/screenshots.mjs serves the built book locally, blocks every other host, presses
    # ArrowRight twice on each page's first slider and fails unless the visible frame changes.
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing, and CI must run the browser test: "
                        ".ci/run installs it with `apt-get install -y chromium`.")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    if not (BOOK / "node_modules" / "playwright-core").exists():
        pytest.fail("book/node_modules has no playwright-core: run `npm ci` in book/")
    proc = subprocess.run(["node", str(BOOK / "screenshots.mjs"), str(built), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    widget_pages = [p.stem for p in CHAPTERS if _has_slider(_widget_state(_read(p)))]
    assert widget_pages, "no chapter has a slider"
    lines = {l.split(":")[0]: l for l in proc.stdout.splitlines()}
    for name in widget_pages:
        assert "visible frame changed" in lines.get(f"{name}.html", ""), proc.stdout
    explorer = lines.get("07_explorer.html", "")
    assert re.search(r"; (\d+) of \1 tabs showed their own frames", explorer), proc.stdout
    for name in ["intro", *[p.stem for p in CHAPTERS]]:
        assert (tmp_path / f"{name}.png").exists()


def test_a_fork_changes_one_line_and_the_bootstrap_cells_follow(tmp_path):
    """A fork edits `repository: url:` in _config.yml; `python -m s9lib.show.book --bootstrap-only`
    carries it into every chapter's Colab cell, leaving the stored outputs alone."""
    import shutil

    from s9lib.show.book import bootstrap_cell, main, repository_url

    fork = "https://github.com/someone/s9-book-fork"
    for name in ["_config.yml", "_toc.yml"] + [p.name for p in CHAPTERS]:
        shutil.copy(BOOK / name, tmp_path / name)
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text().replace(REPOSITORY_URL, fork, 1))
    assert repository_url(tmp_path) == fork and repository_url(BOOK) == REPOSITORY_URL
    assert main(["--book", str(tmp_path), "--bootstrap-only"]) == 0
    for path in CHAPTERS:
        before, after = _read(path), _read(tmp_path / path.name)
        assert _code_cells(after)[0].source == bootstrap_cell(fork)
        assert fork in _code_cells(after)[0].source and REPOSITORY_URL not in _code_cells(after)[0].source
        assert [c.get("outputs") for c in _code_cells(after)[1:]] == [
            c.get("outputs") for c in _code_cells(before)[1:]]


def test_instructor_page_reading_times_match_the_chapters():
    # The page's reading-time column is s9lib's rule applied to the stored chapters, and
    # every chapter has a row: a chapter edited or added without updating the page fails.
    from s9lib.show.book import reading_minutes

    page = (BOOK / "instructors.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| \[[^\]]+\]\(([\w]+)\.ipynb\) \| (\d+) \|", page, re.M))
    assert set(rows) == {p.stem for p in CHAPTERS}, "instructors.md must list every chapter"
    for path in CHAPTERS:
        assert int(rows[path.stem]) == reading_minutes(path), (
            f"instructors.md says {rows[path.stem]} min for {path.stem}; "
            f"reading_minutes gives {reading_minutes(path)}")


def test_run_file_reads_the_checkout_and_downloads_without_one(tmp_path, monkeypatch):
    """A chapter reads a committed run through run_file: beside book/ in a checkout; without
    one (Colab) from the repository's raw files, once, into the cache. The download path is
    exercised for real with a file:// repository holding the run's actual bytes."""
    from s9lib.show.book import run_file

    relative = "runs/planted-shortcut/results.json"
    assert run_file(relative) == ROOT / relative
    mirror = tmp_path / "mirror"
    (mirror / "raw" / "main" / "runs" / "planted-shortcut").mkdir(parents=True)
    (mirror / "raw" / "main" / relative).write_bytes((ROOT / relative).read_bytes())
    colab_book = tmp_path / "site-packages" / "book"  # no run files beside it
    colab_book.mkdir(parents=True)
    (colab_book / "_config.yml").write_text(f"repository:\n  url: {mirror.as_uri()}\n")
    monkeypatch.setenv("S9LIB_CACHE", str(tmp_path / "cache"))
    got = run_file(relative, colab_book)
    assert got == tmp_path / "cache" / relative
    assert got.read_bytes() == (ROOT / relative).read_bytes()
    (mirror / "raw" / "main" / relative).unlink()  # a second call reads the cache
    assert run_file(relative, colab_book).read_bytes() == (ROOT / relative).read_bytes()
