"""How the commands of train/ speak to a terminal: warnings as one line each."""
from __future__ import annotations

import warnings


def one_line_warnings() -> None:
    """Show warnings (an image skipped, no face found) as one line each, without the source line."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
