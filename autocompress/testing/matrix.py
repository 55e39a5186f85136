"""The kit's family matrix: every registered technique against every model family the contract checks run on.

    python -m autocompress.testing.matrix     # a markdown table: "runs" or "refused: <its reason>" per cell

A cell says "runs" when the technique accepts the family's tiny model with the kit's WordPiece tokenizer
(``unsupported_reason_for`` returns None); those are exactly the families every contract check of the
technique then runs on (``TechniqueContract.supported_families``), so with the kit green, "runs" means
passed. A refusal is the technique's own reason, which a search prints when it leaves the technique out.
"""

from __future__ import annotations

from collections.abc import Sequence

from autocompress.testing.tiny import FAMILIES


def family_matrix(host=None, families: Sequence[str] = FAMILIES) -> dict[str, dict[str, str | None]]:
    """``{technique: {family: None (runs) or the reason it refuses}}`` for every technique of ``host``
    (default: the built-in and installed plugins)."""
    from autocompress.arch import adapter_for
    from autocompress.plugin_manager import build_host
    from autocompress.technique import ModelAndTokenizer
    from autocompress.testing.tiny import tiny_model, tiny_tokenizer

    host = host or build_host()
    tokenizer = tiny_tokenizer()
    models = {family: ModelAndTokenizer(adapter_for(tiny_model(family), host.architectures), tokenizer)
              for family in families}
    return {entry.name: {family: entry.cls.unsupported_reason_for(model) for family, model in models.items()}
            for entry in host.techniques}


def markdown(matrix: dict[str, dict[str, str | None]]) -> str:
    families = list(next(iter(matrix.values())))
    lines = ["| technique | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for technique, row in matrix.items():
        cells = ["runs" if reason is None else f"refused: {reason}" for reason in row.values()]
        lines.append(f"| {technique} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    print(markdown(family_matrix()))


if __name__ == "__main__":
    main()
