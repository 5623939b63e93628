"""Parts of the ``gen-ai`` command (``gen_ai/cli.py`` is the entry point and the parser).

    settings.py     config file, keys file, aliases and the precedence of every setting
    logs.py         the SQLite log of prompts and answers, ``gen-ai logs``
    interactive.py  ``gen-ai chat -i``: the conversation loop on a terminal
    models.py       ``gen-ai models``: the endpoint's models and the GGUF files on disk

Each is imported only by the command that needs it, so ``gen-ai --help`` stays fast.
"""

from __future__ import annotations


class UsageError(Exception):
    """A bad command line or configuration detected by a handler (exit code 2, one line)."""
