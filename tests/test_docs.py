"""The README's configuration table names every setting, so nothing configurable is undocumented."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from iip.kernel.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def setting_names(model: type[BaseModel], prefix: str = "IIP_") -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += setting_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    names = setting_names(Settings)
    assert len(names) > 10
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"README.md configuration table lacks {missing}"


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text
