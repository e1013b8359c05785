"""Names an operator project is made of, checked once, before any file is written.

The API server refuses a bad group or plural only when the CRD is applied, and Python refuses a bad
package name only when it is imported; a scaffold built on such a name is wasted. kubebuilder checks
the same rules up front (DNS-1123 domain and group, DNS-1035 version, a Go-style exported kind), and
so does this module, with one clear message per rule. Derived names (package, plural, module) are
made here too, so every template sees the same spelling.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from k8sx.crd.schema import pluralize
from k8sx.errors import UsageError

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_VERSION = re.compile(r"v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?")
_KIND = re.compile(r"[A-Z][A-Za-z0-9]*")


def domain(value: str) -> str:
    """``--domain``: a DNS-1123 subdomain with a dot (the groups are ``<group>.<domain>``)."""
    if not (len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) and "." in value):
        raise UsageError(f"--domain {value!r}: not a DNS-1123 subdomain with a dot "
                         "(lower-case letters, digits, '-' and '.', e.g. example.com)")
    return value


def repo(value: str) -> str:
    """``--repo``: the project (distribution) name, a DNS-1123 label, also used for Kubernetes objects."""
    if not (len(value) <= 50 and _DNS1123_LABEL.fullmatch(value)):
        raise UsageError(f"--repo {value!r}: not a DNS-1123 label of at most 50 characters "
                         "(lower-case letters, digits and '-', e.g. appservice-operator)")
    if not value[0].isalpha():
        raise UsageError(f"--repo {value!r}: must start with a letter (it names the Python package too)")
    return value


def package(repo_name: str) -> str:
    """The Python package of a project: the repo name with '_' for '-'."""
    name = repo_name.replace("-", "_")
    if not name.isidentifier() or keyword.iskeyword(name) or name in ("operator", "test", "tests", "kopf"):
        raise UsageError(f"--repo {repo_name!r}: {name!r} cannot be the Python package name "
                         "(it would shadow a module, or is not an identifier)")
    return name


@dataclass(frozen=True)
class ApiNames:
    """Everything derived from ``--group``, ``--version`` and ``--kind`` in one project's domain."""

    group_short: str
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    module: str  # the Python module of the kind: <pkg>.api.<version>.<module>_types, <pkg>.controllers.<module>

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


def api(group: str, version: str, kind: str, project_domain: str) -> ApiNames:
    if not (len(group) <= 63 and _DNS1123_LABEL.fullmatch(group)):
        raise UsageError(f"--group {group!r}: not a DNS-1123 label (lower-case letters, digits and '-'; "
                         f"the API group becomes <group>.{project_domain})")
    full = f"{group}.{project_domain}"
    if len(full) > 253:
        raise UsageError(f"--group {group!r}: {full} is longer than 253 characters")
    if not _VERSION.fullmatch(version):
        raise UsageError(f"--version {version!r}: expected v<N>, v<N>alpha<M> or v<N>beta<M> (e.g. v1, v1beta1)")
    if not _KIND.fullmatch(kind):
        raise UsageError(f"--kind {kind!r}: a kind is CamelCase, starts with an upper-case letter and has only "
                         "letters and digits (e.g. AppService)")
    if len(kind) > 63:
        raise UsageError(f"--kind {kind!r}: longer than 63 characters")
    singular = kind.lower()
    module = singular
    if keyword.iskeyword(module) or module in ("common", "project"):
        raise UsageError(f"--kind {kind!r}: its module name {module!r} is reserved in the project")
    return ApiNames(group, full, version, kind, pluralize(kind), singular, module)
