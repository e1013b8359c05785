"""Operators: scaffolding of kopf-based Python operator projects (Operator = CRD + controller)."""
