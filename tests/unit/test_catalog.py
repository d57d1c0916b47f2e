"""The catalog: bundled files are valid, user files override, and every malformed file names file, model, field."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import paths
from supervisor.catalog import load_catalog, split_model_key
from supervisor.errors import CatalogError

META = '[meta]\nprovider = "acme"\nchecked = 2026-11-01\nsources = ["https://example.invalid/pricing"]\n'
MODEL = """
[[model]]
id = "m1"
provider = "acme"
tier = "cheap"
context_window = 1000
max_output_tokens = 100
input = "1.00"
cache_read = "0.10"
cache_write = "1.25"
output = "2.00"
effective_from = 2026-01-01
"""


def write(tmp_path: Path, text: str, name: str = "acme.toml") -> Path:
    directory = tmp_path / "cat"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_bundled_catalog_has_every_provider_and_tier() -> None:
    catalog = load_catalog([paths.bundled_models_dir()])
    providers = {m.provider for m in catalog}
    assert {"anthropic", "openai", "deepseek", "gemini", "ollama", "mlx"} <= providers
    assert {m.tier for m in catalog} == {"local", "cheap", "frontier"}
    assert catalog.get("mlx:smollm2-135m") is not None
    for model in catalog:
        assert model.source, model.key
        if model.is_local:
            assert model.is_free, model.key
        else:
            assert not model.is_free, model.key
            assert model.cache_ttl_seconds, model.key


def test_bundled_files_each_record_sources_and_a_checked_date() -> None:
    import tomllib

    for path in sorted(paths.bundled_models_dir().glob("*.toml")):
        meta = tomllib.loads(path.read_text())["meta"]
        assert meta["sources"], path
        assert meta["checked"], path


def test_user_catalog_overrides_and_extends(tmp_path: Path) -> None:
    user = write(
        tmp_path,
        META.replace("acme", "deepseek")
        + MODEL.replace('"acme"', '"deepseek"').replace('"m1"', '"deepseek-flash"')
        + MODEL.replace('"acme"', '"lmstudio"').replace('"m1"', '"qwen-local"').replace('"cheap"', '"local"'),
    )
    catalog = load_catalog([paths.bundled_models_dir(), user])
    assert str(catalog.get("deepseek:deepseek-flash").current_rates.input) == "1.00"  # type: ignore[union-attr]
    assert catalog.get("lmstudio:qwen-local") is not None


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (
            lambda m: m.replace('output = "2.00"', 'output = "2.00"\noutptu = "1"'),
            "field outptu: unknown key",
        ),
        (lambda m: m.replace('output = "2.00"\n', ""), "field output: missing required field"),
        (lambda m: m.replace('input = "1.00"', 'input = "-1"'), "field input: '-1' is negative"),
        (lambda m: m.replace('input = "1.00"', 'input = "cheap"'), "field input: 'cheap' is not a number"),
        (
            lambda m: m.replace('input = "1.00"', "input = 1.0"),
            "field input: write prices as decimal strings",
        ),
        (
            lambda m: m.replace("effective_from = 2026-01-01", 'effective_from = "last tuesday"'),
            "field effective_from",
        ),
        (lambda m: m.replace('tier = "cheap"', 'tier = "premium"'), "field tier"),
        (lambda m: m + m, "model 'm1': duplicate id"),
        (lambda m: m.replace("context_window = 1000", "context_window = -5"), "field context_window"),
    ],
)
def test_malformed_catalog_errors_name_file_model_and_field(tmp_path: Path, mutation, expected: str) -> None:  # type: ignore[no-untyped-def]
    directory = write(tmp_path, META + mutation(MODEL))
    with pytest.raises(CatalogError) as info:
        load_catalog([directory])
    message = str(info.value)
    assert "acme.toml" in message
    assert "model 'm1'" in message
    assert expected in message


def test_bad_toml_and_missing_meta_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"acme.toml: not valid TOML"):
        load_catalog([write(tmp_path, "[meta\n")])
    with pytest.raises(CatalogError, match=r"other.toml: meta: missing required field"):
        load_catalog([write(tmp_path / "b", MODEL, "other.toml")])


def test_peak_window_validation(tmp_path: Path) -> None:
    bad = MODEL + '[model.peak]\nutc_offset = "+08:00"\nweekdays = [8]\nhours = ["09:00-12:00"]\n'
    bad += 'input = "1"\ncache_read = "1"\ncache_write = "1"\noutput = "1"\n'
    with pytest.raises(CatalogError, match=r"model 'm1': field peak.weekdays"):
        load_catalog([write(tmp_path, META + bad)])


def test_model_keys_split_on_the_first_colon() -> None:
    assert split_model_key("ollama:qwen3:4b") == ("ollama", "qwen3:4b")
    with pytest.raises(CatalogError, match="provider:id"):
        split_model_key("qwen3")
