import pytest

from integrations_pipeline.crypto import DecryptionError, Keyring, KeyringError, generate_key_entry, key_id_of


def test_round_trip_under_the_primary_key() -> None:
    keyring = Keyring.from_spec(generate_key_entry("new") + "," + generate_key_entry("old"))
    ciphertext = keyring.encrypt("secret-token", associated_data="connection:a:access_token")
    assert key_id_of(ciphertext) == "new"
    assert "secret-token" not in ciphertext
    assert keyring.decrypt(ciphertext, associated_data="connection:a:access_token") == "secret-token"


def test_nonces_are_random() -> None:
    keyring = Keyring.from_spec(generate_key_entry("k"))
    assert keyring.encrypt("same", associated_data="x") != keyring.encrypt("same", associated_data="x")


def test_a_ciphertext_copied_to_another_row_fails() -> None:
    keyring = Keyring.from_spec(generate_key_entry("k"))
    ciphertext = keyring.encrypt("token", associated_data="connection:a:refresh_token")
    with pytest.raises(DecryptionError, match="failed authentication"):
        keyring.decrypt(ciphertext, associated_data="connection:b:refresh_token")
    with pytest.raises(DecryptionError):
        keyring.decrypt(ciphertext, associated_data="connection:a:access_token")


def test_wrong_or_missing_key_fails_closed() -> None:
    ciphertext = Keyring.from_spec(generate_key_entry("k")).encrypt("token", associated_data="x")
    with pytest.raises(DecryptionError, match="failed authentication"):
        Keyring.from_spec(generate_key_entry("k")).decrypt(ciphertext, associated_data="x")
    with pytest.raises(DecryptionError, match="not in the keyring"):
        Keyring.from_spec(generate_key_entry("other")).decrypt(ciphertext, associated_data="x")


def test_tampering_is_detected() -> None:
    keyring = Keyring.from_spec(generate_key_entry("k"))
    ciphertext = keyring.encrypt("token", associated_data="x")
    flipped = ciphertext[:-2] + ("A" if ciphertext[-2] != "A" else "B") + ciphertext[-1]
    with pytest.raises(DecryptionError):
        keyring.decrypt(flipped, associated_data="x")
    with pytest.raises(DecryptionError, match="not a ciphertext"):
        keyring.decrypt("plaintext-token", associated_data="x")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no keys given"),
        ("nokey", "key_id:base64key"),
        ("k:c2hvcnQ=", "must be 32 bytes"),
        ("k:" + "A" * 43 + ",k:" + "B" * 43, "appears twice"),
        ("bad id:" + "A" * 43, "key_id:base64key"),
    ],
)
def test_unusable_specs_are_refused_without_echoing_key_material(spec: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as refused:
        Keyring.from_spec(spec)
    assert "A" * 20 not in str(refused.value)
