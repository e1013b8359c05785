"""Operators: scaffolding of kopf-based Python operator projects (Operator = CRD + controller).

Kept light (the CLI imports it to build its choices): the generators live in the submodules.
"""

# The examples ``operator create api --example`` knows: templates/<name>/ replaces templates/api/.
EXAMPLES = ("appservice",)
