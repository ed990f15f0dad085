"""import-linter contract for IIP's bounded contexts (see docs/adr/0002-context-boundaries.md).

Every direct sub-package of the root that is not infrastructure is a context, so contexts added
later are checked without editing the configuration. Rules:

1. the kernel imports nothing of the root package outside itself;
2. infrastructure packages (api, cli, console, migrations) import no context: they iterate the registry;
3. a context imports another context only through that context's `public` module.
"""

from __future__ import annotations

from typing import Any

from importlinter import Contract, ContractCheck, fields, output


class BoundedContextsContract(Contract):
    type_name = "bounded_contexts"

    root = fields.StringField()
    kernel = fields.StringField()
    infrastructure = fields.ListField(subfield=fields.StringField())

    def _top(self, module: str) -> str | None:
        root: str = self.root  # type: ignore[assignment]
        if not module.startswith(root + "."):
            return None
        return module[len(root) + 1 :].split(".", maxsplit=1)[0]

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        root: str = self.root  # type: ignore[assignment]
        kernel: str = self.kernel  # type: ignore[assignment]
        infrastructure = set(self.infrastructure)  # type: ignore[arg-type]
        violations: list[str] = []
        for importer in sorted(graph.modules):
            source = self._top(importer)
            if source is None:
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                target = self._top(imported)
                if target is None or target == source:
                    continue
                line = f"{importer} -> {imported}"
                if source == kernel:
                    violations.append(f"{line}: the kernel imports no other part of {root}")
                elif target in infrastructure or target == kernel:
                    continue
                elif source in infrastructure:
                    violations.append(f"{line}: {source} must reach contexts through the module registry")
                elif imported != f"{root}.{target}.public":
                    violations.append(f"{line}: import another context only through {root}.{target}.public")
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            output.print_error(violation, bold=False)
            output.new_line()
