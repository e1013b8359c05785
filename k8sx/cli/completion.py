"""``k8sx completion bash|zsh|fish``: print the script that wires a shell to k8sx's completion."""

from __future__ import annotations

import typer

from k8sx.cli import scripts

app = typer.Typer(
    help="Shell completion scripts (bash, zsh, fish). kubectl x <TAB> works through kubectl_complete-x.",
    no_args_is_help=True,
)

_SETUP = {
    "bash": "Load it now with: source <(k8sx completion bash); or install it to "
    "/usr/share/bash-completion/completions/k8sx (needs bash-completion).",
    "zsh": "Install it as _k8sx in a directory of your $fpath, or: source <(k8sx completion zsh) after compinit.",
    "fish": "Install it to ~/.config/fish/completions/k8sx.fish, or: k8sx completion fish | source.",
}


def _command(shell: str) -> None:
    def show() -> None:
        typer.echo(scripts.script(shell), nl=False)

    show.__doc__ = f"Print the {shell} completion script. {_SETUP[shell]}"
    app.command(shell)(show)


for _shell in scripts.SHELLS:
    _command(_shell)
