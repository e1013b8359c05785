"""The command line: thin typer apps that parse arguments, call the domain packages and render.

Nothing here may be imported eagerly by the entry points except ``entry``, ``tree``, ``complete`` and
``completers``: those make up the start-up and completion fast path.
"""
