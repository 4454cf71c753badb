"""``ember ... --help``: jsonargparse's help, with the lists of "known subclasses" kept readable.

jsonargparse lists every imported subclass of an argument's base class; for ``--model``
(``torch.nn.Module``) that is every layer torch (and any library imported) defines, hundreds of lines
that say nothing about the user's model. A long list keeps a few names, Ember's first and never
torch's own layers, and counts the rest.
"""

from __future__ import annotations

import re
from typing import Any

from jsonargparse import DefaultHelpFormatter

_KNOWN = re.compile(r"known subclasses: (?P<names>[^)]*)\)")
#: a list of known subclasses longer than this is shortened
MAX_LISTED = 12


def _rank(name: str) -> int:
    """Ember's classes first, then other packages' (the user's), torch's own last."""
    return 0 if name.startswith("ember.") else 2 if name.startswith("torch.") else 1


def shorten_known_subclasses(text: str) -> str:
    """``text`` with a long ``known subclasses: ...`` list cut to :data:`MAX_LISTED` names (Ember's
    first, torch's own layers never) and the rest counted."""

    def shorten(match: re.Match) -> str:
        names = [n.strip() for n in match.group("names").split(",") if n.strip()]
        if len(names) <= MAX_LISTED:
            return match.group(0)
        kept = [n for n in sorted(names, key=_rank) if _rank(n) < 2][:MAX_LISTED]
        listed = ", ".join(kept)
        return f"known subclasses: {listed + ' and ' if listed else ''}{len(names) - len(kept)} more; give any class by its path)"

    return _KNOWN.sub(shorten, text)


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter, with :func:`shorten_known_subclasses` applied to each option."""

    def _get_help_string(self, action: Any) -> str:  # argparse's documented customisation point
        return shorten_known_subclasses(super()._get_help_string(action))
