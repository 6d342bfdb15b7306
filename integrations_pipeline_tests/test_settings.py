from pathlib import Path

import pytest

from integrations_pipeline.crypto import generate_key_entry
from integrations_pipeline.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings()
    assert settings.state_database_url == "sqlite:///.data/state.db"
    assert settings.warehouse_path == Path(".data/warehouse.duckdb")
    assert settings.hubspot is None


def test_missing_keys_name_the_variable_and_what_it_expects() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings().keyring()
    message = str(refused.value)
    assert "INTEGRATIONS_ENCRYPTION_KEYS is missing" in message
    assert "key_id:base64" in message


def test_invalid_keys_are_reported_without_their_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", "k:dG9vc2hvcnQ=")
    with pytest.raises(SettingsError, match=r"INTEGRATIONS_ENCRYPTION_KEYS is invalid: .*32 bytes") as refused:
        load_settings().keyring()
    assert "dG9vc2hvcnQ" not in str(refused.value)


def test_nested_provider_settings_and_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_HUBSPOT__CLIENT_ID", "app")
    with pytest.raises(SettingsError, match="INTEGRATIONS_HUBSPOT__CLIENT_SECRET is missing"):
        load_settings()
    monkeypatch.setenv("INTEGRATIONS_HUBSPOT__CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("INTEGRATIONS_HUBSPOT__BASE_URL", "not a url")
    with pytest.raises(SettingsError, match="INTEGRATIONS_HUBSPOT__BASE_URL is invalid"):
        load_settings()


def test_unconfigured_provider_says_which_variables_to_set() -> None:
    with pytest.raises(SettingsError, match="INTEGRATIONS_HUBSPOT__CLIENT_ID"):
        load_settings().provider_app("hubspot")


def test_short_api_key_and_origins_with_paths_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATIONS_API_KEY", "short")
    with pytest.raises(SettingsError, match="INTEGRATIONS_API_KEY is invalid"):
        load_settings()
    monkeypatch.setenv("INTEGRATIONS_API_KEY", "x" * 20)
    monkeypatch.setenv("INTEGRATIONS_ALLOWED_RETURN_ORIGINS", '["https://app.example.com/path"]')
    with pytest.raises(SettingsError, match=r"INTEGRATIONS_ALLOWED_RETURN_ORIGINS is invalid.*without a path"):
        load_settings()


def test_dotenv_file_is_read_from_the_working_directory() -> None:
    Path(".env").write_text(f"INTEGRATIONS_ENCRYPTION_KEYS={generate_key_entry('fromfile')}\n")
    assert load_settings().keyring().primary_key_id == "fromfile"


def test_a_variable_set_differently_in_the_shell_and_in_dotenv_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster's code servers read `.env` over the environment, the gateway the other way round: a conflicting
    value would split the processes, so it is refused by name (never by value); an equal one is fine."""
    in_file = generate_key_entry("fromfile")
    Path(".env").write_text(f"INTEGRATIONS_ENCRYPTION_KEYS={in_file}\nINTEGRATIONS_API_KEY=x{'y' * 20}\n")
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", in_file)
    assert load_settings().keyring().primary_key_id == "fromfile"
    shell = generate_key_entry("fromshell")
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", shell)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("INTEGRATIONS_ENCRYPTION_KEYS set both in the environment and in ")
    assert "Unset it in the shell or remove it from .env" in message
    assert shell.split(":")[1] not in message and in_file.split(":")[1] not in message
