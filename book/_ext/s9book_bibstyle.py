"""Citations as the book writes them: {cite:t} -> "Selvaraju et al. (2017)",
{cite:p} -> "(Selvaraju et al., 2017)", {cite:alp} -> "Selvaraju et al., 2017".

sphinxcontrib-bibtex's `author_year` style puts years in square brackets; this registers the
same style with round ones as `author_year_round` (_config.yml: bibtex_reference_style).
Loaded through `sphinx: local_extensions:` in _config.yml.
"""

from dataclasses import dataclass, field

import sphinxcontrib.bibtex.plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle


def _round() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclass
class RoundAuthorYearReferenceStyle(AuthorYearReferenceStyle):
    bracket_parenthetical: BracketStyle = field(default_factory=_round)
    bracket_textual: BracketStyle = field(default_factory=_round)
    bracket_author: BracketStyle = field(default_factory=_round)
    bracket_label: BracketStyle = field(default_factory=_round)
    bracket_year: BracketStyle = field(default_factory=_round)


def setup(app):
    sphinxcontrib.bibtex.plugin.register_plugin(
        "sphinxcontrib.bibtex.style.referencing", "author_year_round",
        RoundAuthorYearReferenceStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
