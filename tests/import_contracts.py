"""An import-linter contract type for the "imports" column of docs/architecture.md's Parts table: a part may import
only what its row lists (and, unless told otherwise, the standard library). import-linter's own types say what
may NOT be imported; a list of what may be keeps a new dependency from slipping in unlisted.

Registered in pyproject.toml (`contract_types`), run by `lint-imports` from the repository's root.
"""

from __future__ import annotations

import sys
from typing import Any

from importlinter import Contract, ContractCheck, fields, output

#: Besides sys.stdlib_module_names: `__future__`, and typeshed's `_typeshed` (the standard library's own types,
#: imported under TYPE_CHECKING).
STANDARD_LIBRARY = frozenset({"__future__", "_typeshed"})


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class OnlyImportsContract(Contract):
    """Every module of `source_modules` (packages) directly imports only modules within `allowed_modules` (each a
    package: itself and what is below it), within its own package, or in the standard library when
    `standard_library` is true (the default). With `standard_library = false`, list the pure standard modules the
    part may use among `allowed_modules`."""

    type_name = "only_imports"

    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField())
    standard_library = fields.BooleanField(required=False, default=True)

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        sources: list[str] = list(self.source_modules)  # type: ignore[call-overload]
        allowed: list[str] = list(self.allowed_modules)  # type: ignore[call-overload]
        stdlib = str(self.standard_library).lower() == "true"
        broken = []
        for source in sources:
            if source not in graph.modules:
                raise ValueError(f"only_imports: no module {source} to check")
            for importer in sorted(m for m in graph.modules if _within(m, source)):
                for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                    top = imported.split(".")[0]
                    if _within(imported, source) or any(_within(imported, a) for a in allowed):
                        continue
                    if stdlib and (top in STANDARD_LIBRARY or top in sys.stdlib_module_names):
                        continue
                    lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
                    broken.append({"importer": importer, "imported": imported, "lines": lines})
                output.verbose_print(verbose, f"{importer}: checked")
        return ContractCheck(kept=not broken, metadata={"broken": broken, "allowed": allowed, "stdlib": stdlib})

    def render_broken_contract(self, check: ContractCheck) -> None:
        allowed = ", ".join(check.metadata["allowed"]) or "nothing"
        stdlib = " and the standard library" if check.metadata["stdlib"] else ""
        output.print(f"Only {allowed}{stdlib} may be imported here:")
        for item in check.metadata["broken"]:
            where = ", ".join(f"l.{n}" for n in item["lines"])
            output.print_error(f"- {item['importer']} -> {item['imported']} ({where})", bold=False)
        output.new_line()
